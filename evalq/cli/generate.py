"""``evalq generate IN.jsonl --out OUT.jsonl``: plain batch generation over the fleet."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evalq.client import DEFAULT_CHUNK_SIZE, DEFAULT_LEASE_S, Client, Prompt
from evalq.config import Settings
from evalq.db import generate as gen
from evalq.errors import UserError


def read_prompts(path: Path) -> tuple[list[Prompt], list[str | None]]:
    """Prompts and their ids from JSON Lines.

    A row is a JSON string, or an object with ``prompt`` (text) or ``messages`` (chat
    messages) and an optional ``id`` that is copied to the output row.

    Raises:
        UserError: the file is missing, or a row is not one of those shapes.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    prompts: list[Prompt] = []
    keys: list[str | None] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if isinstance(row, str):
            prompts.append(row)
            keys.append(None)
            continue
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a string or an object")
        prompt = row.get("prompt", row.get("messages"))
        if not isinstance(prompt, str | list):
            raise UserError(f"{path}:{number}: expected a 'prompt' string or a 'messages' list")
        prompts.append(prompt)
        keys.append(None if row.get("id") is None else str(row["id"]))
    if not prompts:
        raise UserError(f"{path} holds no prompts")
    return prompts, keys


def write_outputs(path: Path, items: list[gen.StoredItem]) -> None:
    """One JSON line per prompt, in input order; written whole, then moved into place."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for item in items:
            row: dict[str, Any] = {"index": item.index}
            if item.key is not None:
                row["id"] = item.key
            row.update(
                output=item.output,
                prompt_tokens=item.prompt_tokens,
                completion_tokens=item.completion_tokens,
            )
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@click.command("generate")
@click.argument("in_path", metavar="IN.jsonl", required=False, type=click.Path(path_type=Path))
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Where outputs go.")
@click.option("--model", default=None, help="Model whose workers generate (its queue).")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Sampling seed.")
@click.option(
    "--chunk-size",
    type=int,
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Prompts per task: the batch one worker's engine gets at once.",
)
@click.option(
    "--lease",
    "lease_s",
    type=float,
    default=DEFAULT_LEASE_S,
    show_default=True,
    help="Seconds without a heartbeat after which a dead worker's chunk is handed on.",
)
@click.option("--name", default=None, help="A label for the job.")
@click.option("--resume", "resume_job", type=int, default=None, help="Continue job JOB.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the outputs.")
@click.pass_obj
def generate(
    settings: Settings,
    in_path: Path | None,
    out_path: Path | None,
    model: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    chunk_size: int,
    lease_s: float,
    name: str | None,
    resume_job: int | None,
    wait: bool,
) -> None:
    """Generate one completion per prompt of IN.jsonl on the fleet, written in input order.

    Prompts are spread over every worker of the model through its queue. A killed worker
    loses nothing; ``--resume JOB`` re-enqueues what is unfinished (after a crash of this
    command, or a broker that lost its queue) and writes the outputs.
    """
    client = Client(model, settings=settings, chunk_size=chunk_size, lease_s=lease_s)
    if wait and out_path is None:
        raise UserError("name the output file with --out OUT.jsonl (or pass --no-wait)")
    if resume_job is not None:
        if in_path is not None:
            raise UserError("--resume continues a stored job: give it no IN.jsonl")
        job_id = resume_job
        n = client.resume(job_id)
        click.echo(f"generation job {job_id}: {n} unfinished chunk(s) re-enqueued", err=True)
    else:
        if in_path is None:
            raise UserError("name the prompts file IN.jsonl (or --resume JOB)")
        if model is None:
            raise UserError("name the model with --model")
        prompts, keys = read_prompts(in_path)
        job_id = client.submit(
            prompts,
            keys=keys,
            name=name,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        click.echo(f"generation job {job_id}: {len(prompts)} prompts queued for {model}", err=True)
    if not wait:
        return
    assert out_path is not None
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"job {job_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("generate", total=None)

        def show(p: gen.JobProgress) -> None:
            bar.update(task, total=p.n, completed=p.done)

        items = client.wait_items(job_id, on_progress=show)
    write_outputs(out_path, items)
    click.echo(f"generation job {job_id}: {len(items)} outputs written to {out_path}", err=True)
