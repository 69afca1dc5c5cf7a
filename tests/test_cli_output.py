"""What a user sees when piping or logging the CLI: one "starting" per job, the evaluation's
progress, and a quiet end when the reader of stdout goes away."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from launch.run import local
from launch.store.expdir import ExperimentDir

REPO = Path(__file__).resolve().parents[1]


def quiet_progress() -> local._Progress:
    """Progress lines as written to a log or a pipe, with no time between lines required."""
    bars = local._Progress(True)
    bars.tty = False
    bars.LINE_EVERY_S = 0.0  # so only repetition, never the clock, can hold a line back
    return bars


def test_a_job_that_has_not_started_says_starting_once(tmp_path, capsys):
    bars = quiet_progress()
    exp = ExperimentDir(tmp_path)
    read = functools.partial(local.method_progress, exp, "lora")
    for _ in range(5):  # the launcher polls twice a second while the job loads its model
        bars.update("lora", read)
    progress = {"step": 3, "total_steps": 10, "loss": 0.5, "flushed_step": 0}
    written = exp.method("lora").progress_file
    written.parent.mkdir(parents=True)
    written.write_text(json.dumps(progress))
    for _ in range(3):
        bars.update("lora", read)
    bars.update("lora", read, final="completed")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[cyberft] lora: starting",
        "[cyberft] lora: step 3/10 loss 0.5000",
        "[cyberft] lora: step 3/10 loss 0.5000 completed",
    ]


def test_a_job_that_ends_without_progress_says_starting_once_then_its_outcome(tmp_path, capsys):
    """A few-shot job loads no model and writes no progress record: its end is its outcome alone."""
    bars = quiet_progress()
    read = functools.partial(local.method_progress, ExperimentDir(tmp_path), "few_shot")
    bars.update("few_shot", read)
    bars.update("few_shot", read, final="completed")
    assert capsys.readouterr().out.splitlines() == ["[cyberft] few_shot: starting", "[cyberft] few_shot: completed"]


def test_the_evaluation_reports_its_progress(tmp_path, capsys):
    from train.evaluate import ScoringProgress

    exp = ExperimentDir(tmp_path)
    tracker = ScoringProgress(exp.eval, ["base", "lora"], total=200)
    tracker.EVERY_S = 0.0
    bars, read = quiet_progress(), functools.partial(local.eval_progress, exp)
    bars.update("eval", read)  # before the job wrote anything
    tracker.start("base")
    tracker.advance(16)
    bars.update("eval", read)
    tracker.advance(184)
    tracker.finish(0.265)
    tracker.start("lora")
    tracker.advance(32)
    bars.update("eval", read)
    assert capsys.readouterr().out.splitlines() == [
        "[cyberft] eval: starting",
        "[cyberft] eval: model 1/2 (base): 16/200 questions",
        "[cyberft] eval: model 2/2 (lora): 32/200 questions; accuracy so far: base 0.265",
    ]


def test_report_into_a_pipe_that_closes_ends_quietly(tmp_path):
    """`cyberft report EXP | head -n 2` with a table far larger than the pipe holds."""
    row = {"method": "m", "kind": "lora", "accuracy": 0.5, "ci95": [0.4, 0.6], "status": "completed"}
    rows = [dict(row, method=f"method-{i:05d}") for i in range(20000)]  # about 2 MB of table
    exp = tmp_path / "exp"
    exp.mkdir()
    ExperimentDir(exp).summary_file.write_text(json.dumps({"rows": rows}))
    script = f'{sys.executable} -m launch.cli report {exp} | head -n 2; echo "status=${{PIPESTATUS[0]}}" >&2'
    res = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines()[0].startswith("method")
    assert len(res.stdout.splitlines()) == 2
    for noise in ("Traceback", "BrokenPipe", "Exception ignored"):
        assert noise not in res.stderr, res.stderr
    assert res.stderr.strip() == "status=141"
