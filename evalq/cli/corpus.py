"""``evalq corpus`` (add, list, remove a user's corpus) and ``evalq datasets``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from evalq.data.corpus import (
    DEFAULT_WORDS_PER_PASSAGE,
    check_corpus_name,
    corpus_from_path,
    remove_stored_corpus,
    store_corpus,
    stored_corpora,
    stored_corpus_meta,
)
from evalq.data.registry import (
    DATASETS,
    JSONL_PREFIX,
    dataset_counts,
    index_root,
    load_corpus,
    shipped_corpus_names,
)
from evalq.errors import UserError
from evalq.rag.retrieval import BM25, DENSE, build_retriever, check_retriever


@click.group("corpus")
def corpus() -> None:
    """Your own documents as a corpus to retrieve from (``evalq submit --corpus NAME``)."""


@corpus.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--words-per-passage",
    type=int,
    default=DEFAULT_WORDS_PER_PASSAGE,
    show_default=True,
    help="Chunk size for .txt and .md files (.jsonl rows are passages as given).",
)
@click.option("--replace", is_flag=True, help="Rebuild a corpus of the same name.")
@click.option("--dense", is_flag=True, help="Also embed it now for --retriever dense.")
def add_command(name: str, path: Path, words_per_passage: int, replace: bool, dense: bool) -> None:
    """Chunk a file or folder of .txt, .md and .jsonl files into corpus NAME, and index it.

    The passages go to EVALQ_HOME/corpora/NAME/ with a meta.json (source, counts, content
    hash); the BM25 index is built once and cached beside them.
    """
    check_corpus_name(name)
    if name in shipped_corpus_names():
        raise UserError(f"{name!r} is a shipped corpus; choose another name")
    if not replace and stored_corpus_meta(name) is not None:
        raise UserError(f"corpus {name!r} already exists; add --replace to rebuild it")
    if dense:
        check_retriever(DENSE)
    built = corpus_from_path(name, path, words_per_passage)
    stored = store_corpus(built, path, words_per_passage=words_per_passage, replace=replace)
    kinds = [BM25, DENSE] if dense else [BM25]
    for kind in kinds:
        build_retriever(kind, built, name)
    click.echo(
        f"corpus {name}: {stored.passages:,} passages ({stored.words:,} words) from "
        f"{stored.files} file{'s' if stored.files != 1 else ''}; "
        f"{' and '.join(kinds)} index{'es' if len(kinds) > 1 else ''} in {index_root(name)}"
    )


@corpus.command("list")
def list_command() -> None:
    """Shipped and user corpora with their passage counts."""
    table = Table(title="corpora")
    for column in ("corpus", "kind", "passages", "source"):
        table.add_column(column, justify="right" if column == "passages" else "left")
    for name in shipped_corpus_names():
        table.add_row(name, "shipped", f"{len(load_corpus(name)):,}", f"--dataset {name}")
    for stored in stored_corpora():
        table.add_row(
            stored.name,
            "user",
            f"{stored.passages:,}",
            f"{stored.source} ({stored.files} files, added {stored.created_at})",
        )
    Console().print(table)


@corpus.command("remove")
@click.argument("name")
def remove_command(name: str) -> None:
    """Delete user corpus NAME and its cached indexes (stored runs keep their results)."""
    remove_stored_corpus(name)
    click.echo(f"corpus {name} removed")


@click.command("datasets")
@click.argument("dataset", required=False)
def datasets(dataset: str | None) -> None:
    """Datasets with their question counts per difficulty, and whether they ship a corpus.

    With DATASET (a name or jsonl:PATH), only that one.
    """
    names = [dataset] if dataset is not None else list(DATASETS)
    table = Table(title="datasets")
    for column in ("dataset", "questions", "per difficulty", "corpus"):
        table.add_column(column, justify="right" if column == "questions" else "left")
    about: list[str] = []
    for name in names:
        counts = dataset_counts(name)
        info = DATASETS.get(name)
        if info is not None and info.has_corpus:
            corpus_text = f"{name} ({len(load_corpus(name)):,} passages)"
        else:
            corpus_text = "none: add --corpus NAME"
        per = ", ".join(f"{label} {count:,}" for label, count in counts.items())
        table.add_row(name, f"{sum(counts.values()):,}", per, corpus_text)
        if info is not None:
            about.append(f"{name}: {info.description}")
    Console().print(table)
    for line in about:
        click.echo(line)
    if dataset is None:
        click.echo(f"Your own questions: --dataset {JSONL_PREFIX}PATH (see docs/datasets.md).")


COMMANDS = [corpus, datasets]
