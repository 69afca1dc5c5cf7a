"""Multi-task training: the target task (the experiment's own training split) with auxiliary tasks, mixed by weight.

Run (normally the launcher does this)::

    python -m train.multi_task EXP_DIR METHOD

Reads top to bottom: config, setup, data (target + auxiliary tasks, mixed), model, train, save.
The auxiliary tasks are multiple-choice datasets prepared into ``EXP/data`` at submission (eval
questions dropped, :func:`launch.questions.data.plan_aux`), encoded with the same prompt template. The mixture is
built once from the seed (:func:`mixture`), so the loop shuffles, resumes and batches it as any training
set; it reports the loss of each task separately (``train/loss/<task>`` in W&B, ``task_losses`` in
``progress.json`` and ``metrics.json``). What trains is ``multi_task.adapt``: LoRA adapters (the default)
saved to ``adapter/``, or every weight (as full SFT) saved to ``model/``. The evaluation is on the
target task only: the experiment's eval split, like every other method.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys

from launch.questions.data import Question, load_jsonl_questions, plan_aux
from launch.spec.config import ExperimentConfig, MultiTaskSettings
from launch.store.expdir import ExperimentDir
from launch.store.fsio import atomic_write_jsonl
from train import batches, runtime
from train.full_sft import full_model
from train.lora import lora_model, save_lora_adapter
from train.run import TrainingRun, save_consolidated

TARGET = "target"
"""The experiment's own task among the per-task losses (task 0)."""


def aux_questions(cfg: ExperimentConfig, run: TrainingRun) -> dict[str, list[Question]]:
    """Each auxiliary task's prepared questions; prepared here first when the experiment lacks them.

    Only a job started without the launcher lacks them; the main process then prepares them
    (the others wait), as :func:`train.batches.load_split` does for the split.
    """
    method = run.method
    files = {task.name: run.exp.data.aux_file(method.name, task.name) for task in method.multi_task.tasks}
    with run.accelerator.main_process_first():
        if not all(path.exists() for path in files.values()):
            eval_ = batches.load_split(cfg, run.exp, "eval")
            for name, aux in plan_aux([method], eval_)[method.name].items():
                atomic_write_jsonl(files[name], (q.to_record() for q in aux.questions))
    return {name: load_jsonl_questions(path) for name, path in files.items()}


def mixture(
    target: list[batches.Example], aux: dict[str, list[batches.Example]], settings: MultiTaskSettings, seed: int
) -> tuple[list[batches.Example], dict[str, int]]:
    """The training set: every target example (task 0), and from auxiliary task ``i`` (task ``i``, in the
    order of ``settings.tasks``) ``round(n_target x weight / target_weight)`` examples (at least 1), drawn
    from seeded shuffles of the task, one after the other when it has fewer; and the count of each."""
    rng = random.Random(f"multi_task:{seed}")
    mixed, counts = list(target), {TARGET: len(target)}
    for i, task in enumerate(settings.tasks, start=1):
        want = max(1, round(len(target) * task.weight / settings.target_weight))
        drawn: list[batches.Example] = []
        while len(drawn) < want:
            order = list(aux[task.name])
            rng.shuffle(order)
            drawn += order
        mixed += [dataclasses.replace(e, task=i) for e in drawn[:want]]
        counts[task.name] = want
    return mixed, counts


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Train method ``method_name`` on the target and auxiliary tasks together; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="multi_task", threads=threads) as run:
        cfg = run.cfg  # a sweep cell's view of the config: its seed and its grid point
        settings = run.method.multi_task

        # --- data: the target split and each auxiliary task, in one seeded mixture
        tokenizer, target = run.load_data()
        main_process = run.accelerator.is_main_process
        aux = {
            name: batches.encode_examples(tokenizer, questions, cfg.model.max_seq_len, main_process)
            for name, questions in aux_questions(cfg, run).items()
        }
        examples, run.task_examples = mixture(target, aux, settings, cfg.seed)

        # --- model: what multi_task.adapt trains
        full = run.method.adapts == "full_sft"
        model = full_model(cfg, run.method) if full else lora_model(cfg, run.method)

        # --- train: one loss per task besides the total
        result = run.train(model, examples, tokenizer, tasks=[TARGET, *(t.name for t in settings.tasks)])

        # --- save: as full SFT or LoRA saves
        if full:
            dtype = runtime.resolve_dtype(cfg.model.dtype)
            save_consolidated(run.accelerator, result.model, tokenizer, run.paths.model_dir, dtype=dtype)
        else:
            save_lora_adapter(run.accelerator, model, tokenizer, run.paths.adapter_dir)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
