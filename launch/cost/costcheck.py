"""The cost forecast in the launcher's flow: made with the plan, saved with the experiment, checked after the run.

:mod:`launch.cost.forecast` computes; this module says for what and from which inputs.

* **Before** (``cyberft submit`` and its dry run, ``cyberft run``): :func:`plan` counts the split's
  tokens (:mod:`launch.cost.tokencount`), reads the site's calibration (:mod:`launch.cost.calibration`), forecasts
  every method and the evaluation and estimates each method's peak memory; :func:`section` is the dry
  run's text and :meth:`Planned.saved` what ``EXP/forecast.json`` keeps.
* **After** (the evaluation job's finalise step, :mod:`launch.results.finalize`): :func:`check` puts each job's
  forecast next to what it measured (:func:`launch.cost.forecast.compare`) for ``summary.json`` and the
  report, and :func:`calibrate` appends each completed job's measured utilisation to the site's
  calibration file, which the next forecast reads (``calibrated from 1 run``).

Sites
-----
A Slurm profile is a site: its ``gpu_type``, ``gpu_tflops``, price, ``max_time_min`` and the
calibration file next to it. ``cyberft run`` is the pseudo-site ``local``: each method runs as one
process whatever its resources say (as :mod:`launch.run.local` runs it); on the CPU a device is one thread
(:data:`CPU_TFLOPS_PER_THREAD` of peak), so the hours are CPU-hours, as the report's local rows count
them. Local runs calibrate too, into ``.cache/local.calibration.jsonl``: this machine's speed, never
committed. The calibration corrects the product peak x utilisation, so the nominal per-thread peak
only has to be the same from run to run.

Memory
------
The estimate per GPU (:func:`launch.cost.memory.estimate`) is compared with the peak the job measured: on
a GPU the allocator's peak (the estimate includes about 1.5 GB of CUDA context and workspaces that it
does not count); on the CPU the process's maximum RSS, against the estimate without that CUDA overhead
plus the resident size of a training process before it loads a model (:data:`CPU_PROCESS_GB`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import subprocess
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch import REPO_ROOT
from launch.cost import calibration, forecast, memory, tokencount
from launch.spec.config import ExperimentConfig
from launch.store.expdir import ExperimentDir, now_iso, parse_address

if tp.TYPE_CHECKING:  # pragma: no cover
    from launch.site.profiles import SlurmProfile

LOCAL = calibration.LOCAL_SITE
GB = memory.GB

CPU_TFLOPS_PER_THREAD = 0.085
"""Nominal peak of one CPU thread for local runs: one core's fp32 matmul rate on the development
machine (a 2048^3 fp32 matmul on both cores ran at 164-176 GFLOP/s, docs/benchmarks.md). Other CPUs
differ by several times; the first calibrated run corrects it."""

LOCAL_STARTUP_S = 8.0
"""Seconds a local job takes before its first step, apart from reading the weights: a new Python
process importing torch and transformers, no scheduler, no CUDA or NCCL start. Measured on the 2-core
development machine: 6-8 s of each smoke job's wall time outside its steps (docs/cost.md)."""

CPU_RUNTIME_GB = 0.2
"""What a training job on the CPU holds above its baseline (libraries imported, data read) apart from what
the memory estimate models: the libraries' lazily loaded parts (peft, accelerate), torch's autograd and
oneDNN scratch, the data loader. On the CPU it is resident memory, as the model's is; on a GPU the
allocator's peak does not count it. Measured on the smoke study's 0.85M-parameter model, whose states are
a few MB: 0.17-0.24 GiB above the baseline across the six training kinds (2026-12-07)."""

CPU_PROCESS_GB = 0.65
"""Resident memory (GiB) of a training process on the CPU before its model counts: the interpreter,
torch, transformers, peft, accelerate and the tokenised data. A smoke run's tiny model (0.85M
parameters, a few MB of states) peaked at 0.69-0.73 GiB of RSS (measured when this was written)."""


# --------------------------------------------------------------------------- the site


@dataclass(frozen=True)
class Site:
    """Where the jobs run, as the forecast needs it."""

    name: str
    gpu_type: str
    gpu_tflops: float | None
    price_per_gpu_hour: float
    max_time_min: int | None
    calibration_file: Path
    devices: tuple[int, int] | None = None
    """(devices of a training job, of the evaluation) when not the config's GPUs: a local run."""
    device: str = "GPU"
    startup_s: float | None = None
    """Seconds a job attempt takes before its first step (the profile's ``job_startup_s``); None: the
    forecast's GPU-site assumption (:data:`launch.cost.forecast.STARTUP_S`)."""

    @classmethod
    def from_profile(cls, profile: SlurmProfile, ref: str | os.PathLike) -> Site:
        """A Slurm site; ``ref`` is the profile as given (a name or a path), which places its calibration file."""
        return cls(
            profile.name,
            profile.gpu_type,
            profile.gpu_tflops,
            profile.price_per_gpu_hour,
            profile.max_time_min,
            calibration.calibration_path(ref).absolute(),
            startup_s=profile.job_startup_s,
        )

    @classmethod
    def local(cls, cfg: ExperimentConfig, gpu_name: str | None = None) -> Site:
        """``cyberft run`` on this machine: on its GPU (``gpu_name``, one per job) or on CPU threads.

        The threads are those :mod:`launch.run.local` gives: ``local.threads_per_job`` to each training
        job, every core to the evaluation.
        """
        path = calibration.local_calibration_path().absolute()
        if gpu_name:
            return cls(LOCAL, gpu_name, None, 0.0, None, path, devices=(1, 1), startup_s=LOCAL_STARTUP_S)
        cores = max(1, os.cpu_count() or 1)
        threads = (cfg.local.threads_per_job, cores)
        return cls(
            LOCAL,
            "cpu",
            CPU_TFLOPS_PER_THREAD,
            0.0,
            None,
            path,
            devices=threads,
            device="CPU thread",
            startup_s=LOCAL_STARTUP_S,
        )


def local_gpu_name() -> str:
    """This machine's first GPU as ``nvidia-smi`` names it, vendor words dropped (``H100 80GB HBM3``); "" if none."""
    if shutil.which("nvidia-smi") is None:
        return ""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    name = (out.strip().splitlines() or [""])[0].strip()
    for vendor in ("NVIDIA ", "Tesla "):
        name = name.removeprefix(vendor)
    return name


def one_process(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` as a local run executes it: every job one process on one device (``launch.run.local``)."""
    view = copy.deepcopy(cfg)
    for resources in [m.resources for m in view.methods] + [view.eval.resources]:
        resources.nodes, resources.gpus_per_node = 1, 1
    return view


# --------------------------------------------------------------------------- before the run


@dataclass
class Planned:
    """A forecast with what it was made from, or the reason there is none (``note``)."""

    site: Site
    forecast: forecast.Forecast | None = None
    memory_gb: dict[str, dict[str, float]] = field(default_factory=dict)
    """Method -> ``{"gpu": estimate per GPU, "own": without the overhead, "cpu": the process on the CPU, ...}``
    in GiB (:func:`memory_estimates`)."""
    lengths: memory.RowLengths | None = None
    """The training split's example lengths the estimates used (:func:`row_lengths`); None: not counted."""
    memory_scales: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    """Method -> the site's calibration of its memory estimate (:func:`memory_scales`)."""

    def scales(self, method: str) -> dict[str, float]:
        """Kind -> scale for ``method``'s estimate (:func:`launch.cost.memory.estimate`'s ``scales``)."""
        return {kind: scale for kind, (scale, _) in (self.memory_scales.get(method) or {}).items()}

    calibration_runs: int = 0
    notes: list[str] = field(default_factory=list)

    def saved(self) -> dict | None:
        """What ``EXP/forecast.json`` holds (None without a forecast): :meth:`Forecast.to_json`, the memory
        estimates, the site and the calibration file the finished jobs append to."""
        if self.forecast is None:
            return None
        return {
            **self.forecast.to_json(),
            "site": self.site.name,
            "calibration_file": str(self.site.calibration_file),
            "memory_gb": self.memory_gb,
            "made_at": now_iso(),
        }


def row_lengths(split: tokencount.SplitTokens) -> memory.RowLengths | None:
    """The training split's example lengths as the memory estimate sizes micro-batches with them; None when empty."""
    if not split.examples or not split.tokens:
        return None
    return memory.RowLengths(
        examples=split.examples,
        mean=split.mean,
        sd=split.sd,
        longest=split.longest or split.mean,
        answer_tokens=split.logit_tokens / split.examples,
    )


def memory_scales(
    cfg: ExperimentConfig, shape: memory.ModelShape, cal: calibration.Calibration | None, gpu_type: str
) -> dict[str, dict[str, tuple[float, int]]]:
    """Method -> ``{kind: (scale, runs)}``: the site's calibration of the memory estimate for the method's kind
    (and, for ``multi_task``, the kind it adapts), in the precision it will compute in; ``{}`` without runs."""
    out: dict[str, dict[str, tuple[float, int]]] = {}
    if cal is None:
        return out
    for m in cfg.methods:
        keyed = cal.keyed(m.precision, bool(m.deepspeed))
        found = {}
        for kind in {m.kind, *([m.adapts] if m.kind == "multi_task" else [])}:
            scale = keyed.memory_scale(kind, gpu_type, shape.n_params)
            if scale is not None:
                found[kind] = scale
        out[m.name] = found
    return out


def method_estimate(
    cfg: ExperimentConfig,
    method: tp.Any,
    shape: memory.ModelShape,
    gpu_type: str,
    lengths: memory.RowLengths | None = None,
    scales: tp.Mapping[str, float] | None = None,
) -> memory.MemoryEstimate:
    """:func:`launch.cost.memory.estimate` of ``method`` in the precision it will compute in on ``gpu_type``
    (``auto`` resolved as the job will: :func:`launch.cost.calibration.expected_precision`; fp32 on a CPU
    without bf16 units), its micro-batches sized by ``lengths``. Raises what the estimate raises."""
    ran = calibration.expected_precision(method.precision, gpu_type, shape.n_params, bool(method.deepspeed))
    if ran is not None and ran != method.precision:
        method = dataclasses.replace(method, precision=ran)
    return memory.estimate(shape, method, cfg.model.max_seq_len, REPO_ROOT, lengths, scales)


def memory_estimates(
    cfg: ExperimentConfig,
    shape: memory.ModelShape,
    lengths: memory.RowLengths | None = None,
    scales: tp.Mapping[str, tp.Mapping[str, tuple[float, int]]] | None = None,
    gpu_type: str = "",
) -> dict[str, dict[str, float]]:
    """Each method's peak memory estimate in GiB.

    ``gpu``: per GPU, what the fit check compares with the card; ``own``: without the fixed CUDA/NCCL
    overhead, what the job's measured peak above its memory before loading is compared with (on a GPU
    the allocator's, on the CPU the resident set's, with :data:`CPU_RUNTIME_GB`); ``cpu``: ``own`` plus
    :data:`CPU_PROCESS_GB`, the whole process on the CPU; ``own_raw``: ``own`` before the site's calibration
    (what a finished job's calibration record keeps); ``scale`` and ``scale_runs``: that calibration (1 and
    0 without one). ``lengths`` sizes the micro-batches (:func:`row_lengths`); without them every example is taken at
    ``max_seq_len``. Methods the estimator does not cover (a kind without its rule, an unreadable
    DeepSpeed JSON) are left out; few-shot has ``gpu`` alone (and ``scored_in_eval``): its figure is its
    scoring in the evaluation job, not its own job's, which loads no model.
    """
    out = {}
    for m in cfg.methods:
        found = (scales or {}).get(m.name) or {}
        try:
            raw = method_estimate(cfg, m, shape, gpu_type, lengths)
        except (ValueError, OSError):
            continue
        scale, runs = memory.calibrated_for(m, found) or (1.0, 0)  # as launch.cost.memory.estimate takes its scale
        if m.kind == "few_shot":  # its figure is its scoring in the evaluation job; its own job loads no model
            out[m.name] = {"gpu": raw.total_gb, "scored_in_eval": True}
            continue
        own_raw = raw.own_gb + (CPU_RUNTIME_GB if calibration.gpu_key(gpu_type) == "cpu" else 0.0)
        out[m.name] = {
            "gpu": raw.own_gb * scale + raw.overhead_gb,
            "own": own_raw * scale,
            "cpu": own_raw * scale + CPU_PROCESS_GB,
            "own_raw": own_raw,
            "scale": scale,
            "scale_runs": runs,
        }
    return out


def plan(cfg: ExperimentConfig, split: tp.Any, site: Site, mode: str = "auto") -> Planned:
    """The forecast of ``cfg`` on ``site`` for the data ``split`` (``launch.questions.data.Split``; None: not readable).

    Never raises for what the plan's other checks report: no model shape, no data, an unreadable
    calibration file each leave a note instead.
    """
    planned = Planned(site)
    shape = memory.model_shape(cfg.model.name_or_path)
    if shape is None:
        planned.notes.append(
            f"not made: no usable config.json for {cfg.model.name_or_path!r} here (the memory estimate says why)"
        )
        return planned
    if split is None:
        planned.notes.append("not made: the data could not be read (see the problems)")
        return planned
    counts = tokencount.count_tokens(split.train, split.eval, cfg.model.name_or_path, cfg.model.max_seq_len, mode)
    try:
        cal: calibration.Calibration | None = calibration.load(site.calibration_file)
    except OSError as exc:
        cal = None
        planned.notes.append(f"calibration: {site.calibration_file} could not be read ({exc}): defaults used")
    view = one_process(cfg) if site.devices else cfg
    planned.forecast = forecast.forecast(
        view,
        shape,
        counts,
        site.gpu_type,
        site.price_per_gpu_hour,
        site.gpu_tflops,
        site.max_time_min,
        cal,
        site.devices,
        site.device,
        site.startup_s,
    )
    planned.lengths = row_lengths(counts.train)
    planned.memory_scales = memory_scales(view, shape, cal, site.gpu_type)
    planned.memory_gb = memory_estimates(view, shape, planned.lengths, planned.memory_scales, site.gpu_type)
    if cal is not None:
        planned.calibration_runs = len(cal.records)
        planned.notes += [f"calibration: skipped {line}" for line in cal.skipped]
    return planned


def _show_command(site: Site) -> str:
    return "cyberft calibration show " + ("--local" if site.name == LOCAL else f"--profile {site.name}")


def section(planned: Planned) -> list[str]:
    """The forecast as the dry run (and ``submit``, ``run``) print it: the table, its warnings, its notes."""
    if planned.forecast is None:
        return [f"cost forecast: {note}" for note in planned.notes]
    lines = planned.forecast.table().splitlines()
    runs = planned.calibration_runs
    if runs:
        lines.append(f"calibration: {runs} run(s) recorded for {planned.site.name} in {planned.site.calibration_file}")
    else:
        lines.append(f"calibration: no runs recorded for {planned.site.name} yet ({_show_command(planned.site)})")
    return lines + planned.notes


# --------------------------------------------------------------------------- after the run


def counted_eval_tokens(cfg: ExperimentConfig, exp: ExperimentDir) -> float | None:
    """Tokens one model scores, counted from the frozen eval split with the tokenizer wherever it can be read
    (the dry run may have estimated them); None when the split cannot be read."""
    from launch.questions.data import DataError, load_jsonl_questions

    try:
        questions = load_jsonl_questions(exp.data.eval_file)
    except (OSError, ValueError, DataError):
        return None
    counts = tokencount.count_tokens([], questions, cfg.model.name_or_path, cfg.model.max_seq_len, mode="count")
    return counts.eval.tokens


def _memory_pair(estimates: dict | None, metrics: tp.Mapping[str, tp.Any]) -> tuple[float | None, float | None]:
    """The estimate and the measured peak to set side by side, in GiB.

    A job that recorded its memory before loading (``base_mem_bytes``): its peak above it against the
    estimate without overhead (``own``). An older one: its whole peak against the CPU figure for an RSS,
    the per-GPU figure for CUDA's peak (as reports of that time compared them).
    """
    peak, base = metrics.get("peak_mem_bytes"), metrics.get("base_mem_bytes")
    actual = peak / GB if peak else None
    if estimates and estimates.get("scored_in_eval"):  # few-shot: nothing of its own job to compare
        return None, actual
    if peak and base is not None and estimates and "own" in estimates:
        return estimates["own"], (peak - base) / GB
    if not estimates:
        return None, actual
    return (estimates.get("cpu") if metrics.get("peak_mem_kind") == "rss" else estimates.get("gpu")), actual


def _seconds(results: tp.Mapping[str, tp.Mapping[str, tp.Any]], key: str) -> float:
    return sum(float(r.get(key) or 0.0) for r in results.values())


def check(
    saved: tp.Mapping[str, tp.Any],
    rows: list[dict],
    metrics: tp.Mapping[str, tp.Mapping[str, tp.Any]],
    evaluation: tp.Mapping[str, tp.Any],
    scored: tp.Mapping[str, tp.Mapping[str, tp.Any]],
    tokens_per_model: float | None,
) -> dict:
    """Forecast next to actual, for ``summary.json``: each method, and the evaluation.

    Parameters
    ----------
    saved:
        ``EXP/forecast.json`` (:meth:`Planned.saved`).
    rows:
        The report rows (``launch.results.report.build_rows``): GPU-hours and elapsed time from sacct on Slurm,
        the job's own timers and CPU-hours on a local CPU run.
    metrics:
        Method -> its ``metrics.json``: which kind of memory peak it measured.
    evaluation:
        ``launch.results.report.evaluation_cost``: the evaluation's own hours and seconds (from its timers: it is
        still running).
    scored:
        Model -> its evaluation result (``load_s``, ``eval_s``).
    tokens_per_model:
        Tokens of the eval split as counted after the run (:func:`eval_tokens`), for the evaluation's tokens/s.
    """
    cpu = saved.get("device", "GPU") != "GPU"
    hours_key = "cpu_hours" if cpu else "gpu_hours"
    methods = {}
    for row in rows:
        job = _job_of(saved, row["method"])
        if job is None:
            continue
        estimates = (saved.get("memory_gb") or {}).get(parse_address(row["method"])[0])
        mem, peak = _memory_pair(estimates, metrics.get(row["method"]) or {})
        actual = {**row, "gpu_hours": row.get(hours_key), "peak_mem_gb": peak or row.get("peak_mem_gb")}
        methods[row["method"]] = forecast.compare(job, actual, mem)
    eval_s = _seconds(scored, "eval_s")
    tokens = tokens_per_model * len(scored) if tokens_per_model is not None else None
    actual_eval = {
        "gpu_hours": evaluation.get(hours_key),
        "wall_s": evaluation.get("seconds"),
        "tokens_per_s": tokens / eval_s if tokens and eval_s else None,
    }
    return {
        "hours": forecast.device_words(saved.get("device", "GPU"))[1],
        "site": saved.get("site"),
        "gpu_type": saved.get("gpu_type"),
        "tokens_source": saved.get("tokens_source"),
        "made_at": saved.get("made_at"),
        "methods": methods,
        "evaluation": forecast.compare(saved.get("evaluation") or {}, actual_eval),
    }


def _job_of(saved: tp.Mapping[str, tp.Any], address: str) -> tp.Mapping[str, tp.Any] | None:
    """The saved forecast of a method (``lora``), or of the method a sweep's cell belongs to (``lora[3]``:
    the forecast is per run of the method, and every cell is one)."""
    return (saved.get("methods") or {}).get(parse_address(address)[0])


def calibrate(
    saved: tp.Mapping[str, tp.Any],
    experiment: str,
    metrics: tp.Mapping[str, tp.Mapping[str, tp.Any]],
    accounts: tp.Mapping[str, tp.Mapping[str, tp.Any]] | None,
    scored: tp.Mapping[str, tp.Mapping[str, tp.Any]],
    tokens_per_model: float | None,
) -> dict:
    """Append what each completed job measured to the site's calibration file; what was done, for ``summary.json``.

    Training methods: their ``metrics.json`` and, on Slurm, sacct's elapsed time and GPUs
    (:func:`launch.cost.calibration.measure_method`). The evaluation: its scoring time against its load and
    scoring time (its timers, as :func:`check` reports it). Recording twice (a report run again, a
    resumed experiment) adds nothing. A file that cannot be written is reported, never raised: the
    report matters more.
    """
    path, gpu_type = saved.get("calibration_file"), saved.get("gpu_type") or ""
    out: dict[str, tp.Any] = {"file": path, "recorded": [], "already": [], "error": None}
    if not path:
        out["error"] = "the forecast names no calibration file"
        return out
    records = []
    for name in metrics:  # every method, or every cell of a sweep (each measures its method's forecast)
        job = _job_of(saved, name)
        if job is not None:
            # A cell's record is its own (lora[3]), not its method's; with its memory estimate before calibration.
            own_raw = ((saved.get("memory_gb") or {}).get(parse_address(name)[0]) or {}).get("own_raw")
            job = {**job, "name": name, "memory_own_raw_gb": own_raw}
            account = (accounts or {}).get(name)
            records.append(calibration.measure_method(job, metrics.get(name) or {}, account, experiment, gpu_type))
    ev = saved.get("evaluation")
    if ev and scored and tokens_per_model:
        compute, wall = _seconds(scored, "eval_s"), _seconds(scored, "load_s") + _seconds(scored, "eval_s")
        # One precision for the whole job, or none: a bf16 scoring rate must not calibrate an fp32 forecast.
        precisions = {r.get("precision") for r in scored.values()}
        precision = precisions.pop() if len(precisions) == 1 else None
        records.append(
            calibration.measure_job(
                ev, tokens_per_model * len(scored), compute, wall, experiment, gpu_type, ev["gpus"], None, precision
            )
        )
    try:
        for rec in [r for r in records if r is not None]:
            out["recorded" if calibration.append(path, rec) else "already"].append(rec["id"])
    except (OSError, ValueError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def format_check(check_: tp.Mapping[str, tp.Any] | None) -> str:
    """The report's text: the comparison table, the evaluation's row, and what the calibration recorded."""
    if not check_:
        return ""
    rows = dict(check_.get("methods") or {})
    if check_.get("evaluation"):
        rows["eval"] = check_["evaluation"]
    text = forecast.format_comparison(rows, hours=check_.get("hours") or "GPU-h")
    lines = [
        text,
        f"forecast made {check_.get('made_at') or '?'} for {check_.get('site')}; {check_.get('tokens_source')}",
    ]
    lines.append(
        "peak GiB: the method's own memory, the job's peak above its memory before loading (the allocator's on a "
        "GPU, the resident set's on the CPU), against the estimate without CUDA overhead (docs/cost.md#memory)"
    )
    cal = check_.get("calibration") or {}
    if cal.get("error"):
        lines.append(
            f"calibration not recorded: {cal['error']} -> make {cal.get('file')} writable, then "
            "`cyberft calibration record EXP_DIR`"
        )
    elif cal.get("recorded") or cal.get("already"):
        lines.append(
            f"calibration: {len(cal.get('recorded') or [])} job(s) recorded in {cal.get('file')}"
            + (f" ({len(cal['already'])} already there)" if cal.get("already") else "")
        )
    return "\n".join(lines)


def after_run(
    cfg: ExperimentConfig,
    exp: ExperimentDir,
    rows: list[dict],
    metrics: tp.Mapping[str, tp.Mapping[str, tp.Any]],
    accounts: tp.Mapping[str, tp.Mapping[str, tp.Any]] | None,
    evaluation: tp.Mapping[str, tp.Any],
    scored: tp.Mapping[str, tp.Mapping[str, tp.Any]],
) -> dict | None:
    """:func:`check` and :func:`calibrate` for the finalise step; None when the experiment saved no forecast."""
    saved = exp.read_forecast()
    if saved is None:
        return None
    tokens = counted_eval_tokens(cfg, exp)
    out = check(saved, rows, metrics, evaluation, scored, tokens)
    out["calibration"] = calibrate(saved, exp.name, metrics, accounts, scored, tokens)
    return out


def record(exp: ExperimentDir) -> dict:
    """``cyberft calibration record EXP``: :func:`calibrate` again from what the finished experiment wrote.

    For an evaluation job that could not write the calibration file (it says so in the report).
    Raises ``ValueError`` when the experiment has no forecast or no report yet.
    """
    from launch.store.fsio import read_json

    saved = exp.read_forecast()
    if saved is None:
        raise ValueError(f"{exp.forecast_file} does not exist: the experiment was planned without a forecast")
    if not exp.summary_file.is_file():
        raise ValueError(f"{exp.summary_file} does not exist: the evaluation job has not finished")
    cfg = exp.load_config()
    rows = read_json(exp.summary_file).get("rows") or []
    from launch.spec import sweep

    metrics = {c.id: exp.method(c.id).read_metrics().to_dict() for c in sweep.cells(cfg)}
    accounts = {r["method"]: r for r in rows if r.get("cost_source") == "sacct"}
    scored = {name: r.to_dict() for name in exp.eval.scored() if (r := exp.eval.read_result(name)) is not None}
    return calibrate(saved, exp.name, metrics, accounts, scored, counted_eval_tokens(cfg, exp))
