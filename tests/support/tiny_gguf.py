"""Write tiny GGUF files for the import tests, with the ``gguf`` package's writer (no download).

:func:`write_llama_gguf` turns a local Llama model directory (``train.tiny_model``) into the GGUF
llama.cpp's converter would write: llama.cpp's tensor names, Q and K rows permuted for its rotary
layout (transformers' loader permutes them back), the byte-level BPE vocabulary with its merges, the
special tokens and the chat template as metadata, and no ``output.weight`` when the embeddings are
tied. Importing it must give back the very same model.
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import numpy as np

CONTROL, NORMAL = 3, 1  # gguf TokenType values


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order: the two rotary halves of each head interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model: tp.Any, head_twice: bool = False) -> dict[str, np.ndarray]:
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not cfg.tie_word_embeddings or head_twice:
        out["output.weight"] = sd["lm_head.weight"]
    names = {
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        out[f"blk.{i}.attn_q.weight"] = _permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads)
        out[f"blk.{i}.attn_k.weight"] = _permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads)
        for hf, gg in names.items():
            out[f"blk.{i}.{gg}.weight"] = sd[p + hf + ".weight"]
    return out


def write_llama_gguf(
    model_dir: Path,
    out: Path,
    arch: str = "llama",
    quant: str | None = None,
    head_twice: tuple[str, str] | None = None,
) -> Path:
    """A GGUF of the Llama model and tokenizer in ``model_dir``; ``arch`` is what it claims to be.

    Weights are float32, or with ``quant`` (a ``gguf.GGMLQuantizationType`` name such as ``Q8_0``) the
    matrices are quantised like a published file's (norms stay float32). ``head_twice=(EMB, HEAD)``
    stores a tied model's embedding twice, as ``token_embd.weight`` quantised ``EMB`` and
    ``output.weight`` quantised ``HEAD``: the way Qwen2.5-0.5B's GGUF stores its tied embedding.
    """
    import gguf
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = model.config
    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    for added in tok["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")

    w = gguf.GGUFWriter(str(out), arch)
    w.add_name("cyberft tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([CONTROL if t in special else NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    w.add_add_bos_token(True)
    w.add_chat_template(template)
    kinds = dict(zip(("token_embd.weight", "output.weight"), head_twice or ()))
    for name, array in _tensors(model, head_twice=bool(head_twice)).items():
        array = np.ascontiguousarray(array, dtype=np.float32)
        if (quant or name in kinds) and array.ndim == 2:
            kind = gguf.GGMLQuantizationType[kinds.get(name, quant)]
            w.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
        else:
            w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
