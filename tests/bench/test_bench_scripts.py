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


def test_throughput_per_strategy_runs_each_strategy_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run(
        "throughput.py",
        *("--model", "test/instant", "--engine", "engines:instant_engine", "--no-ideal"),
        *("--n", "12", "--shard-size", "6", "--per-strategy", "--strategies", "fixed:k=3,ircot"),
        *("--out", str(out), "--work", str(tmp_path / "w")),
        tmp=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads((out / "single-gpu0.json").read_text())["per_strategy"]
    assert list(runs) == ["fixed:k=3", "ircot"]
    assert [r["a_evalq"]["episodes_ok"] for r in runs.values()] == [12, 12]
    assert runs["fixed:k=3"]["a_evalq"]["run_id"] != runs["ircot"]["a_evalq"]["run_id"]


def test_recorded_prompts_are_cut_per_run(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from throughput import split_prompts

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"p": 1}\n{"p": 2}\n{"p": 3}\n')
    files = split_prompts(prompts, [9, 18, 27])
    assert [f.read_text() for f in files] == ['{"p": 1}\n', '{"p": 2}\n', '{"p": 3}\n']
    assert split_prompts(prompts, [27]) == [prompts]


def test_bookkeeping_measures_sqlite(tmp_path: Path) -> None:
    done = _run(
        "bookkeeping.py", "--n", "200", "--postgres-url", "", "--out", str(tmp_path), tmp=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "bookkeeping.json").read_text())
    assert result["sqlite"]["episodes"] == 200 and "postgres" not in result
