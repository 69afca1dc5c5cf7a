"""The architecture matrix: every method on every architecture the project claims, tiny and local.

For each architecture of ``train.tiny_model.ARCHITECTURES`` (Llama untied and tied, Qwen2, Qwen3,
Mistral, Gemma 2, Gemma 3, Phi-3, GPT-NeoX, OLMo 2), a random-weight model of about 0.12-0.16M
parameters with the shared locally trained tokenizer:

* full SFT, LoRA and QLoRA each train 2 steps through their entrypoint, save, and the model the
  evaluation job loads (``evaluate.load_for_eval``: the checkpoint, base + merged adapter, 4-bit
  base + adapter) gives the logits of the model that was trained;
* the evaluator's batched, left-padded scores (with the shared-prefix KV cache where it applies)
  equal a plain forward of each question alone;
* packed training rows give the loss of the examples run one by one (no attention across examples,
  whatever the architecture's attention: sliding windows, soft-capping, fused projections);
* ZeRO-3 on 2 processes saves the weights one process trains, for Llama, Qwen2, Gemma 2 and Phi-3.

Nothing is skipped. About 1 minute on 2 cores (52 s measured for the 70 tests; ``-m slow`` selects
it, ``make test`` runs it).
"""

from __future__ import annotations

import json
import sys
import typing as tp
from pathlib import Path

import pytest
import torch

from launch.questions import prompting
from launch.questions.data import load_questions
from launch.spec.config import DataSource
from support import dist_train_entry
from support.experiments import new_experiment
from train import batches, evaluate, packing, scoring
from train.tiny_model import ARCHITECTURES, DEFAULT_DATA, _corpus, build_tiny_model, build_tokenizer

pytestmark = pytest.mark.slow

ARCHS = list(ARCHITECTURES)
SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
ZERO3_ARCHS = ["llama", "qwen2", "gemma2", "phi3"]
STEPS = 2


@pytest.fixture(scope="session")
def arch_model(tmp_path_factory: pytest.TempPathFactory) -> tp.Callable[[str], Path]:
    """``arch -> model directory``, each built on first use with the one shared tokenizer."""
    root = tmp_path_factory.mktemp("archs")
    tokenizer = build_tokenizer(_corpus(DEFAULT_DATA))
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = build_tiny_model(root / arch, arch=arch, tokenizer=tokenizer, pretrain_steps=0, **SIZES)
        return built[arch]

    return get


def make_experiment(repo: Path, model: Path, root: Path, extra: tp.Sequence[str] = ()) -> tuple[tp.Any, Path]:
    overrides = (
        [
            f"model.name_or_path={model}",
            f"output_dir={root}",
            "tracking.backend=none",
            "data.max_train=16",
            "data.max_eval=8",
        ]
        + [
            f"methods.{m}.{k}"
            for m in ("full_sft", "lora", "qlora")
            for k in (f"max_steps={STEPS}", "micro_batch_size=4")
        ]
        + list(extra)
    )
    return new_experiment(overrides)


def plain_scores(model: tp.Any, tokenizer: tp.Any, questions: list) -> list[list[float]]:
    """Letter log-probabilities from one unpadded forward per question, no cache: the reference."""
    codec = prompting.AnswerCodec(tokenizer)
    out = []
    for q in questions:
        ctx = prompting.scoring_context(tokenizer, codec, q, 256)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx]), use_cache=False).logits[0, -1].float(), -1)
        out.append([float(logp[codec.letter_ids[k][0]]) for k in "ABCD"])
    return out


# --------------------------------------------------------------------------- each method, each architecture


@pytest.mark.parametrize("kind", ["full_sft", "lora", "qlora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_method_trains_saves_reloads_and_scores(arch, kind, arch_model, repo, tmp_path):
    model_dir = arch_model(arch)
    cfg, exp_dir = make_experiment(repo, model_dir, tmp_path / "runs")
    probe = tmp_path / "probe"
    probe.mkdir()
    entry = dist_train_entry
    entry.train(exp_dir, kind, probe)  # the entrypoint's main(), recording the trained model's logits

    metrics = json.loads(exp_dir.method(kind).metrics_file.read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == STEPS
    losses = json.loads((probe / "losses.json").read_text())
    assert len(losses) == STEPS and all(0 < x < 50 for x in losses)

    # What the evaluation job scores is what was trained.
    model = evaluate.load_for_eval(cfg, kind, exp_dir)
    reloaded = entry.logits_of(model, model.config.vocab_size)
    trained = torch.load(probe / "logits.pt")
    diff = float((reloaded - trained).abs().max())
    # full SFT and QLoRA reload the very weights (exact); LoRA is merged into the base for scoring,
    # which rounds W + BA once (measured <= 3e-6 on logits of ~1).
    assert diff <= (1e-5 if kind == "lora" else 0.0), f"{arch} {kind}: reloaded logits differ by {diff}"
    if kind == "full_sft":
        base = evaluate.load_for_eval(cfg, "base", exp_dir)
        assert float((entry.logits_of(base, base.config.vocab_size) - trained).abs().max()) > 1e-4, "nothing trained"

    # The evaluator's batched scores (left padding, prefix cache where it applies) equal a plain forward.
    tokenizer = batches.load_tokenizer(str(model_dir))
    questions = batches.load_split(cfg, exp_dir, "eval")
    got = scoring.score_loglik(model, tokenizer, questions, batch_size=4, max_len=256, progress=False)
    want = plain_scores(model, tokenizer, questions)
    worst = max(abs(g["logprobs"][k] - w[i]) for g, w in zip(got, want) for i, k in enumerate("ABCD"))
    assert worst <= 1e-4, f"{arch} {kind}: batched scores differ from a plain forward by {worst}"


# --------------------------------------------------------------------------- packing and the prefix cache


@pytest.fixture(scope="module")
def sample_questions() -> list:
    return load_questions(DataSource(path=str(DEFAULT_DATA)))[::23][:12]


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_rows_train_like_separate_examples(arch, arch_model, sample_questions):
    """The packed micro-batch's loss and gradients are those of its examples run one at a time."""
    from transformers import AutoModelForCausalLM

    model_dir = arch_model(arch)
    tok = batches.load_tokenizer(str(model_dir))
    examples = batches.encode_examples(tok, sample_questions[:6], max_len=256, progress=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()

    def grads_of(loss: torch.Tensor) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    # Reference: each example alone (no padding, no packing), weighted by its answer tokens.
    n_answer = [sum(label != -100 for label in e.labels[1:]) for e in examples]
    ref_loss = sum(
        packing.answer_loss(model, batches.collate([e], tok.pad_token_id)) * n for e, n in zip(examples, n_answer)
    ) / sum(n_answer)
    ref_grads = grads_of(ref_loss)
    with packing.padding_free_attention(model):
        loss = packing.answer_loss(model, packing.collate_packed(examples))
        grads = grads_of(loss)
    loss, ref_loss = float(loss.detach()), float(ref_loss.detach())
    assert abs(loss - ref_loss) <= 1e-5, (arch, loss, ref_loss)
    assert float((grads - ref_grads).abs().max()) <= 1e-5 * max(1.0, float(ref_grads.abs().max()))


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_cache_is_used_where_exact_and_scores_equal_full_contexts(arch, arch_model, sample_questions):
    from transformers import AutoModelForCausalLM

    model_dir = arch_model(arch)
    tok = batches.load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    codec = prompting.AnswerCodec(tok)
    contexts = [prompting.scoring_context(tok, codec, q, 256) for q in sample_questions]
    cache = scoring.PrefixCache.build(model, contexts)
    window = getattr(model.config, "sliding_window", None)
    # A sliding window shorter than the contexts would see the padding between prefix and question
    # as distance: the cache is refused then, and used everywhere else.
    assert (cache is None) == bool(window and window < max(map(len, contexts))), (arch, window)
    shared = scoring.score_loglik(model, tok, sample_questions, batch_size=5, max_len=256, progress=False)
    full = scoring.score_loglik(
        model, tok, sample_questions, batch_size=5, max_len=256, progress=False, share_prefix=False
    )
    for a, b in zip(shared, full):
        assert [a["logprobs"][k] for k in "ABCD"] == pytest.approx([b["logprobs"][k] for k in "ABCD"], abs=1e-4)


@pytest.mark.parametrize("arch", ["mistral", "gemma2", "gemma3"])
def test_prefix_cache_under_a_window_longer_than_the_prompts_is_used_and_exact(arch, arch_model, sample_questions):
    """Real sliding windows (Mistral's and Gemma's 4096) exceed CyberMetric prompts: the cache applies."""
    from transformers import AutoModelForCausalLM

    model_dir = arch_model(arch)
    tok = batches.load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, sliding_window=4096).eval()
    codec = prompting.AnswerCodec(tok)
    assert scoring.PrefixCache.build(model, [prompting.scoring_context(tok, codec, q, 256) for q in sample_questions])
    shared = scoring.score_loglik(model, tok, sample_questions, batch_size=5, max_len=256, progress=False)
    want = plain_scores(model, tok, sample_questions)
    worst = max(abs(g["logprobs"][k] - w[i]) for g, w in zip(shared, want) for i, k in enumerate("ABCD"))
    assert worst <= 1e-4, (arch, worst)


# --------------------------------------------------------------------------- LoRA targets


def test_lora_targets_that_match_nothing_stop_the_job_before_any_step(arch_model, repo, tmp_path):
    """Llama's projection names on GPT-NeoX: refused at job start, naming the model's linear layers."""
    from train import lora

    cfg, exp_dir = make_experiment(
        repo, arch_model("gpt-neox"), tmp_path / "runs", ["methods.lora.lora.target_modules=[q_proj, v_proj]"]
    )
    with pytest.raises(ValueError) as info:
        lora.main(cfg, "lora", exp_dir, threads=1)
    message = str(info.value)
    assert "methods.lora.lora.target_modules: ['q_proj', 'v_proj']" in message
    assert "query_key_value" in message and "dense_h_to_4h" in message and "all-linear" in message
    assert not exp_dir.method("lora").progress_file.exists(), "a step ran"
    assert exp_dir.method("lora").read_metrics().status == "failed"


@pytest.mark.parametrize("arch", ARCHS)
def test_memory_estimate_reads_each_architectures_shape_exactly(arch, arch_model):
    """launch/cost/memory.py (no torch) counts the parameters and names the linear layers of each model."""
    from transformers import AutoModelForCausalLM

    from launch.cost import memory

    model_dir = arch_model(arch)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    shape = memory.model_shape(str(model_dir))
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    assert shape.tie_embeddings == model.config.tie_word_embeddings
    output = model.get_output_embeddings()
    linears = {
        name.rsplit(".", 1)[-1]: (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not output
    }
    assert shape.linear_shapes() == linears


@pytest.mark.parametrize("arch", ["phi3", "gpt-neox"])
def test_all_linear_adapts_every_linear_layer_and_matches_the_memory_estimate(arch, arch_model):
    """The default target (all-linear) covers the fused projections; the estimate counts the same adapters."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from launch.cost import memory
    from launch.spec.config import LoraSettings
    from train.lora import linear_module_names, lora_config

    model_dir = arch_model(arch)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    linears = linear_module_names(base)
    model = get_peft_model(base, lora_config(LoraSettings()))
    adapted = {
        n.rsplit(".lora_A", 1)[0].removeprefix("base_model.model.")
        for n, _ in model.named_modules()
        if n.endswith(".lora_A")
    }
    assert adapted == set(linears)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert memory.lora_params(memory.model_shape(str(model_dir)), LoraSettings())[0] == trainable


# --------------------------------------------------------------------------- ZeRO-3


@pytest.mark.parametrize("arch", ZERO3_ARCHS)
def test_zero3_on_two_processes_saves_the_weights_of_one_process(arch, arch_model, repo, tmp_path):
    """Same seed and global batch (2 ranks x 2 vs 1 x 4): the consolidated checkpoints agree."""
    from safetensors.torch import load_file

    from test_zero import run_child

    ds = repo / "ds_configs" / "zero3.json"
    entry = Path(dist_train_entry.__file__)
    saved = {}
    runs = (
        ("one", 1, ["methods.full_sft.micro_batch_size=4"]),
        ("zero3", 2, [f"methods.full_sft.deepspeed={ds}", "methods.full_sft.micro_batch_size=2"]),
    )
    for key, nproc, extra in runs:
        _, exp_dir = make_experiment(repo, arch_model(arch), tmp_path / key, extra)
        probe = tmp_path / key / "probe"
        probe.mkdir()
        if nproc == 1:
            dist_train_entry.train(exp_dir, "full_sft", probe)
        else:
            run_child(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={nproc}",
                    str(entry),
                    "train",
                    str(exp_dir),
                    "full_sft",
                    str(probe),
                ],
                repo,
            )
        saved[key] = load_file(exp_dir.method("full_sft").model_dir / "model.safetensors")
    assert saved["one"].keys() == saved["zero3"].keys()
    worst = max(float((saved["one"][k] - saved["zero3"][k]).abs().max()) for k in saved["one"])
    print(f"{arch}: ZeRO-3 x 2 vs 1 process, max |weight difference| = {worst:.3g}")
    assert worst <= ZERO3_WEIGHT_TOL, (arch, worst)


ZERO3_WEIGHT_TOL = 1e-5
"""Two ranks sum the same gradients in another order (float32 rounding, ~1e-7 relative); after 2 AdamW
steps at lr 1e-3 the weights agree to within this. A lost or stale shard, or a wrong gradient
average, moves a weight by about the learning rate (1e-3)."""
