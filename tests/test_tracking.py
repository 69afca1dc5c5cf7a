"""Tests of train/tracking.py and tests/support/wandb_offline.py: an offline W&B round trip.

One real offline run (about 1-2 s) is written in tmp_path and read back with our
own log parser; every file the run produced, HOME included, is scanned for the
planted credentials.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launch.spec.config import TrackingConfig
from support.wandb_offline import OfflineLogError, find_runs, iter_record_bytes, read_run
from train.tracking import Tracker, is_secret_key, scrub

ROOT = Path(__file__).resolve().parents[1]

# Canary strings: none of them may appear in any file a run writes.
ENV_API_KEY = "CANARY-wandb-env-key-5f1c2a9e"
ENV_HF_TOKEN = "CANARY-hf-env-token-77d0b3"
CONFIG_API_KEY = "CANARY-config-api-key-0c4e"
CONFIG_PASSWORD = "CANARY-config-password-91ab"
CANARIES = (ENV_API_KEY, ENV_HF_TOKEN, CONFIG_API_KEY, CONFIG_PASSWORD)

LONG_NOTE = "abcdefghij" * 8000  # 80 KB: its record spans three 32 KiB blocks (first/middle/last chunks)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """An isolated offline W&B environment with live-looking credentials set."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # wandb-core writes ~/.cache/wandb/logs/core-debug-*.log
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-env-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", ENV_API_KEY)
    monkeypatch.setenv("HF_TOKEN", ENV_HF_TOKEN)
    # Tracker points WANDB_DATA_DIR at the run; setenv+delenv makes teardown remove it again.
    monkeypatch.setenv("WANDB_DATA_DIR", "unset")
    monkeypatch.delenv("WANDB_DATA_DIR")
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_CONFIG_PATHS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _config() -> dict:
    return {
        "lr": 2e-4,
        "max_new_tokens": 8,  # contains "token" as a word part but is not a credential
        "method": {"name": "lora", "kind": "lora", "api_key": CONFIG_API_KEY, "lora": {"r": 16, "alpha": 32}},
        "db": {"Password": CONFIG_PASSWORD, "host": "localhost"},
        "echo_of_env": ENV_API_KEY,  # a value equal to the live key, under an innocent name
        "tags": ["cpu", ENV_HF_TOKEN, "smoke"],
        "hfToken": "whatever",
    }


EXPECTED_CONFIG = {
    "lr": 2e-4,
    "max_new_tokens": 8,
    "method": {"name": "lora", "kind": "lora", "lora": {"r": 16, "alpha": 32}},
    "db": {"host": "localhost"},
    "tags": ["cpu", "smoke"],
}


def _tiny_png(path: Path) -> Path:
    from launch.results.report import render_chart

    path.write_bytes(render_chart([], "empty"))
    return path


# --------------------------------------------------------------------------- scrubbing


def test_is_secret_key():
    secret = ["api_key", "WANDB_API_KEY", "apiKey", "hf_token", "HF-Token", "password", "client_secret", "token"]
    fine = ["max_new_tokens", "train_tokens", "tokens_per_s", "lr", "key", "api", "monkey_business"]
    assert [k for k in secret if not is_secret_key(k)] == []
    assert [k for k in fine if is_secret_key(k)] == []


def test_scrub_nested_and_values():
    got = scrub(_config(), secrets=[ENV_API_KEY, ENV_HF_TOKEN])
    assert got == EXPECTED_CONFIG
    # a URL that embeds the key is a secret too
    assert scrub({"url": f"https://x/?k={ENV_API_KEY}", "n": 1}, secrets=[ENV_API_KEY]) == {"n": 1}


# --------------------------------------------------------------------------- disabled


@pytest.mark.parametrize("cfg", [TrackingConfig(backend="none"), TrackingConfig(backend="wandb", mode="disabled")])
def test_disabled_tracker_writes_nothing(tmp_path, cfg):
    run_dir = tmp_path / "run"
    t = Tracker.start(cfg, run_dir=run_dir, name="lora", group="g", job_type="train", config={"lr": 1.0})
    assert not t.enabled and t.run_id is None
    t.log({"loss": 1.0}, step=0)
    t.summary({"final": 1})
    t.log_table("eval/samples", [{"a": 1}], ["a"])
    t.log_image("chart", tmp_path / "nope.png")
    t.finish()
    assert list(tmp_path.rglob("*")) == []


def test_import_is_cheap():
    # Importing the tracker and running with backend none must not import wandb (or torch).
    code = (
        "import sys\n"
        "from launch.spec.config import TrackingConfig\n"
        "from train.tracking import Tracker\n"
        "t = Tracker.start(TrackingConfig(backend='none'), run_dir='unused', name='n', group='g',"
        " job_type='train', config={})\n"
        "t.log({'x': 1}); t.finish()\n"
        "print('wandb' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert not (ROOT / "unused").exists()


# --------------------------------------------------------------------------- offline round trip


def test_offline_round_trip(wandb_env):
    tmp = wandb_env
    run_dir = tmp / "exp" / "methods" / "lora"
    cfg = TrackingConfig(backend="wandb", project="cyberft-test", mode="offline")
    tracker = Tracker.start(
        cfg, run_dir=run_dir, name="lora", group="exp-1", job_type="train", config=_config(), run_id="exp1-lora"
    )
    assert tracker.enabled and tracker.run_id == "exp1-lora"
    losses = [1.0 / (i + 1) for i in range(5)]
    for i, loss in enumerate(losses):
        tracker.log({"train/loss": loss, "train/lr": 2e-4 * (5 - i) / 5, "train/tokens": 100 * i}, step=i)
    tracker.summary({"final_loss": 0.2, "eval/accuracy": 0.625, "note": LONG_NOTE, "token_echo": ENV_API_KEY})
    samples = [
        {"question": "Which port does HTTPS use?", "gold": "B", "pred": "B", "correct": True},
        {"question": f"leak {ENV_HF_TOKEN}?", "gold": "A", "pred": "C", "correct": False},
    ]
    tracker.log_table("eval/samples", samples, ["question", "gold", "pred", "correct"])
    tracker.log_image("eval/chart", _tiny_png(tmp / "chart.png"))
    tracker.finish()
    tracker.finish()  # idempotent

    runs = find_runs(run_dir)
    assert len(runs) == 1 and runs[0].name.startswith("offline-run-") and runs[0].name.endswith("-exp1-lora")
    assert find_runs(run_dir / "wandb") == runs
    run = read_run(runs[0])

    assert (run.run_id, run.name, run.group, run.job_type) == ("exp1-lora", "lora", "exp-1", "train")
    assert run.config == EXPECTED_CONFIG

    assert [row["_step"] for row in run.history] == [0, 1, 2, 3, 4]
    assert [row["train/loss"] for row in run.history] == pytest.approx(losses)
    assert [row["train/tokens"] for row in run.history] == [0, 100, 200, 300, 400]
    assert run.history[4]["eval/samples"]["_type"] == "table-file"  # logged without a step: joins the last row

    assert run.summary["final_loss"] == pytest.approx(0.2)
    assert run.summary["eval/accuracy"] == pytest.approx(0.625)
    assert run.summary["train/loss"] == pytest.approx(losses[-1])
    assert run.summary["note"] == LONG_NOTE  # a record split over several blocks survives
    assert "token_echo" not in run.summary  # a value equal to the live key is dropped
    assert "_wandb" not in run.config

    table = run.tables["eval/samples"]
    assert table["columns"] == ["question", "gold", "pred", "correct"]
    assert table["data"] == [
        ["Which port does HTTPS use?", "B", "B", True],
        ["<redacted>", "A", "C", False],
    ]
    assert any(f.startswith("media/table/eval/samples_") for f in run.files)
    assert any(f.startswith("media/images/eval/chart_") and f.endswith(".png") for f in run.files)
    assert not any(f == "output.log" for f in run.files)  # console capture is off

    # Every file anywhere under tmp (run dir, staging dir, HOME caches and logs).
    scanned = [p for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".wandb" for p in scanned) and any(p.name == "debug.log" for p in scanned)
    leaks = [(p, c) for p in scanned for c in CANARIES if c.encode() in p.read_bytes()]
    assert leaks == []
    # The table staging copy kept for `wandb sync` lives with the run, not in HOME.
    assert list((run_dir / "wandb" / "data").rglob("*")), "staging dir next to the run"
    assert not (tmp / "home" / ".local" / "share" / "wandb").exists()


def test_find_runs_empty(tmp_path):
    assert find_runs(tmp_path) == []
    assert find_runs(tmp_path / "missing") == []


def test_bad_header_is_rejected():
    with pytest.raises(OfflineLogError):
        list(iter_record_bytes(b"not a wandb log at all"))
