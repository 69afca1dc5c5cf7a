"""The CLI: no torch on the login-node path; bad input exits 2 and starts nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from support.experiments import SMOKE_METHODS

REPO = Path(__file__).resolve().parents[1]


def _py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_launch_and_help_load_no_torch():
    """Every launch module (found on disk, not a hand-picked list) and `cyberft --help` load none of
    the compute side's packages (tools/check_layers.py also imports each with them blocked)."""
    code = (
        "import sys, contextlib, io, importlib, pkgutil\n"
        "import launch, launch.cli\n"
        "names = [m.name for m in pkgutil.walk_packages(launch.__path__, 'launch.')]\n"
        "assert 'launch.run.submit' in names, names  # the sub-packages too\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        launch.cli.main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "assert 'cyberft' in out.getvalue()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "               {'torch', 'transformers', 'peft', 'deepspeed', 'bitsandbytes', 'accelerate', 'wandb',\n"
        "                'datasets', 'matplotlib'})\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    res = _py(code)
    assert res.returncode == 0, res.stderr + res.stdout
    assert res.stdout.strip().endswith("[]")


def test_console_script_help_runs_without_torch_importable(tmp_path):
    """With torch made unimportable, `cyberft --help` and `cyberft validate` still work."""
    (tmp_path / "torch.py").write_text("raise ImportError('torch must not be imported on the login node')\n")
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-m", "launch.cli", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    for cmd in ("run", "validate", "data", "tiny-model", "report"):
        assert cmd in res.stdout


def _write_bad_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["output_dir"] = str(tmp_path / "runs")
    cfg["model"]["name_or_path"] = str(tmp_path / "no-model")
    cfg["data"]["train"]["path"] = str(tmp_path / "missing.json")
    cfg["methods"][0]["learnig_rate"] = 0.1  # unknown key
    cfg["methods"][1]["max_steps"] = "many"  # wrong type
    cfg["methods"][2]["resources"]["gpus_per_node"] = 2  # QLoRA on 2 GPUs
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_config_exits_2_lists_every_problem_and_starts_nothing(tmp_path):
    path = _write_bad_config(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "launch.cli", "run", str(path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr
    assert "5 problem(s)" in err
    assert "methods[0] (full_sft).learnig_rate: unknown key -> did you mean 'learning_rate'?" in err
    assert "methods[1] (lora).max_steps: expected an integer" in err
    assert "qlora runs on one GPU" in err
    assert "data.train.path:" in err and "does not exist" in err
    assert "model.name_or_path:" in err and "cyberft tiny-model" in err
    assert not (tmp_path / "runs").exists(), "nothing may be created for a bad config"


def test_validate_prints_resolved_config(tmp_path, tiny_model):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.cli",
            "validate",
            "configs/smoke.yaml",
            f"model.name_or_path={tiny_model}",
            "methods.lora.max_steps=5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    body = yaml.safe_load(res.stdout)
    assert body["methods"][1]["max_steps"] == 5
    assert f"# OK: {len(SMOKE_METHODS)} method(s)" in res.stdout
