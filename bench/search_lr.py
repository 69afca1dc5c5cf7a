"""The learning-rate search behind the real studies' configs, on the training split only.

The study's held-out questions are never looked at: the study's own split is prepared first, and
the search splits *its training part* again (seed 1) into 120 questions to train on and 80 to
validate on. For each point of the grid, one ``cyberft run`` of the searched methods alone (the
config's other methods and its sweep are left out) trains each for one epoch of the 120 (15 steps
of 8, the study's batch and warm-up) and scores them on the 80. Every method is ranked by the mean
log-probability of the right letter among the four (a continuous score: 80 questions give accuracy
intervals of +-10 points, too wide to rank by), accuracy is reported beside it.

    python bench/search_lr.py [--config configs/smollm2-cybermetric.yaml] [--grid qwen05]
        [--data CyberMetric-500-v1.json] [--out bench/results/search_smollm2.json]

SmolLM2 (the default): about 15-20 minutes on 2 CPU cores (3 runs x 3 methods, 2 at a time, plus the
scoring). ``--config configs/qwen05-cybermetric.yaml --grid qwen05 --out
bench/results/search_qwen05.json``: the 0.5B study's grid (four methods).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.store.expdir import ExperimentDir  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "cybermetric" / "CyberMetric-500-v1.json"
GRIDS = {  # one run per column: the methods at their i-th learning rate
    "smollm2": {
        "full_sft": [1e-5, 3e-5, 1e-4],
        "lora": [1e-4, 3e-4, 1e-3],
        "qlora": [1e-4, 3e-4, 1e-3],
    },
    # Qwen2.5-0.5B-Instruct: published LoRA fine-tunes of 0.5B models use 1e-4..2e-4, full SFT 1e-5;
    # one step either side. Prompt tuning's soft prompt needs far larger steps (peft's examples: 3e-2).
    "qwen05": {
        "full_sft": [3e-6, 1e-5, 3e-5],
        "lora": [5e-5, 2e-4, 6e-4],
        "qlora": [5e-5, 2e-4, 6e-4],
        "prompt_tuning": [3e-3, 3e-2, 3e-1],
    },
}
CONFIG = REPO / "configs" / "smollm2-cybermetric.yaml"
GRID = GRIDS["smollm2"]
N_TRAIN, N_VAL = 120, 80


def study_train_split(data: Path, work: Path) -> Path:
    """The study's training questions (its held-out split removed), as the study prepares them."""
    from launch.questions.data import prepare_splits
    from launch.spec.config import load_config

    cfg = load_config(CONFIG, [f"data.train.path={data}", f"output_dir={work}"])
    prepared = prepare_splits(cfg.data, work / "study-data", progress=False)
    print(f"study split: {prepared.n_train} train, {prepared.n_eval} held out (not used here)", flush=True)
    return prepared.train_path


def score(predictions: Path) -> dict:
    """Accuracy and mean log-probability of the gold letter (softmax over the four letters)."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    gold = []
    for r in rows:
        lp = r["logprobs"]
        norm = math.log(sum(math.exp(v) for v in lp.values()))
        gold.append(lp[r["gold"]] - norm)
    n = len(rows)
    return {"n": n, "accuracy": sum(r["correct"] for r in rows) / n, "gold_logprob": sum(gold) / n}


def searched_config(work: Path) -> Path:
    """``CONFIG`` with only the searched methods and no sweep (one run of each per point)."""
    import yaml

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["methods"] = [m for m in raw["methods"] if m["name"] in GRID]
    raw.pop("sweep", None)
    out = work / "search.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def run_point(i: int, train_jsonl: Path, work: Path) -> dict:
    """One ``cyberft run`` with every method at its i-th learning rate; their validation scores."""
    out = work / f"point{i}"
    overrides = [
        f"data.train.path={train_jsonl}",
        f"data.eval_fraction={N_VAL / (N_TRAIN + N_VAL)}",
        "data.seed=1",
        f"data.max_train={N_TRAIN}",
        f"data.max_eval={N_VAL}",
        f"output_dir={out}",
        "tracking.backend=none",
        f"eval.include_base={'true' if i == 0 else 'false'}",
    ] + [f"methods.{m}.learning_rate={lrs[i]}" for m, lrs in GRID.items()]
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "launch.cli", "run", str(searched_config(work)), "--no-progress", *overrides],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    scored = ExperimentDir(next(out.iterdir())).eval
    results = {
        name: score(scored.predictions_file(name))
        for name in ["base", *GRID]
        if scored.predictions_file(name).is_file()
    }
    print(
        f"point {i} ({time.perf_counter() - t:.0f} s): "
        + ", ".join(
            f"{m} lr {GRID[m][i] if m in GRID else '-'}: acc {r['accuracy']:.3f} gold logp {r['gold_logprob']:.3f}"
            for m, r in results.items()
        ),
        flush=True,
    )
    return {
        "learning_rates": {m: lrs[i] for m, lrs in GRID.items()},
        "scores": results,
        "seconds": time.perf_counter() - t,
    }


def main() -> int:
    global CONFIG, GRID
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "cybermetric" / "CyberMetric-500-v1.json")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search_smollm2.json")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the study's config (its split is kept out)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="smollm2", help="learning rates per method")
    args = parser.parse_args()
    CONFIG, GRID = args.config.resolve(), GRIDS[args.grid]
    data = args.data if args.data.is_file() else SHARED
    with tempfile.TemporaryDirectory(prefix="cyberft-search-") as tmp:
        work = Path(tmp)
        train_jsonl = study_train_split(data, work)
        points = [run_point(i, train_jsonl, work) for i in range(len(GRID["lora"]))]
    best = {m: max(points, key=lambda p: p["scores"][m]["gold_logprob"])["learning_rates"][m] for m in GRID}
    from launch.store.fsio import atomic_write_json

    atomic_write_json(
        args.out,
        {
            "data": str(data),
            "n_train": N_TRAIN,
            "n_val": N_VAL,
            "config": str(CONFIG.relative_to(REPO)) if CONFIG.is_relative_to(REPO) else str(CONFIG),
            "grid": GRID,
            "points": points,
            "best_learning_rate": best,
        },
    )
    print(f"best learning rate by validation gold log-probability: {best}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
