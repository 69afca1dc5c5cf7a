"""``cyberft resume EXP``: send again the jobs of a submitted experiment that ended unfinished.

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
from dataclasses import dataclass, field

from launch import slurm, status
from launch.config import InputError
from launch.expdir import ExperimentDir


@dataclass
class ResumePlan:
    """What :func:`resume` would do.

    Attributes
    ----------
    resubmit:
        Training methods to submit again (ended, and not completed).
    waiting_on:
        Training methods still pending or running: the new evaluation job waits for them too.
    cancel_eval:
        The evaluation job to cancel first (pending: it would score without the resumed methods).
    eval_needed:
        Whether a new evaluation job is submitted.
    """

    resubmit: list[str] = field(default_factory=list)
    waiting_on: list[str] = field(default_factory=list)
    cancel_eval: str | None = None
    eval_needed: bool = False

    def describe(self) -> str:
        if not self.resubmit and not self.eval_needed:
            return "nothing to resume: every job completed"
        lines = [f"  resubmit {name} (from its newest complete checkpoint)" for name in self.resubmit]
        if self.cancel_eval:
            lines.append(f"  cancel the pending evaluation job {self.cancel_eval}")
        after = self.resubmit + self.waiting_on
        lines.append("  submit a new evaluation job" + (f" after: {', '.join(after)}" if after else ""))
        return "\n".join(lines)


def plan_resume(exp: ExperimentDir) -> ResumePlan:
    """Decide from Slurm's and the jobs' own state; raise :class:`InputError` when resuming now is wrong."""
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
    plan = ResumePlan()
    eval_ok = True
    for st in status.job_statuses(exp):
        if st.name == "eval":
            if st.state == "PENDING":
                plan.cancel_eval = st.job_id
            elif not st.ended:
                raise InputError(
                    [
                        f"eval: job {st.job_id} is {st.state} -> wait until it ends "
                        f"(`cyberft status {exp_dir} --wait`), then resume"
                    ],
                    "arguments",
                )
            eval_ok = st.ok
        elif not st.ended:
            plan.waiting_on.append(st.name)
        elif not st.ok:
            plan.resubmit.append(st.name)
    plan.eval_needed = bool(plan.resubmit) or not eval_ok
    if not plan.resubmit and plan.cancel_eval:  # the pending evaluation already waits for the rest
        plan.cancel_eval, plan.eval_needed = None, False
    return plan


def resume(exp: ExperimentDir, plan: ResumePlan) -> dict[str, str]:
    """Carry out ``plan``; return ``{job name: new job id}``. The manifest is updated after each sbatch."""
    from launch.submit import plan as plan_jobs
    from launch.submit import submit_spec

    cfg = exp.load_config()
    profile = exp.load_profile()
    if profile is None:
        raise InputError(
            [f"experiment {str(exp.root)!r}: no profile.yaml -> was it submitted with `cyberft submit`?"], "arguments"
        )
    if plan.cancel_eval:
        slurm.scancel([plan.cancel_eval])
    jobs = exp.read_manifest().jobs
    specs = {s.name: s for s in plan_jobs(cfg, profile, exp)}
    new: dict[str, str] = {}

    def record(name: str, job_id: str) -> None:
        jobs[name] = jobs[name].resubmitted(job_id)
        exp.record_job(name, jobs[name])  # after each: a crash never loses an id

    for name in plan.resubmit:
        new[name] = submit_spec(exp, specs[name], profile, None)
        record(name, new[name])
    if plan.eval_needed:
        after = [jobs[n].job_id for n in plan.resubmit + plan.waiting_on]
        new["eval"] = submit_spec(exp, specs["eval"], profile, "afterany:" + ":".join(after) if after else None)
        record("eval", new["eval"])
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entry = {"at": at, "jobs": new, **({"cancelled_eval": plan.cancel_eval} if plan.cancel_eval else {})}
    exp.update_manifest(resumed=[*exp.read_manifest().resumed, entry])
    return new
