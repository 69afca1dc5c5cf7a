"""LoRA: low-rank adapters (peft) on a frozen base model.

Run (normally the launcher does this)::

    python -m train.lora EXP_DIR METHOD

Reads top to bottom: config, setup, data, model + adapters, train, save.
Writes ``EXP/methods/<name>/adapter`` (peft adapter + tokenizer) and
``metrics.json``.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import typing as tp
import warnings
from pathlib import Path

import torch

from launch.spec.config import ExperimentConfig, MethodConfig
from launch.store.expdir import ExperimentDir, result_dir
from train import runtime
from train.run import TrainingRun, save_adapter, save_model_atomic

INIT_LORA_WEIGHTS: dict[str, bool | str] = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}
"""peft's ``init_lora_weights`` for each ``lora.init``. ``loftq`` starts from peft's default and is then
replaced by :func:`apply_loftq` (the 4-bit path: peft's ``init_lora_weights="loftq"`` is for an unquantised
base, whose weights it would replace by their 4-bit round trip)."""
INITIAL_STATE = "cyberft_initial_adapter"
"""Attribute of a PiSSA/OLoRA model holding its adapters as initialised, for the conversion at save time."""


def lora_config(settings) -> peft.LoraConfig:  # noqa: F821 - peft is imported lazily
    """peft's ``LoraConfig`` from the experiment's ``LoraSettings`` (``all-linear`` passes through)."""
    from peft import LoraConfig

    targets = settings.target_modules
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
        use_dora=settings.use_dora,
        use_rslora=settings.use_rslora,
        init_lora_weights=INIT_LORA_WEIGHTS.get(settings.init, True),
    )


def add_adapters(base: torch.nn.Module, settings: tp.Any) -> tp.Any:
    """``base`` with LoRA adapters as ``settings`` ask (peft ``get_peft_model``).

    PiSSA and OLoRA move part of each weight into the adapters: their initial values are kept on the model
    (:data:`INITIAL_STATE`) so that :func:`save_lora_adapter` can convert the trained adapter to one on the
    original base. They are a function of the base weights alone, so a resumed job computes the same ones.
    """
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    model = get_peft_model(base, lora_config(settings))
    if settings.init in ("pissa", "olora"):
        initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        setattr(model, INITIAL_STATE, initial)
    return model


def apply_loftq(model: tp.Any, name_or_path: str) -> None:
    """LoftQ on a 4-bit LoRA model: each adapter becomes the rank-``r`` SVD of its layer's quantisation error,
    the unquantised weights read from ``name_or_path``'s safetensors (peft ``replace_lora_weights_loftq``)."""
    from peft import replace_lora_weights_loftq

    if not torch.cuda.is_available():  # the config refuses gpus_per_node: 0; a local run on a CPU ends here
        raise ValueError(
            "lora.init: loftq needs a GPU: peft's replace_lora_weights_loftq quantises and decomposes on CUDA "
            "only -> run it on a GPU, or set lora.init: default"
        )
    replace_lora_weights_loftq(model, model_path=str(name_or_path))


def save_lora_adapter(accelerator: tp.Any, model: tp.Any, tokenizer: tp.Any, out: Path) -> None:
    """:func:`~train.run.save_adapter`, a PiSSA/OLoRA adapter converted to a plain LoRA one of rank ``2r`` on the
    original base (peft's ``path_initial_model_for_weight_conversion``: ``B A - B0 A0``), which the evaluation
    loads like any LoRA adapter; every rank calls it."""
    unwrapped = accelerator.unwrap_model(model)
    initial = getattr(unwrapped, INITIAL_STATE, None)
    if initial is None:
        save_adapter(accelerator, model, tokenizer, out)
        return
    if accelerator.is_main_process:
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".initial-", dir=out.parent) as tmp:
            initial_dir = Path(tmp) / "initial"
            config = copy.deepcopy(unwrapped.peft_config["default"])
            config.init_lora_weights = True  # peft loads it as a plain adapter, without decomposing the base again
            config.save_pretrained(initial_dir)
            save_file(initial, initial_dir / "adapter_model.safetensors")
            with warnings.catch_warnings():  # peft's advice to convert, given while it converts
                warnings.filterwarnings("ignore", message=".*changes the base weights of the model")
                save_model_atomic(unwrapped, tokenizer, out, path_initial_model_for_weight_conversion=str(initial_dir))
    accelerator.wait_for_everyone()


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Full names of the linear layers LoRA can adapt (4-bit ones included), without the output layer."""
    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:  # no bitsandbytes: no quantised layers either
        pass
    output = model.get_output_embeddings()
    return [name for name, module in model.named_modules() if isinstance(module, linear_types) and module is not output]


def check_targets(model: torch.nn.Module, settings: tp.Any, where: str) -> None:
    """Fail before training when a ``target_modules`` entry matches no linear layer of ``model``.

    peft adapts the modules a list names and ignores an entry that matches nothing (it fails only
    when nothing at all matches): a list written for Llama would silently adapt a fraction of a
    Phi-3 or no layer of a GPT-NeoX. Entries are matched as peft matches them, by the whole name or
    its last dotted parts.
    """
    targets = settings.target_modules
    if isinstance(targets, str):  # all-linear: peft finds the layers itself
        return
    names = linear_module_names(model)
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        kinds = ", ".join(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
        raise ValueError(
            f"{where}.lora.target_modules: {unmatched} match(es) no linear layer of this "
            f"{type(model).__name__} -> use all-linear, or names from its linear layers: {kinds}"
        )


def base_model(cfg: ExperimentConfig, method: MethodConfig) -> tp.Any:
    """``cfg.model`` as an adapter kind trains on it (LoRA, IA3): full precision, checkpointing as the method asks."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        cfg.model.name_or_path,
        dtype=runtime.resolve_dtype(cfg.model.dtype),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if method.gradient_checkpointing:
        runtime.enable_checkpointing(base)
    return base


def lora_model(cfg: ExperimentConfig, method: MethodConfig) -> tp.Any:
    """``cfg.model`` frozen, with ``method.lora``'s trainable adapters (peft), checkpointing as the method asks;
    with ``init_from``, the earlier adapter's weights loaded trainable (continual re-training)."""
    base = base_model(cfg, method)
    if method.init_from:
        from peft import PeftModel

        # launch.spec.preflight checked that it is a completed LoRA adapter of this base with method.lora's shape.
        return PeftModel.from_pretrained(base, result_dir(method.init_from, "lora"), is_trainable=True)
    check_targets(base, method.lora, f"methods.{method.name}")
    return add_adapters(base, method.lora)


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Train LoRA adapters on ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="lora", threads=threads) as run:
        # --- data
        tokenizer, examples = run.load_data()

        # --- model: frozen base + trainable adapters
        model = lora_model(cfg, run.method)

        # --- train
        run.train(model, examples, tokenizer)

        # --- save: the adapter only (the evaluation job loads it on the base)
        save_lora_adapter(run.accelerator, model, tokenizer, run.paths.adapter_dir)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
