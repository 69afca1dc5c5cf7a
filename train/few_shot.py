"""Few-shot prompting: no training; ``k`` solved training questions before every eval question.

Run (normally the launcher does this)::

    python -m train.few_shot EXP_DIR METHOD

The method's job trains nothing and loads no model: it draws the examples (seeded, balanced over
the answer letters, never a question whose normalised text is in the eval split), checks that every
eval question's prompt with them fits ``model.max_seq_len`` (a prompt cut from the left would lose
examples and no longer share the prefix), and writes them, in order, to
``EXP/methods/<name>/shots.jsonl`` with ``metrics.json``: seconds on a CPU. The evaluation job then
scores the base model with these examples before each question (as chat turns, see
:mod:`launch.questions.prompting`); they are the same for every question, so the evaluator computes their keys
and values once per model (its shared-prefix cache). That scoring is the method's cost in the report:
its row's GPU-hours (CPU-hours) are its own load and scoring time in the evaluation job, added to
this job's (``cost_source`` ends in ``+ eval scoring``).
"""

from __future__ import annotations

import os
import random
import sys

from launch.questions import prompting
from launch.questions.data import Question, normalize_question
from launch.spec.config import LETTERS, ExperimentConfig
from launch.store.expdir import ExperimentDir
from launch.store.fsio import atomic_write_jsonl
from train import batches, loop
from train.run import TrainingRun


def select_shots(train: list[Question], eval_: list[Question], k: int, seed: int) -> list[Question]:
    """``k`` training questions, none in ``eval_``, each letter ``k / 4`` times (+-1 while there are enough).

    Letters take turns in a seeded order (so which letters get one more is seeded too), each drawing
    its next question from a seeded shuffle of its own; the chosen ones are shuffled at the end, so the
    last example's letter (the one nearest the question) is not always the same.
    """
    in_eval = {normalize_question(q.question) for q in eval_}
    pool = [q for q in train if normalize_question(q.question) not in in_eval]
    if k > len(pool):
        raise ValueError(f"few_shot.k: {k}, but only {len(pool)} training question(s) are not in the eval split")
    rng = random.Random(f"few_shot:{seed}")
    by_letter = {letter: [q for q in pool if q.solution == letter] for letter in LETTERS}
    for questions in by_letter.values():
        rng.shuffle(questions)
    turns = list(LETTERS)
    rng.shuffle(turns)
    chosen: list[Question] = []
    while len(chosen) < k:
        for letter in turns:
            if by_letter[letter] and len(chosen) < k:
                chosen.append(by_letter[letter].pop())
    rng.shuffle(chosen)
    return chosen


def longest_prompt(tokenizer: object, shots: list[Question], questions: list[Question]) -> tuple[int, int]:
    """(tokens, index) of the longest few-shot prompt among ``questions``."""
    lengths = [len(prompting.prompt_ids(tokenizer, q, shots)) for q in questions]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    return lengths[longest], longest


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Draw and check the examples of method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator (for the data split's main-process-first), W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="few_shot", threads=threads) as run:
        cfg = run.cfg  # a sweep cell's view of the config: its seed and its grid point
        settings = run.method.few_shot
        seed = cfg.seed if settings.seed is None else settings.seed

        # --- data: the tokenizer only, no model
        tokenizer = batches.load_tokenizer(cfg.model.name_or_path)
        train = batches.load_split(cfg, run.exp, "train", run.accelerator)
        eval_ = batches.load_split(cfg, run.exp, "eval", run.accelerator)
        run.mark("load")

        # --- the examples, and every prompt with them within max_seq_len
        shots = select_shots(train, eval_, settings.k, seed)
        room = prompting.scoring_room(prompting.AnswerCodec(tokenizer), cfg.model.max_seq_len)
        tokens, index = longest_prompt(tokenizer, shots, eval_)
        if tokens > room:
            raise ValueError(
                f"methods.{method_name}.few_shot.k: {settings.k} examples make eval question {index}'s prompt "
                f"{tokens} tokens, over the {room} that model.max_seq_len {cfg.model.max_seq_len} leaves -> lower "
                f"k, or raise model.max_seq_len to at least {cfg.model.max_seq_len + tokens - room}"
            )
        run.record(loop.TrainResult(), None)

        # --- save: the examples, in the order they are shown
        atomic_write_jsonl(run.paths.shots_file, (q.to_record() for q in shots))
        letters = "".join(q.solution for q in shots)
        run.tracker.summary({"shots": len(shots), "shot_letters": letters, "longest_prompt_tokens": tokens})
        print(f"[few_shot] {len(shots)} examples (letters {letters}); longest prompt {tokens} tokens", flush=True)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
