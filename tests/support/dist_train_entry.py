"""Helper process for the ZeRO, architecture and GPU-readiness tests: train like the launcher, or reload a model.

``train EXP METHOD OUT`` runs the method's entrypoint ``main(cfg, ...)`` on an
experiment directory, exactly as ``launch.jobs.TrainJob`` does, under
``torchrun --nproc_per_node N`` or as a lone process. It also records, from
the main process, what the test compares:

- ``OUT/losses.json``: the loss of every optimizer step (already averaged over
  ranks by the training loop);
- ``OUT/logits.pt``: logits of the trained in-memory model on a fixed input,
  computed right after the loop by every rank through the prepared model (so
  ZeRO-3 gathers each layer's shards as it goes, as in training).

``logits MODEL_DIR OUT`` reloads a saved model with ``from_pretrained`` in a
fresh process and writes its logits on the same input to ``OUT/logits.pt``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run by path: make the repo importable

import torch  # noqa: E402

from launch.store.fsio import atomic_write_bytes, atomic_write_json  # noqa: E402


def fixed_input(vocab_size: int) -> torch.Tensor:
    """Two sequences of 24 token ids, the same in every process."""
    return torch.randint(3, vocab_size, (2, 24), generator=torch.Generator().manual_seed(1234))


@torch.no_grad()
def logits_of(model: tp.Any, vocab_size: int) -> torch.Tensor:
    """fp32 logits of ``model`` (plain, DDP-wrapped or a DeepSpeed engine) on the fixed input.

    Collective under DDP/ZeRO: every rank must call it.
    """
    was_training = model.training
    model.eval()
    ids = fixed_input(vocab_size)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().cpu()
    model.train(was_training)
    return out


def save_tensor(path: Path, tensor: torch.Tensor) -> None:
    """``torch.save`` through the atomic writer."""
    buf = io.BytesIO()
    torch.save(tensor, buf)
    atomic_write_bytes(path, buf.getvalue())


def train(exp_dir: Path, method: str, out: Path) -> None:
    """Run the method's entrypoint; the main process writes losses.json and logits.pt to ``out``."""
    from launch.jobs import ENTRYPOINTS
    from launch.store.expdir import ExperimentDir
    from train import loop

    cfg = ExperimentDir(exp_dir).load_config()
    real_loop = loop.train_loop

    def loop_then_probe(model: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> loop.TrainResult:
        from accelerate import PartialState

        result = real_loop(model, *args, **kwargs)
        logits = logits_of(result.model, model.config.vocab_size)
        if PartialState().is_main_process:
            atomic_write_json(out / "losses.json", result.losses)
            save_tensor(out / "logits.pt", logits)
        return result

    loop.train_loop = loop_then_probe
    try:  # also called in the pytest process for the 1-process reference: put the loop back
        module = importlib.import_module(ENTRYPOINTS[cfg.method(method).kind])
        module.main(cfg, method, exp_dir, threads=1)
    finally:
        loop.train_loop = real_loop


def reload_logits(model_dir: Path, out: Path) -> None:
    """Logits of the saved model, loaded with ``from_pretrained`` in this (fresh) process."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # same kernels and reduction order as the 1-thread training ranks
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    save_tensor(out / "logits.pt", logits_of(model, model.config.vocab_size))


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("exp_dir", type=Path)
    t.add_argument("method")
    t.add_argument("out", type=Path)
    r = sub.add_parser("logits")
    r.add_argument("model_dir", type=Path)
    r.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        train(args.exp_dir, args.method, args.out)
    else:
        reload_logits(args.model_dir, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
