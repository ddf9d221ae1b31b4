"""``evalq report``: one self-contained HTML page; a real browser shows every plot drawn."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sample_run import MODEL, QUESTIONS, add_sample_run
from scipy import stats
from sqlalchemy.orm import Session

from evalq.cli.main import cli
from evalq.db.models import Episode, Run
from evalq.db.session import open_store
from evalq.report import plots
from evalq.report.episodes import load_run_episodes
from evalq.report.html import write_report
from evalq.report.summary import StatsOptions, summarise_strategy

# The last is the adaptivity section's, after the plots grid (runs with MDP only).
PLOTS = (
    "accuracy_vs_cost",
    "steps_histogram",
    "accuracy_by_difficulty",
    "mdp_policy",
    "retrievals_histogram",
)
RESAMPLES = 500
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Collects, once the page has loaded, every image's decoded size and where it was laid out.
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map((img) => {
    const box = img.getBoundingClientRect();
    return {alt: img.alt, naturalWidth: img.naturalWidth, complete: img.complete,
            left: box.left + window.scrollX, top: box.top + window.scrollY,
            width: box.width, height: box.height};
  });
  document.body.setAttribute('data-probe', JSON.stringify(images));
});
</script>"""


def mdp_accuracy() -> float:
    """The sample's MDP accuracy over its ok episodes (question 1 is an error)."""
    ok = [i for i in range(QUESTIONS) if i != 1]
    return sum(i % 4 != 3 for i in ok) / len(ok)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'evalq.db'}"


@pytest.fixture
def run_id(db_url: str) -> int:
    with open_store(db_url).session() as session:
        return add_sample_run(session)


def evalq(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", db_url, *args])
    return result.exit_code, result.output


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no Chromium on PATH (looked for " + ", ".join(CHROMIUM_NAMES) + "); "
        "scripts/install.sh installs the Debian package 'chromium'"
    )


def browse(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on a local page; returns its stdout."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--window-size=1280,2400",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def non_blank(pixels: np.ndarray) -> bool:
    """Drawn content: many pixels away from white and a spread of colours (not one flat fill)."""
    rgb = pixels[..., :3].astype(np.int64)
    inked = np.any(rgb < 230, axis=-1).mean()
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    return bool(inked > 0.02 and colours > 20)


def test_report_is_one_page_with_plots_and_tables(db_url: str, run_id: int, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code, output = evalq(db_url, "report", str(run_id), "--out", str(out), "--resamples", "500")
    assert code == 0, output
    page = out / "report.html"
    assert f"report: {page}" in output
    text = page.read_text(encoding="utf-8")
    # Self-contained: every image inline, nothing fetched from anywhere.
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) == len(PLOTS)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    # The tables: every strategy, the run's model, MDP's accuracy, the paired comparisons.
    for strategy in ("mdp", "fixed:k=3", "fixed:k=0"):
        assert f"<td>{html.escape(strategy)}</td>" in text
    assert html.escape(MODEL) in text
    assert f"{mdp_accuracy() * 100:.1f}%" in text
    assert "accuracy (attempted)" in text
    assert f"{mdp_accuracy() * (QUESTIONS - 1) / QUESTIONS * 100:.1f}%" in text
    assert "A = run 1 mdp, B = run 1 fixed:k=3 (differences are A - B)" in text
    assert "error 1" in text and "invalid 1" in text
    for name in PLOTS:
        png = out / f"{name}.png"
        assert f"plot: {png}" in output
        with Image.open(png) as image:
            assert image.format == "PNG"
            assert non_blank(np.asarray(image.convert("RGB")))


def test_chromium_shows_every_plot(db_url: str, run_id: int, tmp_path: Path) -> None:
    out = tmp_path / "report"
    with open_store(db_url).session() as session:
        report = write_report(session, run_id, out, StatsOptions(n_resamples=RESAMPLES))
    probed = tmp_path / "probed.html"
    probed.write_text(report.html.read_text().replace("</body>", PROBE + "</body>"))

    dom = browse(probed, tmp_path / "profile-dom", "--dump-dom", "--virtual-time-budget=5000")
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the page's load handler never ran"
    images = json.loads(html.unescape(found.group(1)))
    assert [i["alt"] for i in images] == list(PLOTS)
    for image in images:
        assert image["complete"] and image["naturalWidth"] > 0, f"{image['alt']} did not decode"
    assert "evalq report: run 1 (sample)" in dom

    shot = tmp_path / "shot.png"
    browse(report.html, tmp_path / "profile-shot", f"--screenshot={shot}")
    with Image.open(shot) as screenshot:
        pixels = np.asarray(screenshot.convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    for image in images:
        left, top = round(image["left"]), round(image["top"])
        right, bottom = left + round(image["width"]), top + round(image["height"])
        assert 0 <= left < right <= 1280 and 0 <= top < bottom <= 2400, f"{image['alt']} off-screen"
        assert non_blank(pixels[top:bottom, left:right]), f"{image['alt']} is blank on screen"
    # matplotlib's first colour (the MDP's points and bars) is on screen inside the plots.
    first = np.array([0x1F, 0x77, 0xB4])
    assert np.sum(np.all(np.abs(pixels.astype(int) - first) < 12, axis=-1)) > 500


def test_intervals_are_scipys_bootstrap(db_url: str, run_id: int) -> None:
    with Session(open_store(db_url).engine) as session:
        mdp = load_run_episodes(session, run_id).strategy("mdp")
    assert mdp is not None
    summary = summarise_strategy(mdp, StatsOptions(n_resamples=RESAMPLES, seed=3))
    expected = stats.bootstrap(
        (mdp.correct,),
        np.mean,
        n_resamples=RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert summary.accuracy.value == pytest.approx(mdp_accuracy())
    assert summary.accuracy.interval == pytest.approx((expected.low, expected.high))
    assert summary.ok == QUESTIONS - 1 and summary.excluded == {"error": 1}
    # Over attempted episodes the error (question 1) counts as a wrong answer.
    assert summary.attempted == QUESTIONS
    assert summary.accuracy_attempted.value == pytest.approx(
        mdp_accuracy() * (QUESTIONS - 1) / QUESTIONS
    )
    assert [d.n for d in summary.by_difficulty] == [8, 7, 8]  # question 1 (medium) failed


def test_run_without_mdp_has_no_policy_plot(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url).session() as session:
        run = Run(
            dataset="oran",
            difficulty="easy",
            n=4,
            seed=0,
            model="tiny",
            strategies=["fixed:k=3", "fixed:k=0"],
            config={},
            code_version="test",
        )
        session.add(run)
        session.flush()
        for i in range(4):
            for strategy in run.strategies:
                session.add(
                    Episode(
                        run_id=run.id,
                        question_id=f"q{i}",
                        strategy=strategy,
                        status="ok",
                        difficulty="easy",
                        correct=i % 2 == 0,
                        steps=2,
                    )
                )
        run_id = run.id
    code, output = evalq(db_url, "report", str(run_id), "--out", str(tmp_path), "--resamples", "50")
    assert code == 0, output
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(PLOTS[:3])
    assert "A = run 1 fixed:k=3, B = run 1 fixed:k=0" in (tmp_path / "report.html").read_text()


def test_unknown_run_is_one_error_line(db_url: str, tmp_path: Path) -> None:
    code, output = evalq(db_url, "report", "99", "--out", str(tmp_path / "r"))
    assert code == 2
    assert output.strip() == "Error: run 99 does not exist"
    assert not (tmp_path / "r").exists()


def test_accuracy_against_cost_labels_a_long_spec_by_its_kind() -> None:
    assert plots._point_label("fixed:k=3") == "fixed:k=3"
    assert plots._point_label("mdp") == "mdp"
    assert plots._point_label("flare:k=2,theta=0.8,beta=0.4,steps=4") == "flare"
