"""Integration tests of slurm/dev-cluster/up and down against a real local Slurm (root, Debian packages).

Skipped without root or without a way to install Slurm, unless CI is set (then they fail);
see tests/support/slurm_cluster.py. The single-node cluster with slurmdbd is shared by the module's tests;
the down test and the two-node (loop2) test stop it (the latter starts its own cluster, on other ports), and a
test after them, in any order, gets a fresh one.
"""

from __future__ import annotations

import re
import typing as tp
from pathlib import Path

import pytest

from support.slurm_cluster import (
    RUNNING,
    cluster_or_skip,
    cluster_pids,
    make_base,
    pid_alive,
    run,
    stop_all,
    stop_cluster,
    wait_job,
)


@pytest.fixture(scope="module")
def _single_clusters() -> tp.Iterator[dict[str, tp.Any]]:
    """The module's single-node clusters (``started``), why one could not start (``failed``); removed at the end."""
    state: dict[str, tp.Any] = {"started": [], "failed": None}
    try:
        yield state
    finally:
        for base, _ in state["started"]:
            stop_cluster(base, remove=True)


@pytest.fixture
def single(_single_clusters: dict[str, tp.Any]) -> tuple[Path, dict[str, str]]:
    """The single-node cluster with slurmdbd, shared by the module's tests: started by the first one that needs it.

    test_down_stops_every_daemon stops it, and test_two_nodes_on_loopback stops it too (stop_all): a test that
    runs after either (tests in any order) gets a fresh cluster instead of one whose controller is gone.
    A cluster that could not start (a skip, or a failure) is not tried again: the next test gets the same outcome.
    """
    state = _single_clusters
    if state["failed"] is not None:
        raise state["failed"]
    if not state["started"] or state["started"][-1][0] not in RUNNING:
        base = make_base("cyberft-slurm-single-")
        state["started"].append((base, None))
        try:
            env = cluster_or_skip(base, topo="single", acct="dbd")
        except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
            state["failed"] = exc
            raise
        state["started"][-1] = (base, env)
    return state["started"][-1]


def test_node_idle_with_two_fake_gpus(single):
    _, env = single
    rows = run(["sinfo", "-h", "-N", "-o", "%N|%T|%G|%P"], env).split()
    assert len(rows) == 1, rows
    _, state, gres, partition = rows[0].split("|")
    assert (state, gres, partition) == ("idle", "gpu:2", "debug*")


def test_gpu_job_completes_and_is_accounted(single):
    base, env = single
    out = base / "job-%j.out"
    job_id = run(["sbatch", "--parsable", "--gres=gpu:1", "-o", str(out), "--wrap", "echo $CUDA_VISIBLE_DEVICES"], env)
    job_id = job_id.strip().split(";")[0]
    first = re.search(r"^FirstJobId=(\d+)$", Path(env["SLURM_CONF"]).read_text(), re.M).group(1)
    assert job_id == first, "the first job of a fresh cluster should get FirstJobId"
    assert wait_job(job_id, env, timeout=300) == "COMPLETED"  # a bound for a hung job, not a speed test
    assert Path(str(out).replace("%j", job_id)).read_text().strip() in ("0", "1")
    tres = run(["sacct", "-j", job_id, "-X", "--format=AllocTRES", "--parsable2", "--noheader"], env)
    assert "gres/gpu=1" in tres, tres


def test_dev_profile_matches_cluster(single):
    from launch.site.profiles import load_profile

    _, env = single
    profile = load_profile("dev")
    part = run(["scontrol", "show", "partition", profile.partition, "-o"], env)
    max_time = re.search(r"MaxTime=(\S+)", part).group(1)  # 02:00:00
    h, m, s = (int(x) for x in max_time.split(":"))
    assert h * 60 + m == profile.max_time_min
    node = run(["scontrol", "show", "node", "-o"], env)
    assert f"Gres=gpu:{profile.gpus_per_node}" in node
    cpus = int(re.search(r"CPUTot=(\d+)", node).group(1))
    mem_mb = int(re.search(r"RealMemory=(\d+)", node).group(1))
    assert profile.cpus_per_gpu * profile.gpus_per_node <= cpus
    assert profile.mem_gb_per_gpu * profile.gpus_per_node * 1000 <= mem_mb


def test_down_stops_every_daemon(single):
    base, _ = single
    pids = cluster_pids(base)
    assert {"slurmctld.pid", "slurmdbd.pid", "db/mariadbd.pid", "munge/munged.pid"} <= set(pids), pids
    assert any(k.startswith("slurmd-") for k in pids), pids
    assert all(pid_alive(p) for p in pids.values()), pids
    stop_cluster(base)
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    stop_cluster(base)  # idempotent


def test_two_nodes_on_loopback():
    stop_all()  # never two clusters at once (they would also use different ports)
    base = make_base("cyberft-slurm-loop2-")
    try:
        env = cluster_or_skip(base, topo="loop2", acct="none")
        rows = sorted(run(["sinfo", "-h", "-N", "-o", "%N|%T|%G"], env).split())
        assert rows == ["n1|idle|gpu:2", "n2|idle|gpu:2"]
        out = run(["srun", "-N2", "-n2", "--gres=gpu:1", "bash", "-c", "echo $SLURMD_NODENAME"], env, timeout=300)
        assert sorted(out.split()) == ["n1", "n2"]
    finally:
        pids = cluster_pids(base)
        stop_cluster(base, remove=True)
    assert len([k for k in pids if k.startswith("slurmd-")]) == 2
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
