"""``cyberft resume EXP [ADDRESS ...]``: send again the jobs of a submitted experiment that ended unfinished.

Per cell of a sweep, as per method: the unfinished cells of a method are sent again as one new
array (a plain job for one cell), each task running its own cell (task ids of the new array are
not the cells' indexes; each job finds its cell from its address). ``ADDRESS`` (a method or a
cell, ``lora[3]``) limits the resubmission to those; the others are left as they are.

A training job that ran out of requeues (``resources.max_timeouts``), was cancelled, hit a node
failure Slurm did not requeue, or failed on a transient error is submitted again as the same
method: it starts from its newest complete checkpoint (``train.loop`` looks there on every
start), logs to the same W&B run, and runs the code frozen in ``EXP/code`` with the resolved
``config.yaml`` and ``profile.yaml`` of the experiment, never the checkout's current ones. A new
evaluation job follows with ``afterany`` on every training job that has not ended; it scores
only the models not scored yet (their results are kept), then rewrites the report.

Nothing is lost: the manifest keeps each method's earlier job ids (``previous_job_ids``), and the
report's sacct cost adds the GPU-hours of every job a method ever ran as (see
:func:`launch.run.slurm.experiment_accounts`).

``key=value`` arguments change what a job may ask of the cluster before it is sent again (a job
that timed out with no requeues left gets a longer ``time_min``): only the fields of
:data:`RESUMABLE` may change, since any other would make the resumed jobs a different experiment
from the checkpoints and scores already made (:func:`plan_changes`). The changes are written into
the experiment's ``config.yaml``/``profile.yaml`` (atomically, just before the first sbatch) and
recorded, old and new value, in the manifest's ``resumed`` entry. When sbatch refuses the first job
(a partition the site does not have: no check before sbatch can know), both files are put back and
nothing is recorded; when it refuses a later one, the jobs sent and the changes they run with are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch.run import slurm, status
from launch.spec.config import InputError
from launch.spec.redact import short
from launch.spec.schema import key_label
from launch.store.expdir import EVAL_JOB, ExperimentDir, JobRecord, parse_address
from launch.store.fsio import atomic_write_bytes

if tp.TYPE_CHECKING:  # pragma: no cover
    from launch.site.profiles import SlurmProfile
    from launch.spec.config import ExperimentConfig

_LIMITS = ("time_min", "max_timeouts", "mem_gb_per_gpu", "cpus_per_gpu")
_SITE = ("partition", "account", "qos", "constraint", "max_time_min", "cpus_per_gpu", "mem_gb_per_gpu")
RESUMABLE = (
    *(f"methods.<name>.resources.{f}" for f in _LIMITS),
    *(f"eval.resources.{f}" for f in _LIMITS),
    "eval.batch_size",
    "eval.models_per_job",
    *(f"profile.{f}" for f in _SITE),
)
"""What ``cyberft resume EXP key=value`` may change: what the jobs ask of the cluster (time, requeues,
memory, CPUs, where they run and under which account) and how the evaluation batches its work. Nothing
that trains or scores differently: the resumed jobs continue checkpoints made with the old values."""
RESUMABLE_TEXT = (
    f"methods.<name>.resources.{{{','.join(_LIMITS)}}}, eval.resources.{{same}}, eval.batch_size, "
    f"eval.models_per_job, profile.{{{','.join(_SITE)}}}"
)

_WHY_NOT = {
    "methods": "the method's checkpoints were made with the old value: its resumed run would train differently",
    "model": "every checkpoint and score was made from the old model",
    "data": "the split is frozen in EXP/data: the models were trained and are scored on it",
    "eval": "the models already scored were scored with the old value: the rows would not compare",
    "profile": "the cost table would mix two kinds of GPU, or the jobs would have fewer GPUs than their checkpoints",
    "sweep": "the cells and their seeds are the experiment",
}
_WORLD = ("nodes", "gpus_per_node")


@dataclass
class ResumePlan:
    """What :func:`resume` would do.

    Attributes
    ----------
    resubmit:
        Training jobs to submit again (ended, and not completed): methods, or cells (``lora[3]``).
    waiting_on:
        Training jobs still pending or running: the new evaluation job waits for them too.
    cancel_eval:
        The evaluation jobs to cancel first (pending: they would score without the resumed cells).
    eval_needed:
        Whether a new evaluation job is submitted.
    """

    resubmit: list[str] = field(default_factory=list)
    waiting_on: list[str] = field(default_factory=list)
    cancel_eval: list[str] = field(default_factory=list)
    eval_needed: bool = False

    def describe(self) -> str:
        if not self.resubmit and not self.eval_needed:
            return "nothing to resume: every job completed"
        lines = [f"  resubmit {name} (from its newest complete checkpoint)" for name in self.resubmit]
        if self.cancel_eval:
            lines.append(f"  cancel the pending evaluation job(s) {', '.join(self.cancel_eval)}")
        after = self.resubmit + self.waiting_on
        shown = ", ".join(after[:12]) + (f" and {len(after) - 12} more" if len(after) > 12 else "")
        lines.append("  submit a new evaluation job" + (f" after: {shown}" if after else ""))
        return "\n".join(lines)


def plan_resume(exp: ExperimentDir, addresses: tp.Sequence[str] = ()) -> ResumePlan:
    """Decide from Slurm's and the jobs' own state; raise :class:`InputError` when resuming now is wrong.

    ``addresses`` (methods or cells) limits what is resubmitted; empty: every unfinished training job.
    """
    exp_dir = exp.root
    if not exp.read_manifest().on_slurm:
        raise InputError(
            [
                f"experiment {str(exp_dir)!r}: ran locally -> `cyberft run` the config again; "
                "`cyberft resume` resubmits Slurm jobs"
            ],
            "arguments",
        )
    refused = status.refusal(exp)
    if refused:
        raise InputError([f"experiment {str(exp_dir)!r}: {refused}"], "arguments")
    try:
        chosen = set(status.select_jobs(exp, addresses)) if addresses else None
    except KeyError as exc:
        raise InputError([str(exc.args[0])], "arguments") from None
    plan = ResumePlan()
    eval_ok = True
    for st in status.job_statuses(exp):
        if parse_address(st.name)[0] == EVAL_JOB:
            if st.state == "PENDING":
                plan.cancel_eval.append(st.job_id)
            elif not st.ended:
                raise InputError(
                    [
                        f"{st.name}: job {st.job_id} is {st.state} -> wait until it ends "
                        f"(`cyberft status {exp_dir} --wait`), then resume"
                    ],
                    "arguments",
                )
            if st.name == EVAL_JOB:
                eval_ok = st.ok
        elif not st.ended:
            plan.waiting_on.append(st.name)
        elif not st.ok and (chosen is None or st.name in chosen):
            plan.resubmit.append(st.name)
    plan.eval_needed = bool(plan.resubmit) or not eval_ok
    if not plan.resubmit and plan.cancel_eval:  # the pending evaluation already waits for the rest
        plan.cancel_eval, plan.eval_needed = [], False
    return plan


def resume(exp: ExperimentDir, plan: ResumePlan, changes: Changes | None = None) -> dict[str, str]:
    """Carry out ``plan``; return ``{job name: new job id}``. The manifest is updated after each sbatch.

    Each method's cells to resubmit go as one submission (an array when there are several);
    the new evaluation job depends on those and on every training job still running. ``changes``
    (:func:`plan_changes`) are written into the experiment first, so every job sent from now on,
    and every requeue, runs with them.
    """
    from launch.run.submit import Refused, submission_id, submit_spec
    from launch.run.submit import plan as plan_jobs

    cfg = changes.config if changes else exp.load_config()
    profile = changes.profile if changes else exp.load_profile()
    if profile is None:
        raise InputError(
            [f"experiment {str(exp.root)!r}: no profile.yaml -> was it submitted with `cyberft submit`?"], "arguments"
        )
    frozen = {}
    if changes and changes.changed:
        frozen = {p: (p.read_bytes(), p.stat()) for p in (exp.config_file, exp.profile_file) if p.is_file()}
        exp.write_config(cfg)  # atomically, each: the jobs read these, never the checkout's files
        exp.write_profile(profile)
    jobs = exp.read_manifest().jobs
    specs = {s.name: s for s in plan_jobs(cfg, profile, exp)}
    listed = set(os.listdir(exp.jobs_dir)) if exp.jobs_dir.is_dir() else set()
    new: dict[str, str] = {}

    def record(sent: dict[str, str]) -> None:
        for name, job_id in sent.items():
            jobs[name] = jobs[name].resubmitted(job_id) if name in jobs else JobRecord(job_id, "slurm", EVAL_JOB)
        exp.record_jobs({name: jobs[name] for name in sent})  # after each sbatch: a crash never loses an id
        new.update(sent)

    by_method: dict[str, list[str]] = {}
    for name in plan.resubmit:
        by_method.setdefault(parse_address(name)[0], []).append(name)
    after: list[str] = []
    cancelled: list[str] = []
    try:
        for method, names in by_method.items():
            sent = submit_spec(exp, specs[method], profile, None, tasks=names)
            record(sent)
            after.append(submission_id(sent))
        if plan.cancel_eval:  # once a resubmission went through: a refused one leaves the pending evaluation
            slurm.scancel(plan.cancel_eval)
            cancelled = plan.cancel_eval
        if plan.eval_needed:
            after += slurm.array_ids(jobs[n].job_id for n in plan.waiting_on)
            record(submit_spec(exp, specs[EVAL_JOB], profile, "afterany:" + ":".join(after) if after else None))
    except Refused as exc:
        _remove_leftovers(exp.jobs_dir, listed)
        fix = "-> check the values against `sinfo -s` and `sacctmgr show assoc user=$USER`, then resume"
        if not new:  # nothing was sent: the experiment is left exactly as it was
            for path, (data, st) in frozen.items():
                atomic_write_bytes(path, data)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            raise InputError(
                [f"sbatch refused job {exc.job}: {exc.message}; nothing was sent, the experiment is unchanged {fix}"],
                "arguments",
            ) from None
        _record_resumed(exp, new, cancelled, changes)  # the jobs sent run with the changes: the manifest says so
        sent_text = ", ".join(f"{n} ({i})" for n, i in new.items())
        raise slurm.SlurmError(
            f"sbatch refused job {exc.job}: {exc.message}; sent before it: {sent_text}, recorded in "
            f"{exp.manifest_file} {fix}"
        ) from None
    _record_resumed(exp, new, cancelled, changes)
    return new


def _remove_leftovers(folder: Path, listed: set[str]) -> None:
    """Remove what submitit left in the job folder for a submission sbatch refused: its script
    (``.submission_file_<uuid>.sh``) and pickle (``<uuid>.pkl``), plain files not ``listed`` before.
    A submission that went through leaves a symlink there and moves its pickle to ``<job id>/``."""
    for name in set(os.listdir(folder)) - listed if folder.is_dir() else ():
        path = folder / name
        leftover = (name.startswith(".submission_file_") and name.endswith(".sh")) or name.endswith(".pkl")
        if leftover and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def _record_resumed(exp: ExperimentDir, new: dict[str, str], cancelled: list[str], changes: Changes | None) -> None:
    """Add this resume to the manifest's ``resumed`` list: when, the jobs sent, those cancelled, what changed."""
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entry = {"at": at, "jobs": new, **({"cancelled_eval": cancelled} if cancelled else {})}
    if changes and changes.changed:
        entry["changed"] = {k: {"from": old, "to": new_} for k, (old, new_) in changes.changed.items()}
    exp.update_manifest(resumed=[*exp.read_manifest().resumed, entry])


# --------------------------------------------------------------------------- key=value changes


@dataclass
class Changes:
    """What :func:`plan_changes` found: the experiment's config and profile with the changes made,
    and ``changed``: each changed field, as ``{"methods.lora.resources.time_min": [30, 60]}``."""

    config: ExperimentConfig
    profile: SlurmProfile | None
    changed: dict[str, list] = field(default_factory=dict)

    def describe(self) -> str:
        return "\n".join(f"  change {k}: {_shown(old)} -> {_shown(new)}" for k, (old, new) in self.changed.items())


def _shown(value: tp.Any) -> str:
    """A value as the YAML files spell it (null, a number), a string quoted and shortened (never raw text)."""
    return "null" if value is None else short(value) if isinstance(value, str) else short(repr(value))[1:-1]


def plan_changes(exp: ExperimentDir, overrides: tp.Sequence[str]) -> Changes:
    """The experiment's frozen config and profile with ``overrides`` (``key=value``) applied.

    Raises
    ------
    InputError
        Every problem at once: a field not in :data:`RESUMABLE` (with why it cannot change and the fix),
        a value the schema refuses, or a limit the (changed) profile does not allow.
    """
    from launch.run.submit import resources_problems
    from launch.site.profiles import ProfileError, profile_from_dict
    from launch.spec import yamlio
    from launch.spec.config import apply_overrides, build_config, read_raw, to_dict

    raw_cfg = read_raw(exp.config_file)
    raw_profile, problem = None, None
    if exp.profile_file.is_file():
        raw_profile, problem = yamlio.read(exp.profile_file, "profile", "the experiment's profile.yaml")
    problems = [problem] if problem else []
    names = [m.get("name") for m in raw_cfg.get("methods") or [] if isinstance(m, dict)]
    for_cfg, for_profile, keys = [], [], []
    for item in overrides:
        key, _, value = item.partition("=")
        canonical, refusal = _resumable(key.strip(), names)
        if refusal:
            problems.append(refusal)
            continue
        keys.append(canonical)
        target = for_profile if canonical.startswith("profile.") else for_cfg
        target.append(f"{canonical.removeprefix('profile.')}={value}")
    if problems:
        raise InputError(problems, "arguments")
    frozen, _ = build_config(raw_cfg)  # the file as read above, not read again
    old_cfg, old_profile = to_dict(frozen), dict(raw_profile or {})
    cfg, problems = build_config(raw_cfg, for_cfg)
    profile = None
    if raw_profile is not None:
        try:
            profile = profile_from_dict(
                apply_overrides(dict(raw_profile), for_profile, problems), str(exp.profile_file)
            )
        except ProfileError as exc:
            problems += [f"profile.{p}" for p in exc.problems]
    if cfg is not None and profile is not None and not problems:
        problems += resources_problems(cfg, profile)
    if problems or cfg is None:
        raise InputError(problems, "arguments")
    new_cfg, new_profile = to_dict(cfg), dataclasses.asdict(profile) if profile else {}
    changed = {}
    for key in dict.fromkeys(keys):
        old = _lookup(old_profile if key.startswith("profile.") else old_cfg, key)
        new = _lookup(new_profile if key.startswith("profile.") else new_cfg, key)
        if old != new:
            changed[key] = [old, new]
    return Changes(cfg, profile, changed)


def _resumable(key: str, methods: list[str]) -> tuple[str, str | None]:
    """``key`` with a method index replaced by its name, and why it may not change (None when it may)."""
    parts = key.split(".")
    if parts[0] == "methods" and len(parts) > 1:
        part = parts[1]
        if part.isdigit() and int(part) < len(methods):
            parts[1] = str(methods[int(part)])
        elif part not in methods:
            return key, (
                f"{key_label(key)}: no method {short(part)} in this experiment -> one of {', '.join(map(str, methods))}"
            )
    canonical = ".".join(parts)
    generic = ".".join(["methods", "<name>", *parts[2:]]) if parts[0] == "methods" else canonical
    if generic in RESUMABLE:
        return canonical, None
    section = parts[0] if parts[0] in _WHY_NOT else ""
    why = _WHY_NOT.get(section, "it is not a field resume can change")
    if parts[-1] in _WORLD:
        why = "the checkpoints were saved by that many processes (the world size and the batch follow from it)"
    return canonical, (
        f"{key_label(key)}: cannot change on resume: {why} -> submit a new experiment with `cyberft submit CONFIG "
        f"{key_label(key)}=...`; resume may change {RESUMABLE_TEXT}"
    )


def _lookup(data: tp.Any, key: str) -> tp.Any:
    """The value at a canonical key (methods by name) of a config's or profile's plain data."""
    parts = key.split(".")
    if parts[0] == "profile":
        parts = parts[1:]
    node = data
    for i, part in enumerate(parts):
        if i == 1 and parts[0] == "methods":
            node = next((m for m in node if m.get("name") == part), None)
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node
