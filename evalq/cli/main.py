"""The ``evalq`` command: one group, every subcommand registered here."""

from __future__ import annotations

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


@click.group(cls=UserErrorGroup)
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


def _register() -> None:
    from evalq.cli import db, demo, run, worker

    for command in (*run.COMMANDS, worker.worker, db.db, demo.demo):
        cli.add_command(command)
    from evalq.cli.analysis import compare_command, export_command, report_command
    from evalq.cli.compose import compose
    from evalq.cli.corpus import COMMANDS as corpus_commands
    from evalq.cli.fleet import fleet
    from evalq.cli.generate import generate
    from evalq.cli.mdp import mdp
    from evalq.cli.models import models
    from evalq.cli.suite import suite

    fleet.add_command(compose)
    extras = (mdp, models, compare_command, export_command, report_command, generate, suite, fleet)
    for extra in (*extras, *corpus_commands):
        cli.add_command(extra)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="evalq", standalone_mode=True))
