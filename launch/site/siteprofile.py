"""Build a site profile from what :mod:`launch.site.sitedetect` read, each value with where it came from.

Pure functions: :func:`resolve` makes the real choices (partition, account, QoS) from flags and
says which are still open; :func:`build` turns the facts and the choices into the fields of a
:class:`launch.site.profiles.SlurmProfile`, each with its comment; :func:`render` writes them as YAML.

Rules (issue 26): GPUs per node from the nodes' own GRES, typed kept typed; a partition whose
nodes differ takes its *smallest* node group (fewest GPUs, then CPUs, then memory), never an
average; the time limit is the lowest of the partition's MaxTime and the QoS's and association's
MaxWall; the GPU model is normalised to the forecast's peak table (``nvidia_a100_80`` -> A100 80GB).
What Slurm cannot tell (shared directories, the job's Python, prices) comes from the login side
or from flags, and says so.
"""

from __future__ import annotations

import re
import typing as tp
from dataclasses import dataclass

from launch.site.sitechoice import Resolved, my_assoc
from launch.site.sitedetect import Facts, Node, NodeGroup, Partition, compress, node_groups

NO_LIMIT_MIN = 10_000_000
"""``max_time_min`` when nothing limits the time (the profile's largest value)."""

GPU_MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    # forecast key: (name, memory variants in GB, the first one when the name gives none and it is the only one)
    "a100": ("A100", (40, 80)),
    "h100": ("H100", (80, 94)),
    "h200": ("H200", (141,)),
    "l40s": ("L40S", (48,)),
    "a10g": ("A10G", (24,)),
    "v100": ("V100", (16, 32)),
}
"""GPU models of the forecast's peak table (:data:`launch.cost.forecast.GPU_PEAK_TFLOPS`) and their memory sizes."""


@dataclass
class Field:
    """One profile value and the comment lines above it (where it came from)."""

    key: str
    value: tp.Any
    comment: list[str]
    commented_out: bool = False


# --------------------------------------------------------------------------- GPU model


def normalise_gpu(text: str) -> tuple[str, str, int | None] | None:
    """A GRES type or node feature -> (forecast key, display name, memory GB or None); None: unknown.

    >>> normalise_gpu("nvidia_a100_80")
    ('a100', 'A100 80GB', 80)
    """
    words = [w for w in re.split(r"[^a-z0-9]+", (text or "").lower()) if w]
    for i, w in enumerate(words):
        key = next((k for k in GPU_MODELS if w == k or (w.startswith(k) and not w[len(k)].isdigit())), None)
        if key is None:
            continue
        name, sizes = GPU_MODELS[key]
        rest = [w[len(key) :], *words[i + 1 :]]
        mem = next(
            (
                int(m.group(1))
                for x in rest
                if (m := re.fullmatch(r"(?:\D*?)(\d+)(?:gb?)?", x)) and int(m.group(1)) in sizes
            ),
            None,
        )
        if mem is None and len(sizes) == 1:
            mem = sizes[0]
        return key, f"{name} {mem}GB" if mem else name, mem
    return None


# --------------------------------------------------------------------------- the profile


def _time(f: Facts, r: Resolved) -> tuple[int, str]:
    part = f.partitions.get(r.partition, Partition(r.partition))
    limits = [(part.max_time_min, f"partition {r.partition} MaxTime")]
    q = r.qos or next((a.default_qos for a in my_assoc(f, r.partition) if a.default_qos), "") or "normal"
    if f.qos and q in f.qos:
        limits.append((f.qos[q].max_wall_min, f"QoS {q} MaxWall"))
    for a in my_assoc(f, r.partition):
        if r.account in (None, a.account):
            limits.append((a.max_wall_min, f"association {a.account}/{a.user} MaxWall"))
    known = [(m, w) for m, w in limits if m is not None]
    shown = "; ".join(f"{w} {'UNLIMITED' if m is None else m}" for m, w in limits)
    if not known:
        return NO_LIMIT_MIN, f"no limit anywhere ({shown}): the largest value a profile takes"
    low = min(known)
    return low[0], f"the lowest of: {shown} -> {low[1]}"


def _gpu_fields(group: NodeGroup, groups: list[NodeGroup], features: str) -> list[Field]:
    from launch.cost.forecast import GPU_PEAK_TFLOPS, gpu_entry

    typed = bool(group.gpu_type)
    source = group.gpu_type or next((x for x in features.split(",") if normalise_gpu(x)), "")
    model = normalise_gpu(source)
    out = []
    if typed:
        out.append(
            Field("gpu_type", group.gpu_type, [f"GRES type of {compress(group.nodes)} (gpu:{group.gpu_type}:N)"])
        )
        out.append(
            Field("typed_gpus", True, ["typed GRES: jobs ask --gpus-per-node=<gpu_type>:N, as the site names them"])
        )
    elif model:
        out.append(Field("gpu_type", model[0], [f"node feature {source!r} ({model[1]}); the GRES is untyped (gpu:N)"]))
        out.append(Field("typed_gpus", False, ["untyped GRES: jobs ask --gpus-per-node=N"]))
    else:
        out.append(
            Field(
                "gpu_type",
                "",
                [
                    "untyped GRES (gpu:N) and no GPU model among the node features -> name the "
                    "model (a100, h100, ...) for reports and the cost forecast"
                ],
            )
        )
        out.append(Field("typed_gpus", False, ["untyped GRES: jobs ask --gpus-per-node=N"]))
    if model and model[2]:
        out.append(Field("gpu_mem_gb", model[2], [f"{model[1]}, from the GPU model {source!r}"]))
    else:
        why = (
            f"{model[1]} comes in {' and '.join(map(str, GPU_MODELS[model[0]][1]))} GB"
            if model
            else "unknown GPU model"
        )
        out.append(Field("gpu_mem_gb", None, [f"{why} -> set the memory of one GPU in GB (default 16)"], True))
    if model and gpu_entry(out[0].value) is not None:
        out.append(
            Field("gpu_tflops", None, [f"null: the forecast's table gives {model[1]} by gpu_type and precision"])
        )
    elif model:
        bf16, fp32, _ = GPU_PEAK_TFLOPS[model[0]]
        out.append(
            Field(
                "gpu_tflops",
                bf16,
                [
                    f"{model[1]}: dense bf16 peak from launch/cost/forecast.py (fp32 training: "
                    f"{fp32}; set that for fp32-only sites)"
                ],
            )
        )
    else:
        out.append(
            Field(
                "gpu_tflops",
                None,
                [
                    f"GPU model {source or 'unknown'!r} is not in the forecast's table -> "
                    "set one GPU's dense bf16 TFLOP/s for cost forecasts"
                ],
            )
        )
    return out


def _local(f: Facts, nodes: list[Node]) -> bool:
    local = {"127.0.0.1", "localhost", "::1", f.login_host}
    return bool(nodes) and all(n.addr in local or n.hostname == f.login_host for n in nodes)


def build(f: Facts, r: Resolved, name: str, extra: dict[str, tp.Any] | None = None) -> tuple[list[Field], list[str]]:
    """The profile's fields (with comments) and the header notes, for a resolved partition."""
    extra = extra or {}
    part = f.partitions.get(r.partition, Partition(r.partition))
    nodes = [n for n in f.nodes if n.partition == r.partition]
    groups = [g for g in node_groups(f.nodes, r.partition) if g.gpus]
    g = groups[0]
    header = [
        f"partition {r.partition}: " + ("heterogeneous, " if len(groups) > 1 else "") + f"{len(groups)} node group(s):"
    ]
    header += [
        f"  {x.describe()}" + ("   <- the profile's resources (the smallest)" if x is g and len(groups) > 1 else "")
        for x in groups
    ]
    down = [n.name for n in nodes if not n.usable]
    if down:
        header.append(f"not counted (state down/drained/...): {compress(down)}")
    fields = [
        Field("name", name, ["the file name"]),
        Field("partition", r.partition, r.notes.get("partition", [])),
        Field("account", r.account, r.notes.get("account", [])),
        Field("qos", r.qos, r.notes.get("qos", [])),
        Field(
            "constraint",
            None,
            [
                "null: any node of the partition"
                + (f" (features: {nodes[0].features})" if nodes and nodes[0].features else "")
            ],
        ),
        Field("gpus_per_node", g.gpus, [f"GRES of {compress(g.nodes)} (sinfo -N)"]),
    ]
    max_nodes = sum(1 for n in nodes if n.usable and n.gpus >= g.gpus) or len(nodes)
    why = f"{max_nodes} node(s) with >= {g.gpus} GPUs in {r.partition}"
    if part.max_nodes and part.max_nodes < max_nodes:
        max_nodes, why = part.max_nodes, f"partition MaxNodes={part.max_nodes}"
    qos = f.qos.get(r.qos or "normal") if f.qos else None
    if qos and "node" in qos.max_tres_per_job and int(qos.max_tres_per_job["node"]) < max_nodes:
        max_nodes, why = int(qos.max_tres_per_job["node"]), f"QoS {qos.name} MaxTRESPerJob node"
    fields.append(Field("max_nodes", max_nodes, [why]))
    fields += _gpu_fields(g, groups, nodes[0].features if nodes else "")
    cpu_note = f"{g.cpus} CPUs / {g.gpus} GPUs of {compress(g.nodes)}" + (
        " (sinfo showed 'N+': the lowest count)" if any(n.cpus_plus for n in nodes) else ""
    )
    fields.append(Field("cpus_per_gpu", max(1, g.cpus // g.gpus), [cpu_note]))
    fields.append(_mem_field(g, part))
    t, why = _time(f, r)
    fields.append(Field("max_time_min", t, [why]))
    fields += _login_fields(f, nodes, extra)
    return fields, header


def _mem_field(g: NodeGroup, part: Partition) -> Field:
    if g.mem_mb is None:
        return Field(
            "mem_gb_per_gpu",
            None,
            [
                f"{compress(g.nodes)} report no memory (RealMemory unset) -> ask the "
                "site what a job may use and set it (default 32)"
            ],
            True,
        )
    mem, why = g.mem_mb, f"RealMemory {g.mem_mb} MB of {compress(g.nodes)}"
    if part.max_mem_per_node_mb and part.max_mem_per_node_mb < mem:
        mem, why = part.max_mem_per_node_mb, f"partition MaxMemPerNode {part.max_mem_per_node_mb} MB"
    per = mem // 1024 // g.gpus
    return Field(
        "mem_gb_per_gpu",
        max(1, per),
        [f"{why} / 1024 / {g.gpus} GPUs, rounded down" + (" (below 1 GB: 1)" if per < 1 else "")],
    )


def _login_fields(f: Facts, nodes: list[Node], extra: dict[str, tp.Any]) -> list[Field]:
    local = _local(f, nodes)
    if extra.get("shared_dirs") is not None:
        shared, why = list(extra["shared_dirs"]), "given with --shared-dir"
    elif local:
        shared, why = [], "[]: every node of the partition is this machine, so every path is shared"
    else:
        tops = sorted({"/" + p.strip("/").split("/")[0] for p in (f.checkout, f.python) if p.startswith("/")})
        shared, why = (
            tops,
            (
                f"not known to Slurm: assumed the checkout's ({f.checkout}) and the job Python's top "
                "directories -> --shared-dir for the real ones (`df -h` on a node)"
            ),
        )
    python = extra.get("python") or f.python
    py_why = (
        "given with --python"
        if extra.get("python")
        else (
            f"the interpreter running detect (base interpreter {f.base_python}); it must exist at this path on the "
            "nodes -> --python to name another"
        )
    )
    price = extra.get("price")
    return [
        Field("setup", [], ["Slurm cannot tell: module loads or a venv activation the jobs need"]),
        Field("env", {}, ["environment variables for every job (never secrets)"]),
        Field(
            "price_per_gpu_hour",
            float(price or 0.0),
            ["given with --price" if price is not None else "not known to Slurm: 0 -> --price"],
        ),
        Field("job_startup_s", None, ["null: the forecast assumes 60 s; its calibration corrects it"]),
        Field("python", python, [py_why]),
        Field("shared_dirs", shared, [why]),
        Field("additional_parameters", {}, ["other sbatch options for this site"]),
    ]


def _value(v: tp.Any) -> str:
    import yaml

    text = yaml.safe_dump(v, default_flow_style=True, allow_unicode=True, width=10**6).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def render(fields: list[Field], header: list[str], intro: list[str]) -> str:
    """The profile as YAML text: ``intro`` and ``header`` lines first, every value under its comment."""
    import textwrap

    # What Slurm printed (node, partition and GRES names) goes into comments: one line each, whatever it holds.
    lines = ["# " + "".join(" " if c in "\r\n\v\f\x85\u2028\u2029" else c for c in x) for x in intro + header]
    for fl in fields:
        lines.append("")
        lines += [f"# {w}" for c in fl.comment for w in textwrap.wrap(c, 110, break_on_hyphens=False)]
        text = f"{fl.key}: {'' if fl.value is None and fl.commented_out else _value(fl.value)}".rstrip()
        lines.append(f"# {text}" if fl.commented_out else text)
    return "\n".join(lines) + "\n"
