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
:func:`launch.slurm.experiment_accounts`).
"""

from __future__ import annotations

import datetime as dt
import typing as tp
from dataclasses import dataclass, field

from launch import slurm, status
from launch.config import InputError
from launch.expdir import EVAL_JOB, ExperimentDir, JobRecord, parse_address


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


def resume(exp: ExperimentDir, plan: ResumePlan) -> dict[str, str]:
    """Carry out ``plan``; return ``{job name: new job id}``. The manifest is updated after each sbatch.

    Each method's cells to resubmit go as one submission (an array when there are several);
    the new evaluation job depends on those and on every training job still running.
    """
    from launch.submit import plan as plan_jobs
    from launch.submit import submission_id, submit_spec

    cfg = exp.load_config()
    profile = exp.load_profile()
    if profile is None:
        raise InputError(
            [f"experiment {str(exp.root)!r}: no profile.yaml -> was it submitted with `cyberft submit`?"], "arguments"
        )
    if plan.cancel_eval:
        slurm.scancel(plan.cancel_eval)
    jobs = exp.read_manifest().jobs
    specs = {s.name: s for s in plan_jobs(cfg, profile, exp)}
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
    for method, names in by_method.items():
        sent = submit_spec(exp, specs[method], profile, None, tasks=names)
        record(sent)
        after.append(submission_id(sent))
    if plan.eval_needed:
        after += slurm.array_ids(jobs[n].job_id for n in plan.waiting_on)
        record(submit_spec(exp, specs[EVAL_JOB], profile, "afterany:" + ":".join(after) if after else None))
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entry = {"at": at, "jobs": new, **({"cancelled_eval": plan.cancel_eval} if plan.cancel_eval else {})}
    exp.update_manifest(resumed=[*exp.read_manifest().resumed, entry])
    return new
