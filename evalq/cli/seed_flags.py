"""The seed script's flags on ``evalq submit``, in their own spellings.

The seed (ARGO's ``mdp_rag_multi_gpu.py``) took ``--n_questions``, ``--difficulty``,
``--gpu_mode``, ``--gpu_ids 0 1 2 3``, ``--fixed_k``, ``--seed`` and ``--model``. They are
rewritten here into evalq's own options before click parses them:

- ``--n_questions N`` -> ``--n N``, and ``--dataset oran-bench`` (the seed's questions)
  unless a ``--dataset`` is given;
- ``--fixed_k K`` -> ``--strategy fixed:k=K``, plus ``--strategy mdp`` (the seed always
  compared the two) unless strategies are named;
- ``--gpu_mode M`` / ``--gpu_ids 0 1 2 3`` -> ``submit``'s hidden ``--gpu-mode`` /
  ``--gpu-ids 0,1,2,3``.

``--difficulty``, ``--seed`` and ``--model`` are spelled the same in both. A submit cannot
place work on GPUs (workers choose their GPUs), so the GPU request is recorded in
``run.config["requested_gpus"]`` (``evalq.fleet.gpus.gpu_request``, in the submit's one
transaction) and the ``evalq fleet`` command line that serves it is printed.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from evalq.errors import UserError

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


class SeedFlagsCommand(click.Command):
    """A command that accepts the seed's flag spellings (rewritten before parsing)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Rewrite seed-style flags, then parse as usual."""
        return super().parse_args(ctx, rewrite_seed_argv(args))


def with_seed_flags(command: click.Command) -> click.Command:
    """``command`` (``submit``) taking the seed's flags too, rewritten before parsing.

    The rewritten ``--gpu-mode`` / ``--gpu-ids`` are ``submit``'s own hidden options: the
    request is checked, stored with the run and its ``evalq fleet`` line printed.
    """
    return SeedFlagsCommand(
        name=command.name,
        callback=command.callback,
        params=command.params,
        help=command.help,
        short_help=command.short_help,
        context_settings=command.context_settings,
    )
