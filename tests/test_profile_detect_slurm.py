"""``cyberft profile detect`` against a real Slurm, then the smoke experiment with the detected profile.

Two shapes, one cluster each (module-scoped, one at a time):

(a) the dev cluster as ``slurm/dev-cluster/up`` makes it (one node, untyped ``gpu:2``, partition debug);
(b) a site unlike it: typed GRES (``gpu:nvidia_a100_80``), the GPU partition ``gpu`` is not the default
    (``cpu`` is, with a GPU-less node), ``AccountingStorageEnforce=associations,limits``, an account
    ``proj`` that alone may use ``gpu`` (root's default account ``root`` may not), a QoS ``short``
    (MaxWall 30 min, DenyOnLimit), and two node types in ``gpu`` (n1: 2 GPUs, n2: 1 GPU, less memory).

For each: detect, then ``cyberft submit`` of the smoke config's classic methods with
``--profile <detected>`` and no edit of the file; every job must run in the detected partition under
the detected account (sacct) and the report's GPU-hours must equal sacct's. Skipped like the other
Slurm tests (tests/support/slurm_cluster.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support import slurm_cluster as sc
from support.experiments import CLASSIC, classic_smoke
from test_submit_slurm import FAST, cyberft, sacct_gpu_hours

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SITE_B = {
    "GPU_TYPE": "nvidia_a100_80",
    "MEM_MB": "6000",
    "NODE2_GPUS": "1",
    "NODE2_MEM_MB": "5000",
    "GPU_PARTITION": "gpu",
    "ENFORCE": "associations,limits",
    "ACCOUNT": "proj",
    "QOS": "short:30",
}


def start_site_b(base: Path) -> dict[str, str]:
    """``up`` with shape (b)'s variables (tests/support's start_cluster knows only GPU_TYPE)."""
    reason = sc.unavailable_reason("dbd")
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the dev Slurm cluster is required: {reason}")
        pytest.skip(reason)
    with sc.start_lock():  # ports chosen and bound with no other cluster starting on this machine
        port_base = str(sc.free_port_base())
        env = dict(os.environ, BASE=str(base), TOPO="loop2", ACCT="dbd", PORT_BASE=port_base, **SITE_B)
        env.setdefault("UP_TIMEOUT", sc.UP_TIMEOUT)
        env.pop("SLURM_CONF", None)
        proc = subprocess.run([str(sc.UP)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    sc.RUNNING.add(Path(base))
    return {"SLURM_CONF": proc.stdout.strip().splitlines()[-1].split("=", 1)[1]}


@pytest.fixture(scope="module")
def dev_cluster():
    sc.stop_all()
    base = sc.make_base("cyberft-detect-a-")
    try:
        yield sc.cluster_or_skip(base, topo="single", acct="dbd")
    finally:
        sc.stop_cluster(base, remove=True)


@pytest.fixture(scope="module")
def site_b():
    sc.stop_all()
    base = sc.make_base("cyberft-detect-b-")
    try:
        yield start_site_b(base)
    finally:
        sc.stop_cluster(base, remove=True)


def detect(env: dict, out: Path, *flags: str) -> tuple[dict, str]:
    res = cyberft(env, "profile", "detect", "-o", str(out), *flags)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("accepted by sbatch --test-only") == 2, res.stdout
    return yaml.safe_load(out.read_text()), res.stdout


def submit_and_check(env: dict, profile: Path, tmp_path: Path, tiny_model: Path, partition: str, account: str) -> None:
    """The smoke experiment's classic methods (full SFT, LoRA, QLoRA; every kind is submitted to this cluster
    by test_submit_slurm.py) and the evaluation with the detected profile: right partition and account,
    GPU-hours = sacct. Three training jobs, not seven: the same checks at half the suite's time."""
    config = classic_smoke(tmp_path)
    fast = [o for o in FAST if o.split(".")[1] in CLASSIC]
    res = cyberft(env, "submit", str(config), "--profile", str(profile),
                  f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'runs'}", *fast)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    exp = Path(re.search(r"^experiment: (.+)$", res.stdout, re.M).group(1))
    ids = dict(re.findall(r"^  (\S+)\s+job (\d+)$", res.stdout, re.M))
    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    for name, job in ids.items():
        row = sc.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "Partition,Account,State"], env).split()
        assert row == [f"{partition}|{account}|COMPLETED"], (name, row)
    rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
    for name, job in ids.items():
        if name != "eval":
            expected = sacct_gpu_hours(job, env)
            assert rows[name]["gpu_hours"] == pytest.approx(expected, abs=1e-6), (name, rows[name])
            assert rows[name]["status"] == "completed"


def test_dev_cluster_detected_profile_runs_the_smoke_experiment(dev_cluster, tmp_path, tiny_model):
    env = dev_cluster
    path = tmp_path / "deva.yaml"
    p, out = detect(env, path)
    assert (p["partition"], p["account"], p["qos"]) == ("debug", "root", None)
    assert (p["gpus_per_node"], p["typed_gpus"], p["cpus_per_gpu"], p["max_time_min"]) == (2, False, 1, 120)
    assert p["mem_gb_per_gpu"] >= 2 and p["shared_dirs"] == []
    print(path.read_text())
    submit_and_check(env, path, tmp_path, tiny_model, "debug", "root")


def test_site_b_detected_profile_runs_the_smoke_experiment(site_b, tmp_path, tiny_model):
    env = site_b
    path = tmp_path / "siteb.yaml"
    p, out = detect(env, path, "--qos", "normal")
    assert (p["partition"], p["account"], p["qos"]) == ("gpu", "proj", "normal")
    assert (p["gpu_type"], p["typed_gpus"], p["gpu_mem_gb"], p["gpu_tflops"]) == ("nvidia_a100_80", True, 80, 312.0)
    # two node types: named, and the smaller one's resources (n2: 1 GPU, 5000 MB)
    assert "heterogeneous, 2 node group(s)" in out and "n2 (1 node(s)): 1 x gpu:nvidia_a100_80" in out
    assert (p["gpus_per_node"], p["mem_gb_per_gpu"], p["max_time_min"]) == (1, 4, 120)
    print(path.read_text())
    submit_and_check(env, path, tmp_path, tiny_model, "gpu", "proj")


def test_site_b_choices_and_a_refusal_name_the_flag_and_the_field(site_b, tmp_path):
    env = site_b
    path = tmp_path / "short.yaml"
    res = cyberft(env, "profile", "detect", "-o", str(path))  # no terminal: two QoS to choose from
    assert res.returncode == 2 and "qos: several to choose from: normal (default), short -> --qos" in res.stderr
    assert not path.exists()
    p, _ = detect(env, path, "--qos", "short")
    assert p["max_time_min"] == 30  # the QoS's MaxWall is below the partition's MaxTime
    res = cyberft(env, "profile", "detect", "-o", str(path), "--qos", "short")
    assert res.returncode == 2 and "exists -> --force" in res.stderr
    path.write_text(path.read_text().replace("max_time_min: 30", "max_time_min: 120"))
    res = cyberft(env, "profile", "check", str(path))
    print(res.stderr)
    assert res.returncode == 1, res.stdout + res.stderr
    line = next(x for x in res.stderr.splitlines() if "- max_time_min: 120" in x)
    assert "QOSMaxWallDurationPerJobLimit" in line and "-> at most 30 minutes" in line
    path.write_text(
        path.read_text().replace("account: proj", "account: null").replace("max_time_min: 120", "max_time_min: 30")
    )
    res = cyberft(env, "profile", "check", str(path))
    assert res.returncode == 1 and "account: null (your default account root) may not use partition gpu" in res.stderr
