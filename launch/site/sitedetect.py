"""Read a Slurm site from its own commands' output: pure parsers, no subprocess.

``cyberft profile detect`` (:mod:`launch.site.siteprofile` builds the profile, :mod:`launch.site.sitecheck`
runs the commands) asks the scheduler, never the login node: login nodes differ from compute
nodes. Each parser takes one command's text and returns plain data:

=====================================================================  ==========================
command                                                                parser
=====================================================================  ==========================
``sinfo -N -h -o '%N|%P|%c|%m|%G|%T|%f|%n|%o'`` (:data:`SINFO_FORMAT`)  :func:`parse_sinfo`
``scontrol show partition -o``                                         :func:`parse_partitions`
``scontrol show config``                                               :func:`parse_config`
``sacctmgr -n -P show assoc format=`` :data:`ASSOC_FORMAT`               :func:`parse_assoc`
``sacctmgr -n -P show user format=User,DefaultAccount``                :func:`parse_users`
``sacctmgr -n -P show qos format=`` :data:`QOS_FORMAT`                   :func:`parse_qos`
=====================================================================  ==========================

Example
-------
>>> parse_gres("gpu:v100:2(S:0-1),mps:200")
[Gres(name='gpu', type='v100', count=2), Gres(name='mps', type='', count=200)]
>>> parse_time_min("1-12:00:00")
2160
"""

from __future__ import annotations

import re
import typing as tp
from dataclasses import dataclass, field

SINFO_FORMAT = "%N|%P|%c|%m|%G|%T|%f|%n|%o"
"""Per node and partition: name, partition (``*`` marks the default), CPUs, memory (MB), GRES,
state, features, host name, address."""
ASSOC_FORMAT = "Cluster,Account,User,Partition,QOS,DefaultQOS,MaxWall"
QOS_FORMAT = "Name,MaxWall,MaxTRESPerJob,Flags"
UNUSABLE_STATES = ("down", "drain", "fail", "maint", "inval", "future", "unknown", "no_respond", "power_down")
"""Node states (``sinfo %T``, lower case, a prefix is enough) that take no job now."""


@dataclass(frozen=True)
class Gres:
    """One generic resource of a node: ``gpu:a100:4`` -> name gpu, type a100, count 4."""

    name: str
    type: str
    count: int


@dataclass
class Node:
    """One line of ``sinfo -N``: a node as one partition sees it."""

    name: str
    partition: str
    default: bool
    cpus: int
    mem_mb: int | None
    """RealMemory; None when the node reports none (Slurm's ``1``: RealMemory unset)."""
    gres: list[Gres]
    state: str
    features: str = ""
    hostname: str = ""
    addr: str = ""
    cpus_plus: bool = False
    """``sinfo`` printed ``32+``: more than one CPU count (the figure is the lowest)."""

    @property
    def gpus(self) -> int:
        return sum(g.count for g in self.gres if g.name == "gpu")

    @property
    def gpu_types(self) -> list[str]:
        return sorted({g.type for g in self.gres if g.name == "gpu" and g.type})

    @property
    def usable(self) -> bool:
        state = self.state.lower().rstrip("*~#!%$@^-")
        return not any(state.startswith(s) for s in UNUSABLE_STATES)


@dataclass
class Partition:
    """``scontrol show partition``: the fields detection uses (raw text kept in ``raw``)."""

    name: str
    default: bool = False
    max_time_min: int | None = None
    """MaxTime in minutes; None: UNLIMITED."""
    allow_accounts: list[str] | None = None
    """None: ALL."""
    deny_accounts: list[str] = field(default_factory=list)
    allow_qos: list[str] | None = None
    max_nodes: int | None = None
    total_nodes: int | None = None
    max_mem_per_node_mb: int | None = None
    def_mem_per_cpu_mb: int | None = None
    raw: dict[str, str] = field(default_factory=dict)


@dataclass
class Assoc:
    """One association of ``sacctmgr show assoc``: a user's right to charge an account."""

    cluster: str
    account: str
    user: str
    partition: str
    qos: list[str]
    default_qos: str
    max_wall_min: int | None


@dataclass
class Qos:
    """One QoS of ``sacctmgr show qos``."""

    name: str
    max_wall_min: int | None
    max_tres_per_job: dict[str, str]
    flags: list[str]


# --------------------------------------------------------------------------- small values


def parse_time_min(text: str) -> int | None:
    """Slurm's time text in whole minutes (rounded up); None for UNLIMITED/INFINITE/NONE/empty.

    ``[days-]hours:minutes:seconds``, ``hours:minutes:seconds``, ``minutes:seconds`` and a bare
    number of minutes, as sacctmgr and scontrol print them.
    """
    text = (text or "").strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", "(NULL)"):
        return None
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = [int(x) for x in rest.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def parse_gres(text: str) -> list[Gres]:
    """``sinfo %G`` text -> GRES list. ``(null)``: none; ``(S:0-1)``/``(IDX:0,2)`` suffixes dropped.

    Typed ``gpu:a100:4`` keeps its type; untyped ``gpu:4`` has type ``""``; a count with a unit
    (``mps:1K``) is read as the number.
    """
    text = (text or "").strip()
    if not text or text == "(null)":
        return []
    items = re.split(r",(?![^(]*\))", text)  # commas inside (IDX:0,2) do not separate items
    out = []
    for item in items:
        item = re.sub(r"\(.*?\)", "", item).strip()
        if not item:
            continue
        parts = item.split(":")
        count_text = parts[-1] if len(parts) > 1 else "1"
        m = re.match(r"(\d+)\s*([KMGT]?)", count_text)
        if not m:  # "gpu:a100" without a count
            parts, m = [*parts, "1"], re.match(r"(\d+)()", "1")
        count = int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]
        out.append(Gres(parts[0], ":".join(parts[1:-1]), count))
    return out


def _int(text: str) -> int | None:
    m = re.match(r"\d+", (text or "").strip())
    return int(m.group(0)) if m else None


def _names(text: str | None) -> list[str] | None:
    """``ALL`` (or missing) -> None; ``a,b`` -> [a, b]."""
    if text is None or text.strip().upper() in ("ALL", ""):
        return None
    return [x for x in text.split(",") if x]


def _mem_mb(text: str | None) -> int | None:
    if text is None or text.upper() in ("UNLIMITED", "0", "NONE"):
        return None
    m = re.match(r"(\d+)([KMGT]?)", text)
    if not m:
        return None
    return int(int(m.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[m.group(2)])


# --------------------------------------------------------------------------- parsers


def parse_sinfo(text: str) -> list[Node]:
    """``sinfo -N -h -o SINFO_FORMAT`` -> one :class:`Node` per (node, partition) line."""
    nodes = []
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 6:
            continue
        cols += [""] * (9 - len(cols))
        name, part, cpus, mem, gres, state, features, hostname, addr = cols[:9]
        mem_mb = _int(mem)
        nodes.append(
            Node(
                name=name,
                partition=part.rstrip("*"),
                default=part.endswith("*"),
                cpus=_int(cpus) or 0,
                mem_mb=mem_mb if mem_mb and mem_mb > 1 else None,  # RealMemory unset: sinfo shows 1
                gres=parse_gres(gres),
                state=state,
                features="" if features == "(null)" else features,
                hostname=hostname,
                addr=addr,
                cpus_plus=cpus.strip().endswith("+"),
            )
        )
    return nodes


def parse_partitions(text: str) -> dict[str, Partition]:
    """``scontrol show partition -o`` (one line each; the multi-line form works too) -> by name."""
    out: dict[str, Partition] = {}
    for block in re.split(r"\n(?=PartitionName=)", text.strip()):
        raw = dict(re.findall(r"(\w+)=(\S*)", block))
        if "PartitionName" not in raw:
            continue
        out[raw["PartitionName"]] = Partition(
            name=raw["PartitionName"],
            default=raw.get("Default", "NO") == "YES",
            max_time_min=parse_time_min(raw.get("MaxTime", "")),
            allow_accounts=_names(raw.get("AllowAccounts")),
            deny_accounts=[x for x in raw.get("DenyAccounts", "").split(",") if x and x != "(null)"],
            allow_qos=_names(raw.get("AllowQos")),
            max_nodes=_int(raw.get("MaxNodes", "")),
            total_nodes=_int(raw.get("TotalNodes", "")),
            max_mem_per_node_mb=_mem_mb(raw.get("MaxMemPerNode")),
            def_mem_per_cpu_mb=_mem_mb(raw.get("DefMemPerCPU")),
            raw=raw,
        )
    return out


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config`` (``Key = value`` lines) -> {Key: value}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"\s*[A-Za-z][\w/]*\s*", key):
            out[key.strip()] = value.strip()
    return out


def enforced(config: dict[str, str]) -> set[str]:
    """AccountingStorageEnforce as a set; ``limits``, ``qos`` and ``safe`` imply ``associations``."""
    flags = {f.strip().lower() for f in config.get("AccountingStorageEnforce", "").split(",")}
    flags -= {"", "none", "0"}
    if flags & {"limits", "qos", "safe"}:
        flags.add("associations")
    return flags


def parse_assoc(text: str) -> list[Assoc]:
    """``sacctmgr -n -P show assoc format=ASSOC_FORMAT`` -> associations (account-only rows kept, user ``""``)."""
    out = []
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) != 7:
            continue
        cluster, account, user, part, qos, def_qos, max_wall = cols
        out.append(
            Assoc(cluster, account, user, part, [q for q in qos.split(",") if q], def_qos, parse_time_min(max_wall))
        )
    return out


def parse_users(text: str) -> dict[str, str]:
    """``sacctmgr -n -P show user format=User,DefaultAccount`` -> {user: default account}."""
    return dict(line.split("|", 1) for line in text.splitlines() if line.count("|") == 1)


def parse_qos(text: str) -> dict[str, Qos]:
    """``sacctmgr -n -P show qos format=QOS_FORMAT`` -> by name."""
    out = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) != 4 or not cols[0]:
            continue
        name, max_wall, tres, flags = cols
        tres_map = dict(x.split("=", 1) for x in tres.split(",") if "=" in x)
        out[name] = Qos(name, parse_time_min(max_wall), tres_map, [f for f in flags.split(",") if f])
    return out


# --------------------------------------------------------------------------- node groups


@dataclass
class NodeGroup:
    """Nodes of one partition that offer the same: GPUs (and their type), CPUs, memory."""

    gpus: int
    gpu_type: str
    cpus: int
    mem_mb: int | None
    nodes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        gpu = f"{self.gpus} x gpu{':' + self.gpu_type if self.gpu_type else ''}" if self.gpus else "no GPU"
        mem = f"{self.mem_mb} MB" if self.mem_mb else "no memory reported"
        return f"{compress(self.nodes)} ({len(self.nodes)} node(s)): {gpu}, {self.cpus} CPUs, {mem}"


def compress(names: tp.Sequence[str], limit: int = 6) -> str:
    """A short list of node names: ``n1,n2,n3`` or ``n1,n2,... (40)``."""
    return ",".join(names) if len(names) <= limit else ",".join(names[:limit]) + f",... ({len(names)})"


def node_groups(nodes: tp.Sequence[Node], partition: str) -> list[NodeGroup]:
    """The partition's usable nodes grouped by what they offer, smallest first (GPUs, CPUs, memory).

    Nodes that take no job now (down, drained) count only when the partition has no other.
    """
    mine = [n for n in nodes if n.partition == partition]
    usable = [n for n in mine if n.usable] or mine
    groups: dict[tuple, NodeGroup] = {}
    for n in usable:
        key = (n.gpus, ",".join(n.gpu_types), n.cpus, n.mem_mb)
        groups.setdefault(key, NodeGroup(*key)).nodes.append(n.name)
    return sorted(groups.values(), key=lambda g: (g.gpus, g.cpus, g.mem_mb or 0, g.gpu_type))


def gpu_partitions(nodes: tp.Sequence[Node]) -> list[str]:
    """Partitions with at least one GPU node, in sinfo's order."""
    return list(dict.fromkeys(n.partition for n in nodes if n.gpus))


def default_partition(nodes: tp.Sequence[Node], partitions: dict[str, Partition]) -> str | None:
    for n in nodes:
        if n.default:
            return n.partition
    return next((p.name for p in partitions.values() if p.default), None)


@dataclass
class Facts:
    """Everything read from the scheduler and the login side."""

    nodes: list[Node]
    partitions: dict[str, Partition]
    config: dict[str, str]
    user: str
    assoc: list[Assoc] | None = None
    """None: slurmdbd did not answer (``dbd_note`` says why)."""
    default_accounts: dict[str, str] | None = None
    qos: dict[str, Qos] | None = None
    dbd_note: str = ""
    login_host: str = ""
    python: str = ""
    base_python: str = ""
    checkout: str = ""
