"""A real Slurm configured unlike the plain dev cluster: typed GRES (``Gres=gpu:fake:2``, accounted
both as ``gres/gpu`` and ``gres/gpu:fake``).

Checked end to end: a profile asking for typed GPUs (``typed_gpus: true``) runs the smoke
experiment, its GPU-hours come out once (not doubled by the typed accounting entry), and an
``additional_parameters`` value full of shell syntax reaches Slurm as the text it is, running
nothing. A partition the site does not have is refused by sbatch: exit 2, Slurm's message once,
no experiment left. Skipped like the other Slurm tests (tests/support/slurm_cluster.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.fake_slurm import write_profile
from support.slurm_cluster import cluster_or_skip, make_base, run, stop_all, stop_cluster
from test_submit_slurm import FAST, cyberft, sacct_gpu_hours

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def typed_cluster():
    stop_all()
    base = make_base("cyberft-slurm-site-")
    try:
        yield base, cluster_or_skip(base, topo="single", acct="dbd", gpu_type="fake")
    finally:
        stop_cluster(base, remove=True)


def test_typed_gpus_run_end_to_end_and_are_counted_once(typed_cluster, tmp_path, tiny_model):
    _, env = typed_cluster
    marker = tmp_path / "pwned"
    comment = f"x $(touch {marker}) ; touch {marker} # `touch {marker}`"
    profile = write_profile(tmp_path, gpu_type="fake", typed_gpus=True, additional_parameters={"comment": comment})
    res = cyberft(
        env,
        "submit",
        "configs/smoke.yaml",
        "--profile",
        str(profile),
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'runs'}",
        *FAST,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    exp = Path(re.search(r"^experiment: (.+)$", res.stdout, re.M).group(1))
    ids = dict(re.findall(r"^  (\S+)\s+job (\d+)$", res.stdout, re.M))
    shown = run(["scontrol", "show", "job", ids["lora"]], env)
    assert f"Comment={comment}" in shown, shown  # the text itself reached Slurm
    assert re.search(r"gres[:/]gpu:fake[:=]1", shown), shown  # the typed request

    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
    for name in ("full_sft", "lora", "qlora"):
        tres = run(["sacct", "-j", ids[name], "-X", "-n", "-P", "-o", "AllocTRES"], env)
        assert "gres/gpu:fake=1" in tres and "gres/gpu=1" in tres, tres  # both entries, the same GPU
        expected = sacct_gpu_hours(ids[name], env)
        assert expected > 0 and rows[name]["gpu_hours"] == pytest.approx(expected, abs=1e-6), (name, rows[name])
        assert rows[name]["gpus"] == 1
    assert not marker.exists(), "a value of additional_parameters ran as a command"


def test_a_partition_the_site_lacks_is_refused_by_sbatch_and_leaves_nothing(typed_cluster, tmp_path, tiny_model):
    _, env = typed_cluster
    out = tmp_path / "runs"
    res = cyberft(
        env,
        "submit",
        "configs/smoke.yaml",
        "--profile",
        str(write_profile(tmp_path, partition="nope")),
        f"model.name_or_path={tiny_model}",
        f"output_dir={out}",
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("Invalid partition name specified") == 1, res.stderr
    assert "sbatch refused job full_sft" in res.stderr and "no experiment was created ->" in res.stderr
    assert not out.exists()
