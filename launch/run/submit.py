"""Submit an experiment to Slurm with submitit: a job (a sweep: an array) per method, then the evaluation.

The login-node side of ``cyberft submit`` (standard library, PyYAML and submitit;
never torch). In order:

1. :func:`check` validates the config and the site profile *together* (GPUs per
   node, CPUs, memory and time limit against the profile, paths on shared
   storage, per-GPU memory estimate) and collects every problem;
2. :func:`plan` turns the config into :class:`JobSpec` objects: the sbatch
   parameters of each training job and of the evaluation job;
3. :func:`dry_run_text` renders each job's sbatch script exactly as submitit
   writes it (same function, same parameters) without any cluster;
4. :func:`submit` creates the experiment directory, prepares the data, freezes
   a snapshot of the code, submits every job and records the ids in the
   manifest, atomically, after each submission. It does not wait.

A sweep's cells (:mod:`launch.spec.sweep`) are submitted as one submitit array per method: one
``sbatch`` call with ``--array=0-N%M`` (``M``: ``sweep.max_parallel``), task ``i`` training cell
``i`` (a one-cell method is a plain job: submitit makes no array of one). Each task is a job of its
own for Slurm and submitit: its own pickle, log files, time-out count and requeue
(``scontrol requeue <array>_<i>``), so a cell checkpoints and resumes alone. The evaluation depends
on the arrays' ids (``afterany:<array>``: it starts once every task has ended).

Why the evaluation job depends on ``afterany`` (not ``afterok``): one method
that fails, times out or is cancelled must not take the others' results down
with it. ``afterok`` would leave the evaluation pending forever (or cancelled,
with ``kill_invalid_depend``). With ``afterany`` the evaluation starts once every
training job has *ended*, scores each method whose ``metrics.json`` says
``completed``, and gives every other method a row with its Slurm state and reason.

Why one Slurm task per GPU (not one ``accelerate launch`` per node): every rank
is then a Slurm task running the same pickled :class:`~launch.jobs.TrainJob`,
Slurm tracks and signals each rank (``--kill-on-bad-exit`` ends the job when a
rank dies instead of leaving the others blocked in a collective until the time
limit), there is no second launcher with its own config and rendezvous to get
wrong, and requeue/checkpoint signals reach every rank the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import tempfile
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch import REPO_ROOT
from launch.run import slurm
from launch.site.profiles import ProfileError, SlurmProfile, load_profile
from launch.spec import sweep
from launch.spec.config import ConfigError, ExperimentConfig, MethodConfig, Resources, check_config, config_hash
from launch.spec.redact import short_path
from launch.store.expdir import EVAL_JOB, ExperimentDir, JobRecord, cell_address, parse_address

CODE_DIRS = ("launch", "train", "ds_configs")
"""What the code snapshot holds: the packages the jobs import, and the DeepSpeed configs."""

SIGNAL_DELAY_S = 120
"""USR2 this long before the time limit, so a job can checkpoint and requeue (submitit's default is 90)."""

DEPENDENCY_PLACEHOLDER = "<job id of {name}>"


@dataclass
class JobSpec:
    """One Slurm job of an experiment, before submission.

    Attributes
    ----------
    name:
        A method name, or ``eval``.
    kind:
        ``full_sft``, ``lora``, ``qlora`` or ``eval``.
    params:
        submitit ``SlurmExecutor.update_parameters`` keywords (sbatch names and values, ``mem="8GB"``).
    threads:
        CPU threads each task uses (``cpus_per_task``).
    world_size:
        Tasks in the job: one per GPU over every node (1 for single-device jobs).
    depends_on:
        Names of the submissions this one waits for (``afterany``): each a job or a whole array.
    max_timeouts:
        Requeues on reaching the time limit (submitit's ``max_num_timeout``).
    tasks:
        The manifest names of the jobs this submission makes: one (``lora``, ``eval``) is one job;
        several (a method's cells ``lora[0]``..., the evaluation's shares ``eval[0]``...) are one
        Slurm array, task ``i`` running ``tasks[i]``.
    """

    name: str
    kind: str
    params: dict[str, tp.Any]
    threads: int
    world_size: int
    depends_on: list[str] = field(default_factory=list)
    max_timeouts: int = 3
    tasks: list[str] = field(default_factory=list)

    @property
    def is_array(self) -> bool:
        return len(self.tasks) > 1


# --------------------------------------------------------------------------- validation


def _resources_problems(r: Resources, where: str, p: SlurmProfile) -> list[str]:
    """A job's resources against one node of the profile and the partition's time limit."""
    problems = []
    if r.gpus_per_node > p.gpus_per_node:
        problems.append(
            f"{where}.gpus_per_node: {r.gpus_per_node} GPUs per node, but a node of profile {p.name!r} has "
            f"{p.gpus_per_node} -> at most {p.gpus_per_node}; for more GPUs raise nodes "
            f"(nodes x {p.gpus_per_node})"
        )
    else:  # the per-GPU shares only make sense once the GPUs fit
        gpus = max(1, r.gpus_per_node)
        node_cpus = p.cpus_per_gpu * p.gpus_per_node
        if r.cpus_per_gpu * gpus > node_cpus:
            problems.append(
                f"{where}.cpus_per_gpu: {r.cpus_per_gpu} x {gpus} GPU(s) = {r.cpus_per_gpu * gpus} CPUs per node, "
                f"but a node of {p.name!r} has {p.cpus_per_gpu} x {p.gpus_per_node} = {node_cpus} -> at most "
                f"{node_cpus // gpus} per GPU (the site's share is {p.cpus_per_gpu})"
            )
        node_mem = p.mem_gb_per_gpu * p.gpus_per_node
        if r.mem_gb_per_gpu * gpus > node_mem:
            problems.append(
                f"{where}.mem_gb_per_gpu: {r.mem_gb_per_gpu} GB x {gpus} GPU(s) = {r.mem_gb_per_gpu * gpus} GB per "
                f"node, but a node of {p.name!r} has {p.mem_gb_per_gpu} x {p.gpus_per_node} = {node_mem} GB -> at "
                f"most {node_mem // gpus} GB per GPU (the site's share is {p.mem_gb_per_gpu})"
            )
    if p.max_nodes is not None and r.nodes > p.max_nodes:
        problems.append(
            f"{where}.nodes: {r.nodes}, but a job on {p.name!r} may use at most {p.max_nodes} node(s) "
            f"-> at most {p.max_nodes} (up to {p.max_nodes * p.gpus_per_node} GPUs with gpus_per_node: "
            f"{p.gpus_per_node})"
        )
    if r.time_min > p.max_time_min:
        problems.append(
            f"{where}.time_min: {r.time_min} min, but partition {p.partition!r} of {p.name!r} allows "
            f"{p.max_time_min} -> at most {p.max_time_min} (the job checkpoints and requeues when it runs out)"
        )
    return problems


def resources_problems(cfg: ExperimentConfig, profile: SlurmProfile) -> list[str]:
    """What every job (each method's, the evaluation's) asks that a node or the partition of ``profile``
    does not have; ``submit`` and ``resume`` with changed limits check the same."""
    problems = []
    for i, m in enumerate(cfg.methods):
        problems += _resources_problems(m.resources, f"methods[{i}] ({m.name}).resources", profile)
    return problems + _resources_problems(cfg.eval.resources, "eval.resources", profile)


def _under(path: str, dirs: tp.Iterable[str]) -> bool:
    """Whether ``path`` is one of ``dirs`` or inside one, by its name (no links followed)."""
    path = os.path.normpath(path)
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in dirs)


def _shared_problem(
    where: str, path: str, p: SlurmProfile, follow_links: bool, what: str = "", fix: str = "move it under one of them"
) -> str | None:
    """Why compute nodes would not see ``path`` at the same place (None when they would).

    The path counts as written: ``/scratch/venv/bin/python`` is on shared storage even though it
    links to a base Python elsewhere. With ``follow_links`` (directories the jobs write or read
    through, such as the output directory) a path under a shared directory that resolves outside
    every shared directory is refused too, naming where it resolves.
    """
    if "\x00" in path:
        return None  # reported by the preflight: no file name holds a NUL byte
    shared = ", ".join(p.shared_dirs)
    written = os.path.abspath(os.path.expanduser(path))
    resolved = os.path.realpath(written)
    if not _under(written, p.shared_dirs):
        notes = [x for x in (what, f"a link to {short_path(resolved)}" if resolved != written else "") if x]
        about = f" ({'; '.join(notes)})" if notes else ""
        return (
            f"{where}: {short_path(written)}{about} is not under the shared directories of profile {p.name!r} "
            f"({shared}); compute nodes would not see it -> {fix}"
        )
    real_dirs = [*p.shared_dirs, *(os.path.realpath(d) for d in p.shared_dirs)]
    if follow_links and not _under(resolved, real_dirs):
        return (
            f"{where}: {short_path(written)} is under {shared} but resolves to {short_path(resolved)}, which is "
            "not; compute nodes would not see it there -> point it at shared storage, or add that directory to "
            "shared_dirs if every node sees it"
        )
    return None


def _shared_path_problems(cfg: ExperimentConfig, p: SlurmProfile, python: str) -> list[str]:
    """Paths the jobs use on the compute nodes: the output directory, a local model, the interpreter.

    Data files are not among them: the split is copied into the experiment directory.
    """
    if not p.shared_dirs:
        return []
    problems = [_shared_problem("output_dir", cfg.output_dir, p, follow_links=True)]
    if Path(cfg.model.name_or_path).expanduser().exists():
        problems.append(_shared_problem("model.name_or_path", cfg.model.name_or_path, p, follow_links=True))
    exe = python.split()[0] if python.split() else ""
    if exe.startswith("/"):
        problems.append(
            _shared_problem(
                "python",
                exe,
                p,
                follow_links=False,
                what="the interpreter the jobs would run",
                fix="create the venv on shared storage, or set `python:` in the profile",
            )
        )
    return [x for x in problems if x]


def _memory_problems(cfg: ExperimentConfig, p: SlurmProfile, planned: tp.Any = None) -> tuple[list[str], list[str]]:
    """Per-GPU memory estimate of each method: (one line each, problems when one will not fit).

    ``planned`` (``launch.cost.costcheck.Planned``): the training split's example lengths and the site's
    calibration of the estimate, when the forecast could count them; without it every example is taken
    at ``max_seq_len``, uncalibrated."""
    try:
        from launch.cost import memory
    except ImportError:  # pragma: no cover - the estimator ships with the launcher
        return [], []
    shape = memory.model_shape(cfg.model.name_or_path)
    if shape is None:
        return [
            f"memory: no usable config.json for {cfg.model.name_or_path!r} here (not a local path, not in the "
            "Hugging Face cache, not a built-in model; or a mixture-of-experts or non-decoder config, which the "
            "estimate does not cover): the per-GPU memory check is skipped"
        ], []
    lines, problems = [], []
    index = {m.name: i for i, m in enumerate(cfg.methods)}
    for label, m in _variants(cfg):
        if m.kind == "few_shot":  # its GPU work is its scoring, in the evaluation job, with the eval's batches
            m = dataclasses.replace(m, micro_batch_size=cfg.eval.batch_size, resources=cfg.eval.resources)
        if m.resources.gpus_per_node == 0:
            continue  # CPU job: GPU memory does not apply
        lengths, scales = _sizing(planned, m.name)
        try:
            est = memory.estimate(shape, m, cfg.model.max_seq_len, REPO_ROOT, lengths, scales)
        except (ValueError, OSError) as exc:  # e.g. an unreadable DeepSpeed JSON, already reported
            lines.append(f"{label}: not estimated ({exc})")
            continue
        lines.append(label + est.line()[len(m.name) :])
        at = f" (at sweep grid point {label})" if label != m.name else ""
        for problem in memory.fit_problems(
            est, p.gpu_mem_gb, m, gpus_per_node_max=p.gpus_per_node, max_nodes=p.max_nodes
        ):
            problems.append(problem.replace(f"methods.{m.name}.", f"methods[{index[m.name]}] ({m.name}).", 1) + at)
    return lines, problems


def _variants(cfg: ExperimentConfig) -> list[tuple[str, MethodConfig]]:
    """Each method at each grid point of its sweep (its report row's label and settings): a grid may
    vary what the memory estimate reads (``lora.r``, ``micro_batch_size``, ``gradient_checkpointing``)."""
    try:
        groups = sweep.groups(sweep.cells(cfg))
    except ConfigError:  # the sweep's own problems are reported by the preflight
        return [(m.name, m) for m in cfg.methods]
    return [(label, group[0].config) for label, group in groups.items()]


def _sizing(planned: tp.Any, method: str) -> tuple[tp.Any, dict[str, float] | None]:
    """The example lengths and calibration scales the memory estimate of ``method`` uses (None, None: none)."""
    if planned is None:
        return None, None
    return planned.lengths, planned.scales(method)


def _notes(cfg: ExperimentConfig, p: SlurmProfile, planned: tp.Any = None) -> list[str]:
    """What would not stop the plan but costs time or GPU-hours: a model to download, needless recompute."""
    from launch.cost import memory
    from launch.spec import hub

    download = hub.prefetch_note(cfg.model.name_or_path, hub.job_env(p.env))
    notes = [download] if download else []
    shape = memory.model_shape(cfg.model.name_or_path)
    if shape is None:
        return notes
    for _, m in _variants(cfg):
        lengths, scales = _sizing(planned, m.name)
        try:
            est = memory.estimate(shape, m, cfg.model.max_seq_len, REPO_ROOT, lengths, scales)
        except (ValueError, OSError):  # already reported by the memory check
            continue
        advice = memory.checkpointing_advice(est, p.gpu_mem_gb, m)
        if advice:
            notes.append(advice)
    return notes


def job_python(profile: SlurmProfile) -> str:
    """The shell command that starts Python in the jobs (the profile's words, one space apart)."""
    return " ".join(profile.python.split()) if profile.python else shlex.quote(sys.executable)


@dataclass
class Findings:
    """What :func:`check` found: the config and profile as loaded, every problem, and notes for the dry run.

    ``split`` is the data as the experiment will use it (None when the data has a problem);
    ``scripts_safe`` is False when a config value cannot be written into a job script: the dry run
    then prints the problems alone, nothing resolved from the config.
    """

    cfg: ExperimentConfig | None
    profile: SlurmProfile | None
    problems: list[str]
    memory_lines: list[str]
    notes: list[str] = field(default_factory=list)
    """Not problems (the plan may be submitted): advice shown by the dry run and by ``submit``."""
    split: tp.Any = None
    scripts_safe: bool = True
    forecast: tp.Any = None
    """The cost forecast (``launch.cost.costcheck.Planned``) when the config and the profile loaded."""


def _labelled(prefix: str, items: tp.Iterable[str]) -> list[str]:
    return [x if x.startswith(prefix) else f"{prefix}: {x}" for x in items]


def check(config_path: str, overrides: tp.Sequence[str], profile_name: str) -> Findings:
    """Load and cross-check a config and a profile; collect every problem, raise nothing.

    Everything ``submit`` would refuse is found here, so the dry run exits 2 exactly where
    ``submit`` would: the config's and the profile's own problems, the config's files
    (:mod:`launch.spec.preflight`), then the checks that need both (resources against the profile's
    nodes and partition, shared paths, the job interpreter, memory), then the data, read and
    split as the experiment will use it.
    """
    from launch.spec import preflight, scriptsafe
    from launch.store.experiment import resolve_paths

    cfg, problems = check_config(config_path, overrides)
    problems = _labelled("config", problems)
    found = preflight.check(cfg) if cfg is not None else preflight.Preflight()
    problems += _labelled("config", found.problems)
    try:
        profile: SlurmProfile | None = load_profile(profile_name)
    except ProfileError as exc:
        profile = None
        problems += _labelled("profile", exc.problems)
    memory_lines: list[str] = []
    notes: list[str] = []
    planned = None
    if cfg is not None:
        cfg = resolve_paths(cfg)
    if cfg is not None and profile is not None:
        problems += resources_problems(cfg, profile)
        problems += _shared_path_problems(cfg, profile, job_python(profile))
        if profile.python is None:
            problems += [x for x in [scriptsafe.interpreter_problem(sys.executable)] if x]
        # The forecast first: its token counts size the memory estimate's micro-batches.
        forecast_notes: list[str] = []
        planned = _forecast(cfg, found.split, profile, profile_name, forecast_notes)
        memory_lines, mem_problems = _memory_problems(cfg, profile, planned)
        problems += mem_problems
        notes = _notes(cfg, profile, planned) + forecast_notes
    problems += _labelled("data", found.data_problems)
    safe = cfg is not None and not scriptsafe.output_dir_problems(cfg.output_dir)
    return Findings(cfg, profile, problems, memory_lines, notes, found.split, safe, planned)


def _forecast(cfg: ExperimentConfig, split: tp.Any, profile: SlurmProfile, ref: str, notes: list[str]) -> tp.Any:
    """The cost forecast (``launch.cost.costcheck.Planned``) of the data ``split``; without it (None: the data is not
    on this machine, or not readable), of a split planned from the record counts the config declares
    (``data.train.examples``), its tokens estimated from the bundled sample's questions."""
    from launch.cost import costcheck, tokencount
    from launch.questions import data

    why = ""
    if split is None:
        stand_in, why = tokencount.stand_in_split(cfg.data)
    else:
        stand_in = None
        notes += data.declared_size_notes(cfg.data, split)
    planned = costcheck.plan(cfg, split if split is not None else stand_in, costcheck.Site.from_profile(profile, ref))
    if planned.forecast is None and why:
        planned.notes.append(why)
    return planned


# --------------------------------------------------------------------------- plan


def _base_params(r: Resources, p: SlurmProfile, job_name: str, tasks_per_node: int) -> dict[str, tp.Any]:
    gpus = r.gpus_per_node
    params: dict[str, tp.Any] = {
        "job_name": job_name,
        "partition": p.partition,
        "time": r.time_min,
        "nodes": r.nodes,
        "ntasks_per_node": tasks_per_node,
        "cpus_per_task": r.cpus_per_gpu,
        # Memory per node: the per-GPU share times the GPUs on it (a CPU-only job counts as one).
        # As sbatch text: SlurmExecutor passes a bare number on as MB.
        "mem": f"{r.mem_gb_per_gpu * max(1, gpus)}GB",
        "signal_delay_s": SIGNAL_DELAY_S,
    }
    if gpus:
        # Typed GRES sites: "a100:2" asks for that model; a plain count is granted any GPU type.
        params["gpus_per_node"] = f"{p.gpu_type}:{gpus}" if p.typed_gpus else gpus
    for key in ("account", "qos", "constraint"):
        value = getattr(p, key)
        if value:
            params[key] = value
    return params


def _setup_lines(p: SlurmProfile, exp: ExperimentDir, model: str) -> list[str]:
    from launch.spec import hub

    code = shlex.quote(str(exp.code_dir))
    # Slurm 22.05+ no longer passes --cpus-per-task from sbatch to srun: without this every task
    # would run on one core. First, so that a profile's own setup or env can still override it.
    lines = ["export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK"]
    if "HF_HUB_OFFLINE" not in p.env and hub.offline_ok(model, hub.job_env(p.env)):
        lines.append("export HF_HUB_OFFLINE=1")  # the model is on disk: no rank asks the hub anything
    lines += list(p.setup)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(p.env.items())]
    # The jobs import launch/ and train/ from the experiment's frozen copy, not from the checkout,
    # so editing the code after submitting never changes a queued job.
    lines.append(f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}")
    return lines


def job_name(cfg: ExperimentConfig, name: str) -> str:
    return f"{cfg.name}.{name}"


EVAL_ARRAY = "eval-array"
"""The submission name of the evaluation array (tasks ``eval[0]``...), when there is one."""


def plan(cfg: ExperimentConfig, profile: SlurmProfile, exp: ExperimentDir) -> list[JobSpec]:
    """The Slurm submissions of an experiment: one per method that trains (a job, or an array of its
    sweep's cells), then the evaluation depending on all of them (``afterany``).

    With more models than ``eval.models_per_job``, the scoring is an array of its own first (every
    task scores its share), and the evaluation job that writes the report depends on that array.
    """
    setup = _setup_lines(profile, exp, cfg.model.name_or_path)
    cells = sweep.arrays(sweep.cells(cfg))
    specs: list[JobSpec] = []
    for m in cfg.methods:
        tasks = [c.id for c in cells[m.name]]
        if not cells[m.name][0].trains:
            continue  # a kind with no training job: the evaluation scores its cells
        r = m.resources
        world = r.nodes * max(1, r.gpus_per_node)
        tasks_per_node = max(1, r.gpus_per_node) if world > 1 else 1
        params = _base_params(r, profile, job_name(cfg, m.name), tasks_per_node)
        params["setup"] = setup
        params["additional_parameters"] = dict(profile.additional_parameters)
        if world > 1:
            # A rank that dies must end the job: the others would wait in a collective until the time limit.
            params["srun_args"] = ["--kill-on-bad-exit=1"]
            if r.gpus_per_node:
                # Every rank must see all GPUs of its node (it opens cuda:LOCAL_RANK), whatever the
                # site's default binding of GPUs to tasks; launch.site.gpus checks it on each rank.
                params["srun_args"].append("--gpu-bind=none")
        if len(tasks) > 1 and cfg.sweep is not None and cfg.sweep.max_parallel:
            params["array_parallelism"] = cfg.sweep.max_parallel  # the %N of --array=0-11%N
        specs.append(
            JobSpec(
                m.name,
                m.kind,
                params,
                threads=r.cpus_per_gpu,
                world_size=world,
                max_timeouts=r.max_timeouts,
                tasks=tasks,
            )
        )
    return specs + _eval_specs(cfg, profile, setup, [s.name for s in specs], sum(map(len, cells.values())))


def _eval_specs(
    cfg: ExperimentConfig, profile: SlurmProfile, setup: list[str], training: list[str], n_cells: int
) -> list[JobSpec]:
    """The evaluation job, after an array of scoring tasks when there are more than ``models_per_job`` models."""
    r = cfg.eval.resources
    params = _base_params(r, profile, job_name(cfg, EVAL_JOB), 1)
    # The evaluation is one process: it gets every CPU of its GPUs.
    params["cpus_per_task"] = threads = r.cpus_per_gpu * max(1, r.gpus_per_node)
    params["setup"] = setup
    params["additional_parameters"] = dict(profile.additional_parameters)
    models = n_cells + (1 if cfg.eval.include_base else 0)
    shards = -(-models // cfg.eval.models_per_job)

    def spec(name: str, depends_on: list[str], tasks: list[str]) -> JobSpec:
        return JobSpec(name, EVAL_JOB, dict(params), threads, 1, depends_on, r.max_timeouts, tasks)

    if shards <= 1:
        return [spec(EVAL_JOB, training, [EVAL_JOB])]
    return [
        spec(EVAL_ARRAY, training, [cell_address(EVAL_JOB, i) for i in range(shards)]),
        spec(EVAL_JOB, [EVAL_ARRAY], [EVAL_JOB]),
    ]


def dependency(spec: JobSpec, ids: dict[str, str]) -> str | None:
    """The sbatch ``--dependency`` value of ``spec`` once its prerequisites have ids."""
    if not spec.depends_on:
        return None
    return "afterany:" + ":".join(ids[name] for name in spec.depends_on)


def sbatch_script(spec: JobSpec, exp: ExperimentDir, python: str, ids: dict[str, str]) -> str:
    """The sbatch script submitit writes for ``spec`` (same function, same parameters; ``--array`` for an array)."""
    from submitit.slurm import slurm as submitit_slurm

    params = dict(spec.params)
    dep = dependency(spec, ids)
    if dep:
        params["additional_parameters"] = dict(params["additional_parameters"], dependency=dep)
    if spec.is_array:
        params["map_count"] = len(spec.tasks)  # what submitit's submit_array sets
    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(exp.job_folder))])
    return submitit_slurm._make_sbatch_string(command=command, folder=exp.job_folder, **params)


# --------------------------------------------------------------------------- dry run


def dependency_graph(specs: list[JobSpec]) -> str:
    """The jobs and what each waits for, as text."""
    lines = []
    for s in specs:
        gpus = s.params.get("gpus_per_node", 0)
        shape = (
            f"{s.params['nodes']} node(s) x {gpus} GPU(s), {s.world_size} task(s), {s.params['time']} min, "
            f"requeued on the time limit up to {s.max_timeouts}x"
        )
        if s.is_array:
            limit = s.params.get("array_parallelism", DEFAULT_ARRAY_PARALLELISM)
            shape = (
                f"array of {len(s.tasks)} ({_span(s.tasks)}, at most {min(limit, len(s.tasks))} at once), each {shape}"
            )
        wait = f"  <- afterany: {', '.join(s.depends_on)}" if s.depends_on else ""
        lines.append(f"  {s.name:<12} [{s.kind}] {shape}{wait}")
    return "\n".join(lines)


DEFAULT_ARRAY_PARALLELISM = 256
"""submitit's ``array_parallelism`` when ``sweep.max_parallel`` is not set (its ``--array=0-N%256``)."""


def _span(tasks: list[str]) -> str:
    """``lora[0-11]``: the first and last task of an array."""
    method, first = parse_address(tasks[0])
    return f"{method}[{first}-{parse_address(tasks[-1])[1]}]"


_NOT_SHOWN = (
    "# ---- nothing else shown (resolved config, forecast, jobs, sbatch scripts): a config value above cannot be "
    "written into a job script; fix it and run the dry run again"
)


def dry_run_text(findings: Findings, exp: ExperimentDir) -> str:
    """Everything ``submit`` would do, as text: resolved config, memory, graph, scripts, problems.

    When a config value cannot be written into a job script (``scripts_safe`` is False: a line break or
    another control character in ``output_dir``), only the problems are printed, before anything resolved
    from the config, so a hostile value is shown only as the problem line quotes it (escaped, shortened).
    """
    from launch.spec.config import dump_yaml

    cfg, profile = findings.cfg, findings.profile
    refusal = [f"# ---- {len(findings.problems)} problem(s): submit would refuse this plan"]
    refusal += [f"  - {p}" for p in findings.problems]
    if cfg is not None and not findings.scripts_safe and findings.problems:
        # A value that cannot go into a job script (a line break in output_dir): refused before anything
        # resolved from the config is printed, so the hostile value never reaches the terminal raw.
        return "\n".join([*refusal, _NOT_SHOWN]) + "\n"
    out = []
    if cfg is not None:
        out += ["# ---- resolved config", dump_yaml(cfg).rstrip()]
    if profile is not None:
        out += [
            f"# ---- profile {profile.name}",
            json.dumps(dataclasses.asdict(profile), sort_keys=True, indent=1).rstrip(),
        ]
    if findings.memory_lines:
        out += ["# ---- estimated memory per GPU"] + [f"  {line}" for line in findings.memory_lines]
    if findings.forecast is not None:
        from launch.cost import costcheck

        out += ["# ---- cost forecast"] + [f"  {line}" for line in costcheck.section(findings.forecast)]
    if findings.notes:
        out += ["# ---- notes (not problems)"] + [f"  - {note}" for note in findings.notes]
    if cfg is not None and profile is not None:
        specs = plan(cfg, profile, exp)
        ids = {s.name: DEPENDENCY_PLACEHOLDER.format(name=s.name) for s in specs}
        if cfg.sweep is not None:
            out += ["# ---- sweep", sweep.summary(cfg, cfg.sweep)]
        out += ["# ---- jobs and dependencies", dependency_graph(specs)]
        python = job_python(profile)
        for s in specs:
            out += [f"# ---- sbatch script: {s.name}", sbatch_script(s, exp, python, ids).rstrip()]
    if findings.problems:
        out += refusal
    else:
        out += ["# ---- OK: nothing submitted (dry run)"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- submit


def snapshot_code(exp: ExperimentDir) -> Path:
    """Copy the launcher's code into ``EXP/code`` (temp dir + rename), so queued jobs are frozen."""
    tmp = exp.code_staging_dir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CODE_DIRS:
        shutil.copytree(REPO_ROOT / name, tmp / name, ignore=ignore)
    os.replace(tmp, exp.code_dir)
    return exp.code_dir


def _freeze_deepspeed(cfg: ExperimentConfig, code_dir: Path) -> None:
    """Point each method's DeepSpeed JSON at the snapshot's copy (copying a user's own file in)."""
    for m in cfg.methods:
        if m.deepspeed:
            src = Path(m.deepspeed)
            dest = code_dir / "ds_configs" / src.name
            if not dest.exists() or dest.read_bytes() != src.read_bytes():
                dest = code_dir / "ds_configs" / f"{m.name}-{src.name}"
                shutil.copyfile(src, dest)
            m.deepspeed = str(dest)


def _executor(exp: ExperimentDir, spec: JobSpec, profile: SlurmProfile, dep: str | None) -> tp.Any:
    import submitit

    ex = submitit.SlurmExecutor(
        folder=str(exp.job_folder), python=job_python(profile), max_num_timeout=spec.max_timeouts
    )
    params = dict(spec.params)
    if dep:
        params["additional_parameters"] = dict(params["additional_parameters"], dependency=dep)
    ex.update_parameters(**params)
    return ex


def job_callables(exp: ExperimentDir, spec: JobSpec, tasks: tp.Sequence[str]) -> list[tp.Any]:
    """What each task of a submission runs: a training run's, an evaluation share's or the evaluation's job."""
    from launch.jobs import EvalJob, TrainJob

    if spec.kind != EVAL_JOB:
        return [TrainJob(exp.root, task, spec.threads) for task in tasks]
    if spec.name == EVAL_JOB:
        return [EvalJob(exp.root, spec.threads)]
    return [EvalJob(exp.root, spec.threads, shard=(parse_address(t)[1], len(spec.tasks))) for t in tasks]


class Refused(RuntimeError):
    """``sbatch`` refused a job (a partition, account or GRES the site does not accept, ...).

    Attributes
    ----------
    job:
        The planned job that was refused (a method name or ``eval``).
    message:
        Slurm's own words (``sbatch: error: ...``), once.
    exp:
        The experiment directory when jobs had been submitted before (they are cancelled and the
        manifest records the refusal); None when the first job was refused: then nothing was
        started and no experiment directory is left.
    cancelled:
        Ids of the jobs submitted before the refusal, now cancelled.
    """

    def __init__(self, job: str, message: str) -> None:
        super().__init__(f"sbatch refused job {job}: {message}")
        self.job, self.message = job, message
        self.exp: ExperimentDir | None = None
        self.cancelled: list[str] = []


def submit_spec(
    exp: ExperimentDir, spec: JobSpec, profile: SlurmProfile, dep: str | None, tasks: tp.Sequence[str] | None = None
) -> dict[str, str]:
    """sbatch one planned submission; return ``{task: job id}`` (``{"lora[3]": "4242_3"}`` for an array).

    ``tasks``: a subset of ``spec.tasks`` (``cyberft resume``); several tasks are one submitit array
    (one ``sbatch`` call, ``--array=0-N%M``), one task is a plain job. Raises :class:`Refused` with
    Slurm's message when sbatch refuses it. submitit also prints sbatch's stderr as it fails; that
    copy is kept back so the message is shown once.
    """
    import io

    tasks = list(spec.tasks if tasks is None else tasks)
    fns = job_callables(exp, spec, tasks)
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stderr(echoed):
            ex = _executor(exp, spec, profile, dep)
            jobs = ex.submit_array(fns) if len(fns) > 1 else [ex.submit(fns[0])]
    except Exception as exc:  # submitit's FailedJobError holds sbatch's stderr; anything else: its text
        message = " ".join(str(exc).split()) or " ".join(echoed.getvalue().split()) or type(exc).__name__
        raise Refused(spec.name, message) from None
    return {task: job.job_id for task, job in zip(tasks, jobs)}


def submission_id(ids: tp.Mapping[str, str]) -> str:
    """The id a dependency names for a submission's jobs: the array's (``4242`` for ``4242_0``...), or the job's."""
    return slurm.array_ids(ids.values())[0]


@dataclass
class Submitted:
    """What :func:`submit` did."""

    exp: ExperimentDir
    job_ids: dict[str, str]
    """Every job: manifest name (a method, a cell, ``eval``) -> Slurm job id (``4242_3`` for an array task)."""
    submissions: dict[str, list[str]] = field(default_factory=dict)
    """Each sbatch call: submission name (a method, ``eval``) -> the job ids it made, in task order."""


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def submit(
    cfg: ExperimentConfig,
    profile: SlurmProfile,
    config_path: str,
    overrides: tp.Sequence[str],
    progress: bool = False,
    split: tp.Any = None,
    forecast: dict | None = None,
) -> Submitted:
    """Create the experiment, submit every job, record the ids; returns without waiting.

    ``cfg`` must have passed :func:`check` (``split`` is its data split; read again when not
    given; ``forecast`` its saved cost forecast, written into the experiment). The data is written
    first, in a temporary directory: a problem there raises
    :class:`~launch.questions.data.DataError` before the experiment directory exists or any job is
    submitted. When ``sbatch`` refuses a job, :class:`Refused` is raised: if it was the first,
    the experiment directory (and any output directory made for it) is removed, so nothing that
    looks like an experiment is left; otherwise the jobs already submitted are cancelled and the
    manifest records the refusal (``status`` and ``resume`` report it).
    """
    from launch.questions.data import prepare_splits
    from launch.store import experiment

    made = _missing_dirs(Path(cfg.output_dir))
    # The data first, outside the output directory: a data problem must leave nothing behind.
    staging = Path(tempfile.mkdtemp(prefix="cyberft-data-"))
    try:
        staged = ExperimentDir(staging).data
        prepare_splits(cfg.data, staged.root, progress=progress, split=split)
        exp = experiment.create(cfg, config_path, overrides, executor="slurm")
        shutil.move(str(staged.root), str(exp.data.root))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    code_dir = snapshot_code(exp)
    _freeze_deepspeed(cfg, code_dir)
    exp.write_config(cfg)
    exp.write_profile(profile)
    if forecast is not None:
        exp.write_forecast(forecast)
    exp.update_manifest(
        config_hash=config_hash(cfg),
        profile=profile.name,
        code_snapshot=str(code_dir),
        submitted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    try:
        return _submit_all(cfg, profile, exp)
    except Refused as exc:
        if exc.cancelled:
            exp.update_manifest(submit_error=str(exc), cancelled=exc.cancelled)
            exc.exp = exp
        else:  # nothing was started: ours, just made, and referenced by no job
            shutil.rmtree(exp.root, ignore_errors=True)
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise


def _submit_all(cfg: ExperimentConfig, profile: SlurmProfile, exp: ExperimentDir) -> Submitted:
    """sbatch every planned submission in order (one per method, one per evaluation step), recording
    each submission's job ids in the manifest as soon as they are known."""
    done = Submitted(exp, {})
    ids: dict[str, str] = {}  # submission -> the id its dependents name
    for spec in plan(cfg, profile, exp):
        try:
            jobs = submit_spec(exp, spec, profile, dependency(spec, ids))
        except Refused as exc:
            if ids:
                with contextlib.suppress(slurm.SlurmError):
                    slurm.scancel(list(ids.values()))
            exc.cancelled = list(ids.values())
            raise
        ids[spec.name] = submission_id(jobs)
        done.job_ids.update(jobs)
        done.submissions[spec.name] = list(jobs.values())
        records = {
            task: JobRecord(job_id, "slurm", spec.kind, spec.depends_on, spec.world_size)
            for task, job_id in jobs.items()
        }
        exp.record_jobs(records)  # after each sbatch: a crash never loses an id
    return done
