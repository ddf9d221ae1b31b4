"""The seed script's flags on ``evalq submit``, in their own spellings.

The seed (ARGO's ``mdp_rag_multi_gpu.py``) took ``--n_questions``, ``--difficulty``,
``--gpu_mode``, ``--gpu_ids 0 1 2 3``, ``--fixed_k``, ``--seed`` and ``--model``. They are
rewritten here into evalq's own options before click parses them:

- ``--n_questions N`` -> ``--n N``, and ``--dataset oran-bench`` (the seed's questions)
  unless a ``--dataset`` is given;
- ``--fixed_k K`` -> ``--strategy fixed:k=K``, plus ``--strategy mdp`` (the seed always
  compared the two) unless strategies are named;
- ``--gpu_mode M`` / ``--gpu_ids 0 1 2 3`` -> hidden ``--gpu-mode`` / ``--gpu-ids 0,1,2,3``.

``--difficulty``, ``--seed`` and ``--model`` are spelled the same in both. A submit cannot
place work on GPUs (workers choose their GPUs), so the GPU request is recorded in
``run.config["requested_gpus"]`` and the ``evalq fleet`` command line that serves it is
printed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import click

from evalq.config import Settings
from evalq.errors import UserError

# The seed's --gpu_mode -> evalq fleet --mode. "accelerate" split one model over the GPUs
# (device_map="auto"); evalq's equivalent is tensor parallelism.
GPU_MODES = {
    "single": "single",
    "data_parallel": "data_parallel",
    "accelerate": "tensor_parallel",
    "auto": "auto",
}
SEED_DATASET = "oran-bench"


def _split(token: str) -> tuple[str, str | None]:
    flag, eq, value = token.partition("=")
    return flag, (value if eq else None)


def rewrite_seed_argv(args: Sequence[str]) -> list[str]:
    """Seed-style flags rewritten into evalq's; everything else passes through unchanged.

    Raises:
        UserError: a seed flag without its value.
    """
    out: list[str] = []
    strategies_named = any(_split(a)[0] == "--strategy" for a in args)
    dataset_named = any(_split(a)[0] == "--dataset" for a in args)
    i = 0
    while i < len(args):
        flag, inline = _split(args[i])
        i += 1
        if flag in ("--gpu_ids", "--gpu-ids"):
            ids = [inline] if inline is not None else []
            while i < len(args) and not args[i].startswith("-"):  # the seed's nargs="+"
                ids.append(args[i])
                i += 1
            if not ids:
                raise UserError(f"{flag} needs GPU ids, e.g. {flag} 0 1 2 3")
            out += ["--gpu-ids", ",".join(p for g in ids for p in g.split(",") if p)]
            continue
        if flag not in ("--n_questions", "--fixed_k", "--gpu_mode"):
            out.append(args[i - 1])
            continue
        if inline is None:
            if i >= len(args):
                raise UserError(f"{flag} needs a value")
            inline = args[i]
            i += 1
        if flag == "--n_questions":
            out += ["--n", inline]
            if not dataset_named:
                out += ["--dataset", SEED_DATASET]
        elif flag == "--fixed_k":
            out += ["--strategy", f"fixed:k={inline}"]
            if not strategies_named:
                out += ["--strategy", "mdp"]
                strategies_named = True
        else:
            out += ["--gpu-mode", inline]
    return out


def fleet_command(model: str, mode: str | None, gpu_ids: str | None) -> str:
    """The ``evalq fleet`` line that starts workers for a seed-style GPU request.

    Raises:
        UserError: an unknown mode, bad GPU ids, or ``single`` with several GPUs.
    """
    from evalq.worker.fleet import parse_gpus

    if mode is not None and mode not in GPU_MODES:
        raise UserError(f"--gpu_mode {mode!r}: choose {', '.join(GPU_MODES)}")
    ids = parse_gpus(gpu_ids or "0")
    fleet_mode = GPU_MODES[mode or "auto"]
    if fleet_mode == "single" and len(ids) != 1:
        raise UserError(f"--gpu_mode single runs on one GPU; --gpu_ids names {len(ids)}")
    return f"evalq fleet --model {model} --gpus {','.join(ids)} --mode {fleet_mode}"


def record_requested_gpus(
    settings: Settings, run_id: int, mode: str | None, gpu_ids: str | None
) -> None:
    """Store the GPU request in ``run.config["requested_gpus"]`` (for the record only)."""
    from evalq.db import queries
    from evalq.db.session import open_store

    with open_store(settings.database_url).session() as s:
        run = queries.get_run(s, run_id)
        ids = [int(g) for g in (gpu_ids or "").split(",") if g]
        request = {"mode": mode, "gpu_ids": ids, "fleet": fleet_command(run.model, mode, gpu_ids)}
        run.config = {**run.config, "requested_gpus": request}  # a new dict: JSON is replaced


class SeedFlagsCommand(click.Command):
    """A command that accepts the seed's flag spellings (rewritten before parsing)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Rewrite seed-style flags, then parse as usual."""
        return super().parse_args(ctx, rewrite_seed_argv(args))


def with_seed_flags(command: click.Command) -> click.Command:
    """``command`` (``submit``) taking the seed's flags too; its callback returns the run id.

    Adds hidden ``--gpu-mode`` and ``--gpu-ids``; with either given, the request is checked
    and recorded on the run, and the ``evalq fleet`` line that serves it is printed.
    """
    assert command.callback is not None
    callback: Callable[..., Any] = command.callback

    @functools.wraps(callback)
    def run(*args: Any, gpu_mode: str | None, gpu_ids: str | None, **kwargs: Any) -> Any:
        settings: Settings = click.get_current_context().obj
        requested = gpu_mode is not None or gpu_ids is not None
        # Checked before submitting: a bad GPU request leaves no run behind.
        line = fleet_command(kwargs["model"], gpu_mode, gpu_ids) if requested else None
        run_id = callback(*args, **kwargs)
        if line is not None:
            if isinstance(run_id, int):
                record_requested_gpus(settings, run_id, gpu_mode, gpu_ids)
            click.echo(f"workers choose their GPUs; to serve this request run: {line}")
        return run_id

    hidden = [
        click.Option(["--gpu-mode", "gpu_mode"], type=click.Choice(list(GPU_MODES)), hidden=True),
        click.Option(["--gpu-ids", "gpu_ids"], hidden=True),
    ]
    return SeedFlagsCommand(
        name=command.name,
        callback=run,
        params=[*command.params, *hidden],
        help=command.help,
        short_help=command.short_help,
        context_settings=command.context_settings,
    )
