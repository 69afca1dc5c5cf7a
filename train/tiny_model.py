"""Build a tiny model of a common architecture and a tokenizer trained locally.

Nothing here touches a model hub: the tokenizer is a byte-level BPE trained
with ``tokenizers`` on the project's sample questions (rendered through the
same prompt template as training), the model is randomly initialised from a
small config of one of :data:`ARCHITECTURES` (transformers' own config classes:
Llama, Qwen2/3, Mistral, Gemma 2/3, Phi-3, GPT-NeoX, OLMo 2), and both are
written with ``save_pretrained`` so they load back with ``from_pretrained(path)``.
Every architecture shares the tokenizer, so one test can run them all.

Run::

    cyberft tiny-model .cache/tiny-llama                    # or
    python -m train.tiny_model .cache/tiny-qwen2 --arch qwen2
"""

from __future__ import annotations

import argparse
import os
import time
import typing as tp
from pathlib import Path

from launch import SAMPLE_DATA

DEFAULT_DATA = SAMPLE_DATA
"""The questions the tokenizer (and the briefly pretrained model) learn from by default."""

# A chat template in the shape of real ones: role markers and a generation prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def _corpus(data_path: Path) -> list[str]:
    """Texts the tokenizer learns from: every question through the prompt template, plus the answers."""
    from launch.questions import prompting
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource

    questions = load_questions(DataSource(path=str(data_path)))
    texts = []
    for q in questions:
        # The constant prompt text goes in once per question so BPE learns it as
        # few tokens: shorter sequences make every smoke step cheaper.
        texts.append(prompting.SYSTEM_PROMPT)
        texts.append(prompting.user_message(q))
        texts.append(f"{prompting.ANSWER_PREFIX} {q.solution}")
    return texts


def build_tokenizer(texts: tp.Sequence[str], vocab_size: int = 2048) -> tp.Any:
    """A byte-level BPE tokenizer with BOS/EOS/PAD and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama_like(config_cls: str, **extra: tp.Any) -> tp.Callable[[dict], tp.Any]:
    """A builder for a decoder with Llama's size keys (hidden, MLP, heads, KV heads)."""

    def build(sizes: dict) -> tp.Any:
        import transformers

        keys = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
        )
        kw = {k: sizes[k] for k in keys}
        kw.update({k: v(sizes) if callable(v) else v for k, v in extra.items()})
        return getattr(transformers, config_cls)(**kw)

    return build


def _head_dim(sizes: dict) -> int:
    return sizes["hidden_size"] // sizes["num_attention_heads"]


def _gpt_neox(sizes: dict) -> tp.Any:
    from transformers import GPTNeoXConfig

    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    )
    return GPTNeoXConfig(**{k: sizes[k] for k in keys}, tie_word_embeddings=False)


SLIDING_WINDOW = 32
"""Window of the tiny sliding-window models: shorter than a sample prompt (about 60-90 tokens with the
tiny tokenizer), so the window really cuts attention in tests."""

ARCHITECTURES: dict[str, tp.Callable[[dict], tp.Any]] = {
    "llama": _llama_like("LlamaConfig", tie_word_embeddings=False),
    "llama-tied": _llama_like("LlamaConfig", tie_word_embeddings=True),  # SmolLM2's shape
    "qwen2": _llama_like("Qwen2Config", tie_word_embeddings=False),  # biases on q, k, v
    "qwen3": _llama_like("Qwen3Config", tie_word_embeddings=False, head_dim=_head_dim),  # q/k RMSNorm
    "mistral": _llama_like("MistralConfig", tie_word_embeddings=False, sliding_window=SLIDING_WINDOW),
    # local/global layers, attention and final logit soft-capping, embeddings scaled by sqrt(hidden)
    "gemma2": _llama_like(
        "Gemma2Config",
        tie_word_embeddings=True,
        head_dim=_head_dim,
        query_pre_attn_scalar=_head_dim,
        sliding_window=SLIDING_WINDOW,
    ),
    "gemma3": _llama_like(
        "Gemma3TextConfig",
        tie_word_embeddings=True,
        head_dim=_head_dim,
        query_pre_attn_scalar=_head_dim,
        sliding_window=SLIDING_WINDOW,
        layer_types=lambda s: (
            ["sliding_attention", "full_attention"] * (s["num_hidden_layers"] // 2)
            + ["sliding_attention"] * (s["num_hidden_layers"] % 2)
        ),
    ),
    "phi3": _llama_like("Phi3Config", tie_word_embeddings=False),  # fused qkv_proj and gate_up_proj
    "gpt-neox": _gpt_neox,  # query_key_value, dense_h_to_4h, parallel residual, partial rotary, LayerNorm
    "olmo2": _llama_like("Olmo2Config", tie_word_embeddings=False),  # post-norm blocks, q/k RMSNorm
}
"""Tiny random-weight configs of the architectures the project is tested on, by name."""

DEFAULT_ARCH = "llama-tied"


def build_model(
    vocab_size: int, bos_id: int, eos_id: int, pad_id: int, seed: int = 0, arch: str = DEFAULT_ARCH, **sizes: int
) -> tp.Any:
    """A small causal LM of architecture ``arch`` (about 0.7M parameters by default) with random weights."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture {arch!r}: not one of {', '.join(ARCHITECTURES)}")
    full = {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    full.update(sizes)
    cfg = ARCHITECTURES[arch](full)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def pretrain(
    model: tp.Any, tokenizer: tp.Any, data_path: Path, steps: int, seed: int = 0, batch_size: int = 32
) -> list[float]:
    """Language-model pretraining on the prompts alone (questions and options, never the answers).

    A randomly initialised model gives LoRA nothing to adapt: frozen random
    weights route no information. A short pretraining on the domain's text
    makes the tiny model behave like a (very) small pretrained base, while it
    still knows nothing about which option is right, so the base row stays at
    chance and every gain in the report comes from fine-tuning.
    """
    import random

    import torch
    from tqdm.auto import tqdm

    from launch.questions import prompting
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource

    texts = [prompting.prompt_ids(tokenizer, q) for q in load_questions(DataSource(path=str(data_path)))]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="pretrain tiny model", mininterval=1.0):
        batch = rng.sample(texts, min(batch_size, len(texts)))
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row)] = torch.tensor(row)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    model.eval()
    return losses


def build_tiny_model(
    out_dir: str | os.PathLike,
    data_path: str | os.PathLike = DEFAULT_DATA,
    seed: int = 0,
    pretrain_steps: int = 150,
    arch: str = DEFAULT_ARCH,
    tokenizer: tp.Any = None,
    **sizes: int,
) -> Path:
    """Train the tokenizer (or reuse ``tokenizer``), build (and briefly pretrain) the model, save both
    to ``out_dir`` atomically."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocab_target = sizes.pop("vocab_size", 2048)
    if tokenizer is None:
        tokenizer = build_tokenizer(_corpus(Path(data_path)), vocab_size=vocab_target)
    model = build_model(
        len(tokenizer),
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        seed=seed,
        arch=arch,
        **sizes,
    )
    if pretrain_steps:
        pretrain(model, tokenizer, Path(data_path), pretrain_steps, seed=seed)
    from train.run import save_model_atomic

    return save_model_atomic(model, tokenizer, out)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cyberft tiny-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory to write the model and tokenizer to")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="questions the tokenizer is trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--arch",
        choices=list(ARCHITECTURES),
        default=DEFAULT_ARCH,
        help=f"architecture (default {DEFAULT_ARCH}: Llama with tied embeddings, SmolLM2's shape)",
    )
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--pretrain-steps", type=int, default=150, help="LM steps on the prompts (no answers); 0: random weights"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = build_tiny_model(
        args.out_dir,
        args.data,
        seed=args.seed,
        hidden_size=args.hidden_size,
        intermediate_size=2 * args.hidden_size,
        num_hidden_layers=args.layers,
        pretrain_steps=args.pretrain_steps,
        arch=args.arch,
    )
    print(f"tiny {args.arch} model written to {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
