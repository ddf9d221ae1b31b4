"""The benchmark scripts run end to end (here with an instant engine instead of vLLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support import REPO


def _run(script: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EVALQ_HOME": str(tmp / "home"),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_throughput_runs_oran_over_the_bench_corpus_and_writes_its_numbers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    done = _run(
        "throughput.py",
        *("--model", "test/instant", "--engine", "engines:instant_engine", "--no-ideal"),
        *("--n", "30", "--shard-size", "10", "--out", str(out), "--work", str(tmp_path / "w")),
        tmp=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "single-gpu0.json").read_text())
    a = result["a_evalq"]
    assert a["episodes"] == a["episodes_ok"] == 60  # 30 questions x {mdp, fixed:k=3}
    assert a["episodes_per_s"] > 0 and a["prompt_tokens"] > 0
    assert result["worker_start_s"] >= 0 and result["device"]


def test_bookkeeping_measures_sqlite(tmp_path: Path) -> None:
    done = _run(
        "bookkeeping.py", "--n", "200", "--postgres-url", "", "--out", str(tmp_path), tmp=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "bookkeeping.json").read_text())
    assert result["sqlite"]["episodes"] == 200 and "postgres" not in result
