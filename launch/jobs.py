"""The job objects submitit runs, the same locally and on Slurm.

They are plain, picklable module-level callables holding only the experiment
directory and a name: the compute node reads everything else (the resolved
config, the prepared data) from shared storage. No secret is ever stored here:
tokens are read from the environment on the compute node.
"""

from __future__ import annotations

import importlib
import os
import typing as tp

from launch.site.gpus import check_gpu_binding, cuda_hidden
from launch.spec import sweep
from launch.store.expdir import ExperimentDir

ENTRYPOINTS = {
    "full_sft": "train.full_sft",
    "lora": "train.lora",
    "qlora": "train.qlora",
    "few_shot": "train.few_shot",
    "prompt_tuning": "train.prompt_tuning",
    "feature_head": "train.feature_head",
    "multi_task": "train.multi_task",
    "ia3": "train.ia3",
}
"""The training entrypoint of each method kind (``launch.spec.config.METHOD_KINDS``): the module ``train.<kind>``,
whose ``main(cfg, method_name, exp_dir, threads)`` runs one method's job."""


def _compute_env(threads: int | None) -> None:
    """Environment for the compute side, set before torch is imported."""
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Only where CUDA is off: DeepSpeed on its CPU accelerator while torch sees a GPU would
    # put the two on different devices. On CPU it also silences DeepSpeed's accelerator probe.
    if cuda_hidden():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


MASTER_PORTS = range(20000, 32000)
"""Rendezvous ports: below Linux's ephemeral range (32768-60999 by default), where an outgoing
connection of any process on the master node could already hold the port (EADDRINUSE)."""


def master_port(job_id: str) -> int:
    """The rendezvous port of a job: from its id, so every rank (and every requeued attempt) agrees
    without talking, and two jobs sharing a node rarely collide (one of :data:`MASTER_PORTS`)."""
    digits = "".join(ch for ch in job_id if ch.isdigit()) or "0"
    return MASTER_PORTS.start + int(digits) % len(MASTER_PORTS)


def resolvable_address(host: str) -> str:
    """``host`` if it resolves here, else its ``NodeAddr`` from ``scontrol`` (node names need not be in DNS)."""
    import re
    import socket
    import subprocess

    try:
        socket.gethostbyname(host)
        return host
    except OSError:
        pass
    out = subprocess.run(["scontrol", "show", "node", host], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"NodeAddr=(\S+)", out)
    if not match:
        raise RuntimeError(f"master node {host!r} does not resolve and scontrol shows no NodeAddr for it")
    return match.group(1)


DISTRIBUTED_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""torch's env:// rendezvous variables."""


def export_distributed_env() -> None:
    """Export torch's env:// rendezvous variables for this Slurm task (one task per GPU).

    The first node of the allocation is the master, by address (``MASTER_ADDR``); the port
    comes from the job id. Values exported in the submitting shell (sbatch passes its
    environment on) are overwritten, and removed for a single-task job: they belong to another
    job, and a lone process that found ``RANK``/``WORLD_SIZE`` would wait for ranks that never come.
    Then every rank checks that it sees all the GPUs of its node (:func:`launch.site.gpus.check_gpu_binding`).
    """
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        drop_distributed_env()
        return
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment()
    env.master_addr = resolvable_address(env.master_addr)
    env.master_port = master_port(os.environ.get("SLURM_JOB_ID", "0"))
    # Every rank sees all of the node's GPUs and picks cuda:LOCAL_RANK, so NCCL can use peer access.
    env.export(set_cuda_visible_devices=False, overwrite=True)
    check_gpu_binding()


def drop_distributed_env() -> None:
    """Remove rendezvous variables a single-process job inherited from the shell that started it."""
    for key in DISTRIBUTED_VARS:
        os.environ.pop(key, None)


class TrainJob:
    """Train one method of an experiment, or one cell of its sweep.

    Parameters
    ----------
    exp_dir:
        The experiment directory (holds ``config.yaml``).
    method:
        The training run's address: the method's name (``lora``), or a cell of a sweep (``lora[3]``).
        The job finds its cell's seed and settings from it (:func:`launch.spec.sweep.locate`), never from
        ``SLURM_ARRAY_TASK_ID``: ``cyberft resume`` sends a subset of a method's cells as a new
        array, whose task ids are not the cells' indexes.
    threads:
        CPU threads for torch (None: torch's default).
    """

    def __init__(self, exp_dir: str | os.PathLike, method: str, threads: int | None = None) -> None:
        self.exp_dir = str(exp_dir)
        self.method = method
        self.threads = threads

    def __call__(self) -> dict:
        _compute_env(self.threads)
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            export_distributed_env()
        else:  # the local runner: one process per method
            drop_distributed_env()
        cfg, cell = sweep.locate(ExperimentDir(self.exp_dir).load_config(), self.method)
        module = importlib.import_module(ENTRYPOINTS[cell.config.kind])
        # The cell's view of the config (its seed, its grid point) and its address: any entrypoint
        # trains a cell as it trains a method.
        return module.main(cfg, cell.id, self.exp_dir, threads=self.threads)

    def checkpoint(self, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        """submitit calls this on SIGUSR2 (time limit, preemption) before requeueing the job.

        The training loop has already written a complete checkpoint at the step where it
        saw the signal (:mod:`train.checkpoint`), so the same job, restarted, resumes
        from it: there is nothing else to carry over.
        """
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.exp_dir, self.method, self.threads))

    def __repr__(self) -> str:
        return f"TrainJob({self.exp_dir!r}, {self.method!r})"


class EvalJob:
    """Score the base model and every trained method (or cell), then write the report and log the comparison.

    Three steps, each on its own side of the contract: score (:mod:`train.evaluate`, compute),
    finalise (:mod:`launch.results.finalize`: sacct cost, report rows, statistics and files) and log
    (:func:`train.wandb_report.log_comparison`, the W&B comparison run and each cell's scores).

    Parameters
    ----------
    exp_dir:
        The experiment directory.
    threads:
        CPU threads for torch (None: torch's default).
    shard:
        ``(i, n)``: one task of an evaluation array, which scores its share of the models
        (every ``n``-th from the ``i``-th) and writes no report; None: the evaluation job itself,
        which scores whatever is not scored yet and writes the report.
    """

    def __init__(
        self, exp_dir: str | os.PathLike, threads: int | None = None, shard: tuple[int, int] | None = None
    ) -> None:
        self.exp_dir = str(exp_dir)
        self.threads = threads
        self.shard = shard

    def __call__(self) -> list[dict]:
        _compute_env(self.threads)
        from launch.results import finalize
        from train import evaluate, wandb_report

        exp = ExperimentDir(self.exp_dir)
        cfg = exp.load_config()
        scored = evaluate.main(cfg, exp.root, threads=self.threads, shard=self.shard)
        if self.shard is not None:
            return [r.to_dict() for r in scored.results.values()]
        done = finalize.main(
            cfg, exp, scored.results, n_eval=scored.n_questions, gpus=scored.gpus, threads=scored.threads
        )
        wandb_report.log_comparison(
            cfg.tracking, exp, done.rows, done.columns, done.paths["chart"], done.evaluation, done.analysis
        )
        return done.rows

    def checkpoint(self, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        """On SIGUSR2 (time limit, preemption) requeue the same job: it keeps every model and
        every chunk of questions already scored (``train.evaluate.score_in_chunks``)."""
        import submitit

        return submitit.helpers.DelayedSubmission(EvalJob(self.exp_dir, self.threads, self.shard))

    def __repr__(self) -> str:
        shard = f", shard={self.shard}" if self.shard else ""
        return f"EvalJob({self.exp_dir!r}{shard})"


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``python -m launch.jobs EXP_DIR [METHOD]``: one job in this process, as the launcher runs it.

    With ``METHOD`` (a method, or a cell ``lora[3]``) its training job, without it the evaluation
    job (score, report, log).
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 2):
        print(main.__doc__.splitlines()[0], file=sys.stderr)
        return 2
    job = TrainJob(args[0], args[1]) if len(args) == 2 else EvalJob(args[0])
    job()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
