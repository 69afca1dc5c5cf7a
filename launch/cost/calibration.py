"""Per-site calibration of the cost forecast: what finished studies measured, kept next to the profile.

Each finished job appends one record, its measured utilisation and overhead, to
``slurm/profiles/<site>.calibration.jsonl`` (:func:`calibration_path`: the profile's file name with
``.calibration.jsonl`` for ``.yaml``; local runs: :func:`local_calibration_path`; both in the directory
:data:`DIR_ENV` names when it is set). The next forecast for the same method kind, GPU type and
model size (:func:`launch.cost.forecast.size_bucket`) uses them instead of the published defaults and
says so: ``source: calibrated from 3 runs``. ``cyberft calibration show --profile P`` prints
:func:`show`. The evaluation job records its experiment (:func:`launch.cost.costcheck.calibrate`), into
the file the experiment's forecast names: the one chosen when it was submitted.

Records
-------
One JSON object per line (:data:`FIELDS`, version :data:`VERSION`): numbers, the method kind, the GPU
type, the experiment's directory name and the job's name, nothing else. No config, path, environment
or message text is copied in, and a name shaped like a credential is replaced (:mod:`launch.spec.redact`),
so the file holds no secret even though it is committed next to the profile. ``id`` (experiment/job)
makes recording idempotent: running the report twice appends nothing the second time.

How a record is appended (and why not ``O_APPEND``)
---------------------------------------------------
Read the file, add the line, write a temporary file in the same directory and rename it over the
old one (:func:`launch.store.fsio.atomic_write_text`), then read it back and check the line is there,
trying again if not. ``O_APPEND`` with one ``write`` is atomic on a local disk but not on NFS, where
profiles usually live: "O_APPEND may lead to corrupted files on NFS filesystems if more than one
process appends data to a file at once ... the client kernel has to simulate it, which can't be done
without a race condition" (open(2)); and a writer killed mid-write leaves half a line. ``rename`` is
atomic on NFS and on Lustre (the server does it), so a reader sees the old file or the new one,
never half of either. Two writers at the same moment can still lose one update (the later rename
wins): the read-back catches that and writes again. Lines written before are copied unchanged, a
corrupt one included; nothing is ever removed or rewritten.

How runs combine
----------------
Utilisation: the **median weighted by tokens** of the matching runs. A median, because one run on a
slow node, sharing a GPU or dominated by start-up would drag a mean; weighted by tokens, because a
long run measures the steady state a forecast extrapolates and a 20-step trial mostly measures
warm-up. The overhead factor (measured / modelled start-up, load and save) is the plain median:
each job has one start-up, whatever its length.

Example
-------
>>> cal = load_for_profile("dev")                      # empty when the file does not exist yet
>>> fc = forecast.forecast(cfg, shape, counts, profile.gpu_type, calibration=cal, ...)
>>> # after the run, for each method (its forecast as saved in EXP/forecast.json):
>>> rec = measure_method(fc_json["methods"][name], metrics, account, experiment=exp_dir.name,
...                      gpu_type=profile.gpu_type)
>>> if rec is not None:
...     append(calibration_path("dev"), rec)
>>> # the evaluation job: its results per model (train/evaluate.py: load_s, eval_s) and its sacct elapsed
>>> ev = fc_json["evaluation"]
>>> rec = measure_job(ev, ev["tokens"], sum(r["eval_s"] for r in results.values()), eval_elapsed_s,
...                   exp_dir.name, profile.gpu_type, gpus=ev["gpus"])
>>> print(show("dev"))
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch import REPO_ROOT
from launch.cost import forecast
from launch.cost.forecast import Calibrated, duration, quantity, size_bucket, text_table
from launch.site import profiles
from launch.spec.redact import token_kind
from launch.store.expdir import CPU_BF16_MIN_PARAMS
from launch.store.fsio import atomic_write_text

SUFFIX = ".calibration.jsonl"
VERSION = 1


def kinds() -> tuple[str, ...]:
    """Job kinds a record may have: every method kind the forecast models (:data:`launch.cost.forecast.KIND_MODELS`,
    read when asked, so a kind added there calibrates too), and the evaluation."""
    return (*forecast.KIND_MODELS, "eval")


DIR_ENV = "CYBERFT_CALIBRATION_DIR"
"""When set, every calibration file lives in this directory instead (``<dir>/<site>.calibration.jsonl``):
for a checkout whose profiles directory is read-only, and for tests, which must not write into the checkout."""

LOCAL_SITE = "local"
"""The pseudo-site of ``cyberft run`` (this machine): its file is ``.cache/local.calibration.jsonl``,
machine-local and never committed (a laptop's speed is no site's)."""
FIELDS = (
    "v",
    "id",
    "recorded_at",
    "experiment",
    "job",
    "kind",
    "gpu_type",
    "size",
    "n_params",
    "gpus",
    "tokens",
    "flops",
    "peak_tflops",
    "compute_s",
    "wall_s",
    "utilisation",
    "overhead_s",
    "modelled_overhead_s",
    "overhead_factor",
    "precision",
    "mem_estimate_gb",
    "mem_peak_gb",
    "cpu_share",
)
"""Every key of a record, and no other. ``precision`` (what a training job computed in: ``fp32``, ``bf16``,
``fp16``; null when unknown) came later: a record without it is a CPU run's ``fp32`` (CPU jobs trained in
nothing else before) and a GPU run's unknown (it matches every precision). ``mem_estimate_gb`` and
``mem_peak_gb`` (GiB; null or absent when not measured) came later too: a training job's memory estimate
before calibration (``launch.cost.memory.MemoryEstimate.own_gb`` with no scale) and its measured peak above its
memory before loading (``metrics.json``'s ``peak_mem_bytes - base_mem_bytes``), which
:meth:`Calibration.memory_scale` turns into the site's correction of the estimate. ``cpu_share`` (a CPU
training job's share of its threads, ``metrics.json``'s; null or absent: not measured) came later still:
see :func:`utilisation_of`."""

PRECISIONS = ("fp32", "bf16", "fp16")

SIZE_RATIO = 8
"""Largest ratio of model sizes between a calibration run and the forecast it calibrates, within a size
bucket: "<1B" holds the smoke study's 0.85M-parameter model and a 494M one, whose LoRA utilisation on the
2-core development machine was 0.07 and 0.39-0.49 (the Qwen study's three seeds), so smoke runs in the
local file must not calibrate a real model's forecast."""

NAME_LIMIT = 120
WRITE_ATTEMPTS = 5


def calibration_path(profile: str | os.PathLike) -> Path:
    """``slurm/profiles/<site>.calibration.jsonl`` for profile ``<site>`` (a name or the path of its YAML).

    In :data:`DIR_ENV`'s directory when that is set.
    """
    path = profiles.profile_path(profile)
    return _placed(path.stem, path.parent)


def local_calibration_path() -> Path:
    """The calibration file of local runs (:data:`LOCAL_SITE`): ``.cache/`` of the checkout, or :data:`DIR_ENV`."""
    return _placed(LOCAL_SITE, REPO_ROOT / ".cache")


def _placed(site: str, default_dir: Path) -> Path:
    where = os.environ.get(DIR_ENV)
    return (Path(where).expanduser() if where else default_dir) / (site + SUFFIX)


def gpu_key(gpu_type: str) -> str:
    """The GPU type as records and lookups compare it (:func:`launch.cost.forecast.gpu_key`; ``unknown`` when empty)."""
    return forecast.gpu_key(gpu_type) or "unknown"


def _name(value: tp.Any) -> str:
    """A name fit for the file: text, at most :data:`NAME_LIMIT` characters, never credential-shaped."""
    text = str(value)[:NAME_LIMIT]
    return "<redacted>" if token_kind(text) else text


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- measuring a finished job


def measure_job(
    job: tp.Mapping[str, tp.Any],
    tokens: float,
    compute_s: float,
    wall_s: float,
    experiment: str,
    gpu_type: str,
    gpus: int | None = None,
    recorded_at: str | None = None,
    precision: str | None = None,
    cpu_share: float | None = None,
) -> dict | None:
    """A record from one job's forecast and what it measured.

    Parameters
    ----------
    job:
        The job's entry in ``launch.cost.forecast.Forecast.to_json()`` (``methods[name]`` or ``evaluation``):
        its ``kind``, ``name``, ``n_params``, ``gpus``, ``peak_tflops``, ``flops_per_token`` and
        ``modelled_overhead_s`` are used.
    tokens:
        Tokens the job processed (``metrics.json``'s ``train_tokens``; the evaluation: every model's).
    compute_s:
        Seconds of compute alone (``metrics.json``'s ``phases_s["train"]``, which leaves checkpoint
        saves out; the evaluation: its scoring time).
    wall_s:
        What the job cost in wall time: sacct's ``elapsed_s`` over every attempt, else the job's own.
    experiment:
        The experiment's directory name (``EXP.name``).
    gpus:
        GPUs the job held (sacct's), else the forecast's.
    precision:
        What the job computed in (``metrics.json``'s ``precision``); None when not recorded.
    cpu_share:
        A CPU job's share of its threads while it computed (``metrics.json``'s ``cpu_share``); None when
        not measured (a GPU job, the evaluation, a job from before it was recorded).

    Returns
    -------
    dict or None
        None when the job cannot calibrate anything: no peak TFLOP/s (unknown GPU type), no tokens
        or no compute time.
    """
    gpus = int(gpus or job.get("gpus") or 0)
    peak = job.get("peak_tflops")
    if not peak or not tokens or not compute_s or compute_s <= 0 or gpus < 1:
        return None
    flops = float(tokens) * float(job["flops_per_token"])
    if flops <= 0:  # few-shot's own job computes nothing: no utilisation to measure (it pays in the evaluation)
        return None
    overhead = max(float(wall_s) - float(compute_s), 0.0)
    modelled = job.get("modelled_overhead_s")
    record = {
        "v": VERSION,
        "id": f"{_name(experiment)}/{_name(job['name'])}",
        "recorded_at": recorded_at or _now(),
        "experiment": _name(experiment),
        "job": _name(job["name"]),
        "kind": job["kind"],
        "gpu_type": gpu_key(gpu_type),
        "size": size_bucket(int(job["n_params"])),
        "n_params": int(job["n_params"]),
        "gpus": gpus,
        "tokens": float(tokens),
        "flops": flops,
        "peak_tflops": float(peak),
        "compute_s": float(compute_s),
        "wall_s": float(wall_s),
        "utilisation": flops / (float(compute_s) * gpus * float(peak) * 1e12),
        "overhead_s": overhead,
        "modelled_overhead_s": modelled,
        "overhead_factor": overhead / modelled if modelled else None,
        "precision": precision,
        "mem_estimate_gb": None,  # a training job's, when it measured both sides (measure_method)
        "mem_peak_gb": None,
        "cpu_share": float(cpu_share) if cpu_share and gpu_key(gpu_type) == "cpu" else None,
    }
    problem = record_problem(record)
    if problem:
        raise ValueError(f"calibration record of {record['id']}: {problem}")
    return record


def measure_method(
    job: tp.Mapping[str, tp.Any],
    metrics: tp.Mapping[str, tp.Any],
    account: tp.Mapping[str, tp.Any] | None,
    experiment: str,
    gpu_type: str,
    recorded_at: str | None = None,
) -> dict | None:
    """:func:`measure_job` for a training method: its ``metrics.json`` and sacct summary (``launch.run.slurm``).

    Only completed methods calibrate (a failed job's time says nothing about its speed); without
    sacct (a local run) the job's own ``wall_s`` stands in for the elapsed time.
    """
    if metrics.get("status") != "completed":
        return None
    compute = (metrics.get("phases_s") or {}).get("train")
    wall = (account or {}).get("elapsed_s") or metrics.get("wall_s")
    if compute is None or wall is None:
        return None
    record = measure_job(
        job,
        metrics.get("train_tokens") or 0,
        compute,
        wall,
        experiment,
        gpu_type,
        (account or {}).get("gpus"),
        recorded_at,
        metrics.get("precision"),
        metrics.get("cpu_share"),
    )
    if record is not None:
        record.update(memory_measured(job, metrics))
    return record


def memory_measured(job: tp.Mapping[str, tp.Any], metrics: tp.Mapping[str, tp.Any]) -> dict[str, float]:
    """``{"mem_estimate_gb", "mem_peak_gb"}`` of a training job, or ``{}`` when either side is unknown: the
    estimate before calibration (the forecast's ``memory_own_raw_gb``, which ``launch.cost.costcheck`` saves with
    each method) and the peak above the job's memory before loading (a job that did not record it: none)."""
    estimate = job.get("memory_own_raw_gb")
    peak, base = metrics.get("peak_mem_bytes"), metrics.get("base_mem_bytes")
    if not isinstance(estimate, (int, float)) or estimate <= 0 or not peak or base is None or peak <= base:
        return {}
    return {"mem_estimate_gb": float(estimate), "mem_peak_gb": (peak - base) / 2**30}


# --------------------------------------------------------------------------- the file


def record_problem(record: tp.Any) -> str | None:
    """Why ``record`` is not a calibration record this version reads (None when it is)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("v") != VERSION:
        return f"v: {record.get('v')!r} -> this version reads v {VERSION}"
    extra = sorted(set(record) - set(FIELDS))
    if extra:
        return f"unknown keys {extra}"
    if record.get("kind") not in kinds():
        return f"kind: {record.get('kind')!r} -> one of {', '.join(kinds())}"
    for key in ("utilisation", "tokens", "compute_s"):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return f"{key}: {value!r} is not a positive number"
    for key in ("id", "gpu_type", "size"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"{key}: {record.get(key)!r} is not a name"
    if record.get("precision") not in (None, *PRECISIONS):
        return f"precision: {record.get('precision')!r} -> one of {', '.join(PRECISIONS)} or null"
    for key in ("mem_estimate_gb", "mem_peak_gb", "cpu_share"):
        value = record.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
        ):
            return f"{key}: {value!r} is not a positive number or null"
    return None


def cpu_bf16_units(cpuinfo: str | None = None) -> bool:
    """Whether this machine's CPU has bf16 matrix units (``amx_bf16`` or ``avx512_bf16`` among the flags of
    ``/proc/cpuinfo``): the login side's reading of what ``train.runtime.cpu_bf16_native`` asks torch."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:  # not Linux: no units known
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def expected_precision(precision: str, gpu_type: str, n_params: int, deepspeed: bool = False) -> str | None:
    """What a job with config ``precision`` will compute in, as ``train.runtime.decide_precision`` decides it;
    None when that cannot be told here (``auto`` on a GPU type the table does not know).

    An explicit value is used as asked or refused, never swapped. ``auto``: on a GPU, bf16 where the table
    says it is native; on a CPU (``gpu_type`` ``cpu``: a local run, this machine's flags), bf16 with bf16
    units, without DeepSpeed and from :data:`launch.store.expdir.CPU_BF16_MIN_PARAMS` parameters, else fp32.
    """
    if precision != "auto":
        return precision
    if gpu_key(gpu_type) == "cpu":
        big = n_params >= CPU_BF16_MIN_PARAMS
        return "bf16" if big and not deepspeed and cpu_bf16_units() else "fp32"
    entry = forecast.gpu_entry(gpu_type)
    return None if entry is None else ("bf16" if entry[2] else "fp32")


def _ran_in(record: dict) -> str | None:
    """A record's precision; one written before records kept it: fp32 on a CPU, unknown (None) on a GPU."""
    return record.get("precision") or ("fp32" if record["gpu_type"] == "cpu" else None)


@dataclass
class Calibration:
    """The records of one calibration file, and the lines that could not be read."""

    path: Path | None = None
    records: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """``line N: why`` for each line left out (kept in the file as it is)."""
    precision: str | None = None
    """The config precision lookups are for (:meth:`keyed`); None: runs of any precision."""
    deepspeed: bool = False

    def keyed(self, precision: str, deepspeed: bool = False) -> Calibration:
        """This calibration for a method of config ``precision``: bf16 runs never calibrate an fp32 forecast."""
        return dataclasses.replace(self, precision=precision, deepspeed=deepspeed)

    def matching(self, kind: str, gpu_type: str, n_params: int) -> list[dict]:
        """Records of ``kind`` on ``gpu_type`` for a model of the same size bucket as ``n_params`` and within
        :data:`SIZE_RATIO` of its size (and, when :meth:`keyed`, that computed in the precision the job will:
        :func:`expected_precision`)."""
        gpu, size = gpu_key(gpu_type), size_bucket(n_params)
        want = expected_precision(self.precision, gpu_type, n_params, self.deepspeed) if self.precision else None
        return [
            r
            for r in self.records
            if r["kind"] == kind
            and r["gpu_type"] == gpu
            and r["size"] == size
            and 1 / SIZE_RATIO <= r["n_params"] / max(n_params, 1) <= SIZE_RATIO
            and (want is None or _ran_in(r) in (None, want))
        ]

    def lookup(self, kind: str, gpu_type: str, n_params: int) -> Calibrated | None:
        """What the forecast uses (:class:`launch.cost.forecast.CalibrationSource`); None without matching runs.

        On a CPU, where some matching runs measured their share of the cores (``cpu_share``), those that
        did not are left out: they cannot tell a machine's rate from a busy machine's (the Qwen study's
        jobs, run beside other work, trained at 14-27 tokens/s, a quiet run of the same config at 25-40).
        """
        runs = timed_runs(self.matching(kind, gpu_type, n_params))
        return combine(runs) if runs else None

    def memory_scale(self, kind: str, gpu_type: str, n_params: int) -> tuple[float, int] | None:
        """The memory estimate's correction for ``kind`` here, and from how many runs: the largest measured
        peak / estimate of the matching runs that measured both (:meth:`matching`); None without any.

        The largest, not a median as for the utilisation: a memory estimate is a limit to plan under, and
        one below a peak this site has already seen would plan a job that runs out. Runs of the same
        config differ by several percent (three LoRA seeds of the Qwen study: 6.5-7.2 GiB), so a median
        would put half of them above it. The estimate models the allocations; the scale carries what this
        site's allocator, libraries and threads add to them, measured.
        """
        ratios = [
            r["mem_peak_gb"] / r["mem_estimate_gb"]
            for r in self.matching(kind, gpu_type, n_params)
            # Within 2x of the model's size, not its whole size bucket: "<1B" holds a 0.85M smoke model, whose
            # memory is mostly the runtime's, and a 494M one, whose is mostly the model's.
            if r.get("mem_peak_gb") and r.get("mem_estimate_gb") and 0.5 <= r["n_params"] / n_params <= 2
        ]
        if not ratios:
            return None
        return max(ratios), len(ratios)


def weighted_median(values: tp.Sequence[float], weights: tp.Sequence[float]) -> float:
    """The value below and above which half the weight lies (the mean of the two middle ones at a tie)."""
    pairs = sorted(zip(values, weights))
    total = sum(w for _, w in pairs)
    running = 0.0
    for i, (value, weight) in enumerate(pairs):
        running += weight
        if math.isclose(running, total / 2) and i + 1 < len(pairs):
            return (value + pairs[i + 1][0]) / 2
        if running > total / 2:
            return value
    return pairs[-1][0]


def timed_runs(records: tp.Sequence[dict]) -> list[dict]:
    """The records a time calibration uses: on a CPU, where some measured their share of the cores, only
    those (:meth:`Calibration.lookup`)."""
    if any(r.get("cpu_share") for r in records if r["gpu_type"] == "cpu"):
        return [r for r in records if r["gpu_type"] != "cpu" or r.get("cpu_share")]
    return list(records)


def utilisation_of(record: dict) -> float:
    """A record's utilisation as its hardware gave it: a CPU job that had ``cpu_share`` < 1 of its threads
    (it waited for cores other work held) is divided by that share. At or above 1 (threads of the libraries
    beside torch's) it is used as measured."""
    share = record.get("cpu_share")
    return record["utilisation"] / share if share and share < 1 else record["utilisation"]


def combine(records: tp.Sequence[dict]) -> Calibrated:
    """Utilisation (:func:`utilisation_of`): median weighted by tokens; overhead factor: plain median (1 when
    none was measured)."""
    util = weighted_median([utilisation_of(r) for r in records], [r["tokens"] for r in records])
    factors = [r["overhead_factor"] for r in records if isinstance(r.get("overhead_factor"), (int, float))]
    factor = weighted_median(factors, [1.0] * len(factors)) if factors else 1.0
    return Calibrated(util, factor, len(records))


def _parse(text: str) -> tuple[list[dict], list[str]]:
    records, skipped = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            skipped.append(f"line {number}: not JSON ({exc.msg})")
            continue
        problem = record_problem(record)
        if problem:
            skipped.append(f"line {number}: {problem}")
        else:
            records.append(record)
    return records, skipped


def load(path: str | os.PathLike) -> Calibration:
    """The records of a calibration file; an absent file is an empty calibration (the defaults apply)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Calibration(path)
    records, skipped = _parse(text)
    return Calibration(path, records, skipped)


def load_for_profile(profile: str | os.PathLike) -> Calibration:
    """:func:`load` of :func:`calibration_path` of ``profile``."""
    return load(calibration_path(profile))


def _ids(text: str) -> set[str]:
    return {r["id"] for r in _parse(text)[0]}


def append(path: str | os.PathLike, record: dict) -> bool:
    """Add ``record`` to the file (created if needed) atomically; False when a record with its ``id`` is there.

    Raises
    ------
    ValueError
        When ``record`` is not a valid record (nothing is written).
    OSError
        When the file cannot be written, or other writers replaced it :data:`WRITE_ATTEMPTS` times in
        a row before this record could be read back (the file is intact either way).
    """
    problem = record_problem(record)
    if problem:
        raise ValueError(f"calibration record: {problem}")
    path = Path(path)
    line = json.dumps({k: record.get(k) for k in FIELDS}, ensure_ascii=False) + "\n"
    for _ in range(WRITE_ATTEMPTS):
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if record["id"] in _ids(text):
            return False
        if text and not text.endswith("\n"):
            text += "\n"  # a last line cut short stays a line of its own (skipped when read), not glued to ours
        atomic_write_text(path, text + line)
        if record["id"] in _ids(path.read_text(encoding="utf-8")):
            return True
    raise OSError(
        f"{path}: replaced by other writers {WRITE_ATTEMPTS} times in a row; {record['id']} not recorded "
        "-> run the report again"
    )


# --------------------------------------------------------------------------- cyberft calibration show


def _group_rows(cal: Calibration) -> list[list[str]]:
    # Precision is part of the key: a bf16 run's rate never calibrates an fp32 forecast (Calibration.keyed). So is
    # the model: a forecast uses runs on models of about its size (SIZE_RATIO), and the smoke model's memory
    # ratio (mostly the runtime's) says nothing of a real model's.
    groups: dict[tuple[str, str, int, str], list[dict]] = {}
    for r in cal.records:
        groups.setdefault((r["kind"], r["gpu_type"], r["n_params"], _ran_in(r) or "?"), []).append(r)
    order = {k: i for i, k in enumerate(kinds())}
    rows = []
    for (kind, gpu, params, precision), runs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], *kv[0][1:])):
        timed = timed_runs(runs)
        c = combine(timed)
        utils = [utilisation_of(r) for r in timed]
        mem = [
            r["mem_peak_gb"] / r["mem_estimate_gb"] for r in runs if r.get("mem_peak_gb") and r.get("mem_estimate_gb")
        ]
        wall = sum(r.get("wall_s") or 0 for r in runs) / len(runs)
        rows.append(
            [
                kind,
                gpu,
                quantity(params),
                precision,
                f"{len(runs)}" if c.runs == len(runs) else f"{len(runs)} ({c.runs} timed)",
                f"{c.utilisation:.3f}",
                f"{min(utils):.3f}-{max(utils):.3f}",
                f"{c.overhead_factor:.2f}",
                f"{max(mem):.2f} ({len(mem)})" if mem else "-",
                quantity(sum(r["tokens"] for r in runs)),
                duration(wall),
                max(r.get("recorded_at") or "" for r in runs),
            ]
        )
    return rows


def format_calibration(cal: Calibration, name: str = "") -> str:
    """The table :func:`show` prints: one row per (kind, GPU type, model, precision) with its combined values."""
    where = f"profile {name}: " if name else ""
    if not cal.records and not cal.skipped:
        return (
            f"{where}no calibration runs yet ({cal.path} does not exist or is empty): forecasts use the "
            "published defaults (launch/cost/forecast.py, DEFAULT_UTILISATION)"
        )
    head = f"calibration of {where}{cal.path}, {len(cal.records)} run{'s' * (len(cal.records) != 1)}"
    headers = [
        "kind",
        "GPU",
        "params",
        "precision",
        "runs",
        "utilisation",
        "range",
        "overhead x",
        "memory x",
        "tokens",
        "mean wall",
        "last recorded",
    ]
    lines = [head, text_table(headers, _group_rows(cal), left=(0, 1, 2, 3, 11))]
    lines += [f"skipped {cal.path}: {s}" for s in cal.skipped]
    lines.append(
        "utilisation: median weighted by tokens, a CPU run's divided by its share of the cores (runs that did not "
        "measure it are left out where others did: '(N timed)'); overhead x: median of measured / modelled start-up, "
        "load and save; memory x: the largest measured peak / memory estimate (of the runs that measured both), which"
        " scales the next memory estimate. Forecasts of the same kind, GPU type, size and precision use these in "
        "place of the defaults (precision ?: a GPU run recorded before records kept it, used for either)."
    )
    return "\n".join(lines)


def show(profile: str | os.PathLike | None) -> str:
    """``cyberft calibration show --profile P``: the calibration of profile ``P`` (a name or a path) as text.

    ``None``: that of local runs (``cyberft calibration show --local``).
    """
    if profile is None:
        return format_calibration(load(local_calibration_path()), f"{LOCAL_SITE} (cyberft run on this machine)")
    return format_calibration(load(calibration_path(profile)), profiles.profile_path(profile).stem)
