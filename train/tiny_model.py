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


def pretrain(model: tp.Any, tokenizer: tp.Any, data_path: Path, steps: int, seed: int = 0, batch_size: int = 32) -> list[float]:
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

    from launch.config import DataSource
    from launch.data import load_questions
    from train import prompting

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
    out_dir: str | os.PathLike, data_path: str | os.PathLike = DEFAULT_DATA, seed: int = 0,
    pretrain_steps: int = 150, **sizes: int,
) -> Path:
    """Train the tokenizer, build (and briefly pretrain) the model, save both to ``out_dir`` atomically."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(_corpus(Path(data_path)), vocab_size=sizes.pop("vocab_size", 2048))
    model = build_model(
        len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, seed=seed, **sizes
    )
    if pretrain_steps:
        pretrain(model, tokenizer, Path(data_path), pretrain_steps, seed=seed)
    from train.common import save_model_atomic

    return save_model_atomic(model, tokenizer, out)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cyberft tiny-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory to write the model and tokenizer to")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="questions the tokenizer is trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pretrain-steps", type=int, default=150, help="LM steps on the prompts (no answers); 0: random weights")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = build_tiny_model(
        args.out_dir, args.data, seed=args.seed, hidden_size=args.hidden_size,
        intermediate_size=2 * args.hidden_size, num_hidden_layers=args.layers, pretrain_steps=args.pretrain_steps,
    )
    print(f"tiny model written to {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
