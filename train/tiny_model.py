"""Build a tiny Llama-architecture model and a tokenizer trained locally.

Nothing here touches a model hub: the tokenizer is a byte-level BPE trained
with ``tokenizers`` on the project's sample questions (rendered through the
same prompt template as training), the model is a randomly initialised
``LlamaForCausalLM`` from a small config, and both are written with
``save_pretrained`` so they load back with ``from_pretrained(path)``.

Run::

    cyberft tiny-model .cache/tiny-llama            # or
    python -m train.tiny_model .cache/tiny-llama
"""

from __future__ import annotations

import argparse
import os
import time
import typing as tp
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "sample" / "cyber_mcq.json"

# A chat template in the shape of real ones: role markers and a generation prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def _corpus(data_path: Path) -> list[str]:
    """Texts the tokenizer learns from: every question through the prompt template, plus the answers."""
    from launch.data import load_questions
    from launch.config import DataSource
    from train import prompting

    questions = load_questions(DataSource(path=str(data_path)))
    texts = [prompting.SYSTEM_PROMPT, prompting.INSTRUCTION]
    for q in questions:
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


def build_model(vocab_size: int, bos_id: int, eos_id: int, pad_id: int, seed: int = 0, **sizes: int) -> tp.Any:
    """A small ``LlamaForCausalLM`` (about 0.7M parameters by default)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=sizes.get("hidden_size", 128),
        intermediate_size=sizes.get("intermediate_size", 256),
        num_hidden_layers=sizes.get("num_hidden_layers", 4),
        num_attention_heads=sizes.get("num_attention_heads", 4),
        num_key_value_heads=sizes.get("num_key_value_heads", 2),
        max_position_embeddings=sizes.get("max_position_embeddings", 512),
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def build_tiny_model(
    out_dir: str | os.PathLike, data_path: str | os.PathLike = DEFAULT_DATA, seed: int = 0, **sizes: int
) -> Path:
    """Train the tokenizer, build the model, save both to ``out_dir`` (atomically: temp dir + rename)."""
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(_corpus(Path(data_path)), vocab_size=sizes.pop("vocab_size", 2048))
    model = build_model(
        len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, seed=seed, **sizes
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cyberft tiny-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory to write the model and tokenizer to")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="questions the tokenizer is trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = build_tiny_model(
        args.out_dir, args.data, seed=args.seed, hidden_size=args.hidden_size,
        intermediate_size=2 * args.hidden_size, num_hidden_layers=args.layers,
    )
    print(f"tiny model written to {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
