"""``cyberft profile detect`` from recorded sinfo/scontrol/sacctmgr output (no cluster needed).

The recorded texts are what Slurm 22.05 printed on the dev cluster's second shape (typed GRES,
a GPU partition that is not the default, accounts enforced), plus the cases users report:
``32+`` CPUs, ``(null)`` GRES, socket suffixes, GRES on some nodes only, nodes without memory,
several GPU partitions, no slurmdbd.
"""

from __future__ import annotations

import pytest
import yaml

from launch.site import sitecheck
from launch.site.profiles import load_profile
from launch.site.sitechoice import resolve
from launch.site.sitedetect import (
    Facts,
    Gres,
    enforced,
    node_groups,
    parse_assoc,
    parse_config,
    parse_gres,
    parse_partitions,
    parse_qos,
    parse_sinfo,
    parse_time_min,
    parse_users,
)
from launch.site.siteprofile import build, normalise_gpu, render

SINFO = """\
c1|cpu*|2|6026|(null)|idle|(null)|vm|127.0.0.1
n1|gpu|2|6026|gpu:nvidia_a100_80:2|idle|(null)|vm|127.0.0.1
n2|gpu|2|5000|gpu:nvidia_a100_80:1|idle|(null)|vm|127.0.0.1
"""
PARTITIONS = """\
PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=02:00:00 MinNodes=0 Nodes=c1 State=UP TotalCPUs=2 TotalNodes=1 DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
PartitionName=gpu AllowGroups=ALL AllowAccounts=proj AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=02:00:00 MinNodes=0 Nodes=n[1-2] State=UP TotalCPUs=4 TotalNodes=2 DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=4,mem=11026M,node=2,gres/gpu=3
"""  # noqa: E501 (recorded output)
CONFIG = """\
Configuration data as of 2026-12-07T16:30:00
AccountingStorageEnforce = associations,limits
AccountingStorageType   = accounting_storage/slurmdbd
ClusterName             = dev
DefMemPerCPU            = 512
GresTypes               = gpu
SelectType              = select/cons_tres
"""
ASSOC = "dev|root|root||normal,short||\ndev|proj|root||normal,short||\n"
USERS = "root|root\n"
QOS = "normal|||\nshort|00:30:00||DenyOnLimit\n"


def facts(sinfo=SINFO, partitions=PARTITIONS, config=CONFIG, dbd=True) -> Facts:
    f = Facts(
        nodes=parse_sinfo(sinfo),
        partitions=parse_partitions(partitions),
        config=parse_config(config),
        user="root",
        login_host="vm",
        python="/srv/venv/bin/python",
        base_python="/usr/bin/python3.11",
        checkout="/srv/cyberft",
    )
    if dbd:
        f.assoc, f.default_accounts, f.qos = parse_assoc(ASSOC), parse_users(USERS), parse_qos(QOS)
    else:
        f.dbd_note = "AccountingStorageType=accounting_storage/none"
    return f


def written(tmp_path, f: Facts, name="site", **picks) -> tuple[dict, str]:
    r = resolve(f, **picks)
    assert not r.problems and not r.pending, (r.problems, r.pending)
    fields, header = build(f, r, name)
    text = render(fields, header, ["test"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    load_profile(path)  # the existing loader accepts it
    return yaml.safe_load(text), text


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(null)", []),
        ("", []),
        ("gpu:4", [Gres("gpu", "", 4)]),
        ("gpu:a100:4", [Gres("gpu", "a100", 4)]),
        ("gpu:v100:2(S:0-1)", [Gres("gpu", "v100", 2)]),
        ("gpu:4(S:0-1)", [Gres("gpu", "", 4)]),
        ("gpu:a100:2(IDX:0,2),mps:1K", [Gres("gpu", "a100", 2), Gres("mps", "", 1024)]),
        ("gpu:tesla:2(S:0),gpu:a100:1(S:1)", [Gres("gpu", "tesla", 2), Gres("gpu", "a100", 1)]),
    ],
)
def test_gres(text, expected):
    assert parse_gres(text) == expected


@pytest.mark.parametrize(
    "text, minutes",
    [("02:00:00", 120), ("1-12:00:00", 2160), ("30:00", 30), ("45", 45), ("00:00:30", 1), ("UNLIMITED", None)],
)
def test_time(text, minutes):
    assert parse_time_min(text) == minutes


def test_sinfo_plus_null_gres_no_memory_and_states():
    nodes = parse_sinfo(
        "a1|gpu*|32+|1|(null)|idle|(null)|a1|10.0.0.1\n"
        "a2|gpu*|64|512000|gpu:a100:8(S:0-1)|mixed|a100,ib|a2|10.0.0.2\n"
        "a3|gpu*|64|512000|gpu:a100:8(S:0-1)|drained*|a100,ib|a3|10.0.0.3\n"
    )
    assert [n.partition for n in nodes] == ["gpu"] * 3 and nodes[0].default
    assert nodes[0].cpus == 32 and nodes[0].cpus_plus and nodes[0].mem_mb is None and nodes[0].gres == []
    assert nodes[1].gpus == 8 and nodes[1].gpu_types == ["a100"] and nodes[1].usable
    assert not nodes[2].usable
    groups = node_groups(nodes, "gpu")  # the drained node is left out; the GPU-less node is a group
    assert [(g.gpus, g.nodes) for g in groups] == [(0, ["a1"]), (8, ["a2"])]


def test_partition_config_and_accounting():
    parts = parse_partitions(PARTITIONS)
    assert parts["cpu"].default and not parts["gpu"].default
    assert parts["gpu"].allow_accounts == ["proj"] and parts["cpu"].allow_accounts is None
    assert parts["gpu"].max_time_min == 120 and parts["gpu"].total_nodes == 2
    assert enforced(parse_config(CONFIG)) == {"associations", "limits"}
    assert enforced({"AccountingStorageEnforce": "none"}) == set()
    assert enforced({"AccountingStorageEnforce": "qos"}) == {"qos", "associations"}
    assert parse_qos(QOS)["short"].max_wall_min == 30
    assert parse_users(USERS) == {"root": "root"}


@pytest.mark.parametrize(
    "text, key, mem",
    [
        ("nvidia_a100_80", "a100", 80),
        ("a100-sxm4-40gb", "a100", 40),
        ("tesla_a100", "a100", None),
        ("h100_80gb", "h100", 80),
        ("h100", "h100", None),
        ("NVIDIA_H200", "h200", 141),
        ("v100s_32g", "v100", 32),
        ("fake", None, None),
        ("a1000", None, None),
    ],
)
def test_gpu_model(text, key, mem):
    got = normalise_gpu(text)
    assert (got[0], got[2]) == (key, mem) if key else got is None


# --------------------------------------------------------------------------- profiles


def test_second_shape_profile(tmp_path):
    p, text = written(tmp_path, facts(), qos="normal")
    assert p["partition"] == "gpu" and p["account"] == "proj" and p["qos"] == "normal"
    # heterogeneous: the smaller group (n2, 1 GPU, 5000 MB), never an average
    assert (p["gpus_per_node"], p["cpus_per_gpu"], p["mem_gb_per_gpu"]) == (1, 2, 4)
    assert "heterogeneous, 2 node group(s)" in text and "n2 (1 node(s)): 1 x gpu:nvidia_a100_80" in text
    assert p["gpu_type"] == "nvidia_a100_80" and p["typed_gpus"] is True
    assert (p["gpu_mem_gb"], p["gpu_tflops"]) == (80, 312.0)
    assert p["max_time_min"] == 120 and p["max_nodes"] == 2
    assert p["shared_dirs"] == [] and p["python"] == "/srv/venv/bin/python"  # the nodes are this machine
    # every value has a comment above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), line


def test_qos_max_wall_lowers_the_time_limit(tmp_path):
    p, text = written(tmp_path, facts(), qos="short")
    assert p["max_time_min"] == 30 and "-> QoS short MaxWall" in text.replace("\n# ", " ")


def test_several_choices_are_never_guessed():
    r = resolve(facts())  # two QoS
    assert [c.what for c in r.pending] == ["qos"] and r.pending[0].options == ["normal", "short"]
    assert "--qos" in r.pending[0].describe()
    two = SINFO + "m1|gpu2|8|64000|gpu:4|idle|(null)|m1|10.0.0.9\n"
    r = resolve(facts(sinfo=two))
    assert [c.what for c in r.pending] == ["partition"] and r.pending[0].options == ["gpu", "gpu2"]
    r = resolve(facts(), partition="cpu")
    assert r.problems and "has no node with GPUs" in r.problems[0]
    r = resolve(facts(), account="root", qos="normal")
    assert r.problems and "--account: 'root' may not use partition gpu" in r.problems[0]


def test_no_slurmdbd_accounts_from_allow_accounts(tmp_path):
    f = facts(dbd=False, config=CONFIG.replace("slurmdbd", "none"))
    p, text = written(tmp_path, f)
    assert p["account"] == "proj" and p["qos"] is None
    assert "slurmdbd did not answer" in text and "AllowAccounts" in text


def test_untyped_gres_on_some_nodes_no_memory_and_remote_nodes(tmp_path):
    sinfo = (
        "g1|batch*|32+|1|gpu:4(S:0-1)|idle|a100,ib|g1|10.1.0.1\n"
        "g2|batch*|32|1|gpu:4(S:0-1)|idle|a100,ib|g2|10.1.0.2\n"
        "c1|batch*|64|256000|(null)|idle|(null)|c1|10.1.0.3\n"
    )
    parts = "PartitionName=batch AllowAccounts=ALL AllowQos=ALL Default=YES MaxTime=2-00:00:00 TotalNodes=3\n"
    config = "ClusterName = x\nAccountingStorageType = accounting_storage/none\n"
    f = facts(sinfo=sinfo, partitions=parts, config=config, dbd=False)
    p, text = written(tmp_path, f)
    assert p["gpus_per_node"] == 4 and p["typed_gpus"] is False and p["gpu_type"] == "a100"  # from the features
    assert p["cpus_per_gpu"] == 8 and "'N+'" in text
    assert "mem_gb_per_gpu" not in p and "report no memory" in text  # commented out, with what to do
    assert "gpu_mem_gb" not in p and "comes in 40 and 80 GB" in text
    assert p["max_time_min"] == 2880 and p["account"] is None
    assert p["shared_dirs"] == ["/srv"]  # the checkout and the venv's top directory, said to be assumed
    assert "not known to Slurm: assumed" in text


# --------------------------------------------------------------------------- sbatch --test-only, without Slurm


class FakeSbatch:
    """Refuses a job longer than ``max_time`` or asking more than ``max_mem`` GB, as Slurm words it."""

    def __init__(self, max_time=30, max_mem=4):
        self.max_time, self.max_mem, self.calls = max_time, max_mem, 0

    def __call__(self, cmd):
        self.calls += 1
        opts = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
        if int(opts["time"]) > self.max_time:
            return (
                1,
                "",
                "sbatch: error: QOSMaxWallDurationPerJobLimit\nallocation failure: Job violates accounting/QOS policy",
            )
        if int(opts["mem"].rstrip("G")) > self.max_mem:
            return 1, "", "allocation failure: Requested node configuration is not available"
        return 0, "", "sbatch: Job 5 to start at 2026-12-07T16:34:19 using 1 processors on nodes n1 in partition gpu"


def test_refusal_names_the_field_and_the_largest_accepted_value(tmp_path):
    _, text = written(tmp_path, facts(), qos="short")
    path = tmp_path / "site.yaml"
    path.write_text(
        text.replace("max_time_min: 30", "max_time_min: 120").replace("mem_gb_per_gpu: 4", "mem_gb_per_gpu: 9")
    )
    problems, accepted = sitecheck.check(path, facts(), run=FakeSbatch())
    assert accepted == []
    by_field = {x.split(":", 1)[0]: x for x in problems}
    assert (
        "QOSMaxWallDurationPerJobLimit" in by_field["max_time_min"] and "at most 30 minutes" in by_field["max_time_min"]
    )
    assert "Requested node configuration" in by_field["mem_gb_per_gpu"] and "at most 4 GB" in by_field["mem_gb_per_gpu"]
    # what --test-only does not check: a null account whose default may not use the partition
    path.write_text(text.replace("account: proj", "account: null"))
    problems, accepted = sitecheck.check(path, facts(), run=FakeSbatch())
    assert len(accepted) == 2 and len(problems) == 1
    assert problems[0].startswith("account: null (your default account root) may not use partition gpu")


def test_detect_writes_atomically_refuses_to_overwrite_and_lists_choices(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sitecheck, "available", lambda cmd: True)
    out = tmp_path / "site.yaml"
    code, problems = sitecheck.detect(
        sitecheck.DetectArgs(output=str(out)), facts(), interactive=False, run=FakeSbatch()
    )
    assert code == 2 and "qos: several to choose from: normal (default), short -> --qos" in problems[0]
    assert not out.exists()
    args = sitecheck.DetectArgs(output=str(out), qos="normal")
    code, problems = sitecheck.detect(args, facts(), interactive=False, run=FakeSbatch(max_time=10**8))
    assert (code, problems) == (0, []) and out.is_file() and list(tmp_path.iterdir()) == [out]
    code, problems = sitecheck.detect(args, facts(), interactive=False, run=FakeSbatch())
    assert code == 2 and "exists -> --force" in problems[0]
    args.force = True
    code, problems = sitecheck.detect(args, facts(), interactive=False, run=FakeSbatch(max_time=60))
    assert code == 1 and problems[0].startswith("max_time_min: 120") and "at most 60 minutes" in problems[0]
    assert "accepted by sbatch --test-only" in capsys.readouterr().out  # the evaluation shape (60 min)


def test_interactive_choice(monkeypatch):
    answers = iter(["7", "2"])
    choice = resolve(facts()).pending[0]
    assert sitecheck.ask(choice, read=lambda _: next(answers)) == "short"


def test_no_slurm_command_is_said_clearly(monkeypatch):
    from launch import cli

    monkeypatch.setenv("PATH", "/nonexistent")
    assert "no Slurm command found (sinfo, scontrol not on PATH)" in sitecheck.no_slurm_message()
    assert cli.main(["profile", "detect", "-o", "/tmp/never.yaml"]) == 2


def test_text_from_slurm_stays_inside_its_comment_line():
    """A name Slurm printed with a line break in it (a hostile or broken site) cannot add a YAML key."""
    from launch.site.siteprofile import Field, render

    text = render([Field("partition", "gpu", ["the only one"])], ["group n1\nqos: evil"], ["intro\r\naccount: x"])
    parsed = yaml.safe_load(text)
    assert parsed == {"partition": "gpu"}, text
