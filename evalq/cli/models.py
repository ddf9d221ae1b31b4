"""``evalq models``: store real weights under a name (add) and show what is stored (list)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from evalq.models.registry import TINY_MODEL
from evalq.models.store import StoredModel, add_model, list_models, models_dir


@click.group("models")
def models() -> None:
    """Real model weights stored by name in EVALQ_HOME/models/ (``--model NAME``)."""


@models.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--force", is_flag=True, help="Replace a model already stored under NAME.")
@click.option("--link", is_flag=True, help="Link an HF-format folder instead of copying it.")
def add_command(name: str, source: str, force: bool, link: bool) -> None:
    """Store SOURCE as model NAME: a .gguf file, an installed package holding one, or a folder.

    A GGUF is converted once into a folder vLLM loads (bf16 safetensors and its tokenizer);
    a Hugging Face-format folder is copied as it is. Its provenance (source, sha256,
    licence) is written to evalq-model.json beside the weights.
    """
    before = _record_of(name)
    record = add_model(name, source, force=force, link=link)
    verb = "already stored" if before == record else "stored"
    click.echo(f"model {name} {verb}: {_describe(record)} in {record.path}")


@models.command("list")
def list_command() -> None:
    """Stored models with their architecture, size and source."""
    table = Table(title=f"models ({models_dir()})")
    for column in ("model", "architecture", "parameters", "size", "source", "licence"):
        table.add_column(column, justify="right" if column in ("parameters", "size") else "left")
    table.add_row(
        TINY_MODEL, "Qwen2ForCausalLM", "-", "-", "built in: RANDOM WEIGHTS (speed only)", "-"
    )
    for record in list_models():
        table.add_row(
            record.name,
            record.architecture or "?",
            _parameters(record.parameters),
            f"{record.size_bytes / 1e6:,.0f} MB",
            record.source,
            record.licence or "?",
        )
    Console(width=160).print(table)


def _record_of(name: str) -> StoredModel | None:
    from evalq.models.store import read_record

    try:
        return read_record(name)
    except OSError:
        return None


def _parameters(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _describe(record: StoredModel) -> str:
    return f"{record.architecture or '?'}, {_parameters(record.parameters)} parameters"


COMMANDS = [models]
