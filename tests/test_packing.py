"""Padding-free batching (train/packing.py): packed rows train exactly like padded batches.

Fast (about 10 s): the session's tiny model (random weights), a few bundled questions.
"""

from __future__ import annotations

import typing as tp

import pytest
import torch

from launch.spec.config import MethodConfig
from train import batches, loop, packing
from train.batches import Example, collate

# Packed and unpacked runs do the same arithmetic in a different layout (one row vs one row per
# example, per-example vs masked attention): they agree to float32 rounding. Measured ~1e-6 on
# losses of ~7.8; a leak across examples moves the loss by ~5e-3.
TOL = 1e-5


# tok, examples: the tiny tokenizer and the first 40 sample questions encoded (conftest.py)


def fresh_model(tiny_model, impl: str = "sdpa") -> tp.Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=impl)
    return model.train()


def token_weighted_loss(model: tp.Any, examples: list[Example], pad_id: int) -> float:
    """Each example through the model alone; the mean over all their answer tokens."""
    total, n = 0.0, 0
    for e in examples:
        k = sum(label != -100 for label in e.labels[1:])
        with torch.no_grad():
            total += float(model(**collate([e], pad_id)).loss) * k
        n += k
    return total / n


def test_collate_packed_layout(examples, tok):
    batch = examples[:3]
    packed = packing.collate_packed(batch, tok.pad_token_id)
    # no attention_mask: nothing is padding; the boundaries as flash-attention's varlen kwargs
    assert set(packed) == {"input_ids", "labels", "position_ids", *packing.VARLEN_KEYS}
    lengths = [len(e.input_ids) for e in batch]
    assert packed["cu_seq_lens_q"].dtype == torch.int32 and packed["cu_seq_lens_q"] is packed["cu_seq_lens_k"]
    assert packed["cu_seq_lens_q"].tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert packed["max_length_q"] == packed["max_length_k"] == max(lengths)
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["input_ids"][0].tolist() == sum((e.input_ids for e in batch), [])
    starts = [sum(lengths[:i]) for i in range(len(batch))]
    positions = packed["position_ids"][0].tolist()
    assert [positions[s] for s in starts] == [0, 0, 0] and positions[-1] == lengths[-1] - 1
    labels = packed["labels"][0].tolist()
    for e, s in zip(batch, starts):
        assert labels[s] == -100 and labels[s + 1 : s + len(e.labels)] == e.labels[1:]
    assert packing.batch_tokens(packed) == packing.batch_tokens(collate(batch, tok.pad_token_id)) == sum(lengths)
    assert packing.segment_bounds(packed["position_ids"]) == starts + [sum(lengths)]


@pytest.mark.parametrize(
    "impl, varlen",
    [("sdpa", True), ("sdpa", False), ("eager", False)],
    ids=["sdpa-varlen", "sdpa-hf-mask", "eager-hf-mask"],
)
def test_packed_loss_equals_token_weighted_unpacked_loss(tiny_model, examples, tok, impl, varlen):
    model = fresh_model(tiny_model, impl)
    batch = examples[:8]
    reference = token_weighted_loss(model, batch, tok.pad_token_id)
    padded = collate(batch, tok.pad_token_id)
    packed = packing.collate_packed(batch, tok.pad_token_id)
    with packing.padding_free_attention(model, enabled=varlen) as active, torch.no_grad():
        assert active == varlen
        got = float(packing.answer_loss(model, packed))
    with torch.no_grad():
        hf_padded = float(model(**padded).loss)  # what the loop computed before packing existed
        ours_padded = float(packing.answer_loss(model, padded))
    assert abs(got - reference) <= TOL, (got, reference)
    assert abs(hf_padded - reference) <= TOL and abs(ours_padded - hf_padded) <= TOL
    assert model.config._attn_implementation == impl  # restored


def test_packed_and_padded_gradients_agree(tiny_model, examples, tok):
    """Backward through the per-example attention gives the padded batch's gradients."""
    batch = examples[8:16]
    grads = []
    for layout, varlen in (("padded", False), ("packed", True)):
        model = fresh_model(tiny_model)
        data = (
            collate(batch, tok.pad_token_id) if layout == "padded" else packing.collate_packed(batch, tok.pad_token_id)
        )
        with packing.padding_free_attention(model, enabled=varlen):
            packing.answer_loss(model, data).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    scale = float(grads[0].abs().max())
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("varlen", [True, False], ids=["varlen", "hf-mask"])
def test_no_attention_across_examples(tiny_model, examples, tok, varlen):
    """Changing the middle example of a packed row leaves its neighbours' logits unchanged."""
    model = fresh_model(tiny_model)
    batch = examples[:3]
    changed = list(batch)
    changed[1] = Example([tok.eos_token_id] * len(batch[1].input_ids), batch[1].labels)
    n0, n1 = len(batch[0].input_ids), len(batch[1].input_ids)

    def logits(exs: list[Example], **kw: tp.Any) -> torch.Tensor:
        b = packing.collate_packed(exs, tok.pad_token_id)
        with torch.no_grad():
            return model(input_ids=b["input_ids"], position_ids=b["position_ids"], **kw).logits[0]

    with packing.padding_free_attention(model, enabled=varlen):
        a, b = logits(batch, use_cache=False), logits(changed, use_cache=False)
    assert torch.equal(a[:n0], b[:n0]) and torch.equal(a[n0 + n1 :], b[n0 + n1 :])
    assert float((a[n0 : n0 + n1] - b[n0 : n0 + n1]).abs().max()) > 1e-2  # the changed example did change
    # Each example's logits are those it gets alone.
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([batch[2].input_ids])).logits[0]
    assert float((a[n0 + n1 :] - alone).abs().max()) <= 1e-4
    if not varlen:
        # Why answer_loss passes use_cache=False: with the config's default cache transformers does
        # not look for packed sequences, and the later examples attend to the earlier ones.
        a, b = logits(batch), logits(changed)
        assert not torch.equal(a[n0 + n1 :], b[n0 + n1 :])


def run_loop(tiny_model, examples, tok, batching: str, seed: int = 0, steps: int = 3) -> tuple[loop.TrainResult, list]:
    """train_loop for a few steps, recording the examples of every micro-batch it collates."""
    from accelerate import Accelerator

    seen: list[list[int]] = []
    index = {id(e): i for i, e in enumerate(examples)}
    real = {"packed": packing.collate_packed, "padded": batches.collate}[batching]

    def recording(batch, pad_id):
        seen.append([index[id(e)] for e in batch])
        return real(batch, pad_id)

    method = MethodConfig(
        name="t",
        kind="full_sft",
        learning_rate=1e-3,
        max_steps=steps,
        micro_batch_size=4,
        precision="fp32",
        batching=batching,
    )
    model = fresh_model(tiny_model)
    target = "collate_packed" if batching == "packed" else "collate"
    owner = packing if batching == "packed" else loop  # where train_loop looks the collate function up
    saved = getattr(owner, target)
    setattr(owner, target, recording)
    try:
        result = loop.train_loop(model, examples, method, Accelerator(cpu=True), tok.pad_token_id, seed, progress=False)
    finally:
        setattr(owner, target, saved)
    assert model.config._attn_implementation == "sdpa"
    return result, seen


def test_order_is_deterministic_and_the_same_in_both_layouts(tiny_model, examples, tok):
    examples = examples[:12]  # 3 micro-batches per epoch: 4 steps cross into epoch 1
    packed, order = run_loop(tiny_model, examples, tok, "packed", steps=4)
    again, order_again = run_loop(tiny_model, examples, tok, "packed", steps=4)
    padded, order_padded = run_loop(tiny_model, examples, tok, "padded", steps=4)
    _, other_seed = run_loop(tiny_model, examples, tok, "packed", seed=1, steps=4)
    assert order == order_again == order_padded and order != other_seed
    assert sorted(sum(order[:3], [])) == list(range(12))  # epoch 0 is a permutation
    # Epoch e's order is that of a plain shuffled DataLoader whose generator is seeded with seed + e.
    from torch.utils.data import DataLoader

    for epoch in (0, 1):
        plain = DataLoader(range(12), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(epoch))
        assert [b.tolist() for b in plain][: len(order[3 * epoch : 3 * epoch + 3])] == order[3 * epoch : 3 * epoch + 3]
    assert packed.losses == again.losses  # bit-identical
    assert packed.tokens == padded.tokens
    diff = max(abs(a - b) for a, b in zip(packed.losses, padded.losses))
    assert diff <= TOL, (packed.losses, padded.losses)
