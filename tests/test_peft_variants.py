"""LoRA's variants (DoRA, rsLoRA, the gaussian/PiSSA/OLoRA/LoftQ starts) and the ``ia3`` kind: the shipped
variant config, the combinations refused before submit, the dumps, memory estimates and forecast rows, the
report's rows; then, on the tiny model, each variant trains, saves, reloads to the scores of the trained model
in memory, and resumes from a checkpoint to the weights of an uninterrupted run."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from launch.cost import memory
from launch.cost.forecast import DORA_TIME_FACTOR, method_forecast, variant_factor
from launch.cost.memory import ModelShape
from launch.cost.tokencount import SplitTokens, TokenCounts
from launch.results import report
from launch.spec.config import METHOD_KINDS, ConfigError, config_hash, dump_yaml, from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
VARIANTS = REPO / "configs" / "peft-variants.yaml"
SAMPLE = REPO / "data" / "sample" / "cyber_mcq.json"
SHOWN = {
    "lora": "lora",
    "lora_dora": "lora+dora",
    "lora_rslora": "lora+rslora",
    "lora_gaussian": "lora(init=gaussian)",
    "lora_pissa": "lora(init=pissa)",
    "lora_olora": "lora(init=olora)",
    "qlora_dora": "qlora+dora",
    "qlora_loftq": "qlora(init=loftq)",
    "ia3": "ia3",
}
"""Each method of configs/peft-variants.yaml and the variant its row names."""
SHAPE = ModelShape(
    hidden_size=128, num_layers=4, vocab_size=1024, intermediate_size=256, num_heads=4, num_kv_heads=2,
    tie_embeddings=True, source="test",
)  # fmt: skip


def _raw(**lora) -> dict:
    method = {"name": "x", "kind": lora.pop("kind", "lora"), "lora": lora}
    return {"name": "t", "model": {"name_or_path": "m"}, "data": {"train": {"path": str(SAMPLE)}}, "methods": [method]}


# --------------------------------------------------------------------------- the config


def test_the_variant_config_shows_every_variant_and_validates(tiny_model, tmp_path):
    cfg = load_config(VARIANTS, [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path}"])
    assert {m.name: m.variant for m in cfg.methods} == SHOWN
    assert {m.kind for m in cfg.methods} == {"lora", "qlora", "ia3"} and "ia3" in METHOD_KINDS
    assert load_config(VARIANTS, [f"output_dir={tmp_path}"]).methods  # the shipped paths as they are
    # Variants are settings: a dump reads back equal, and peft's defaults are left out of it.
    assert from_dict(json.loads(json.dumps(_plain(cfg)))).methods == cfg.methods
    text = dump_yaml(cfg)
    assert text.count("use_dora: true") == 2 and "use_dora: false" not in text and "init: default" not in text


def _plain(cfg):
    from launch.spec.config import to_dict

    return to_dict(cfg)


def test_peft_defaults_keep_an_old_config_text_and_hash():
    old = from_dict(_raw(r=8))
    same = from_dict(_raw(r=8, use_dora=False, use_rslora=False, init="default"))
    assert config_hash(old) == config_hash(same) and dump_yaml(old) == dump_yaml(same)
    assert "use_dora" not in dump_yaml(old) and "ia3:" not in dump_yaml(old)
    assert config_hash(from_dict(_raw(r=8, use_dora=True))) != config_hash(old)


@pytest.mark.parametrize(
    "lora, fragment",
    [
        ({"init": "loftq"}, "lora.init: loftq with kind lora -> use kind: qlora"),
        ({"kind": "qlora", "init": "pissa"}, "lora.init: pissa with kind qlora -> use kind: lora"),
        ({"kind": "qlora", "init": "olora"}, "lora.init: olora with kind qlora -> use kind: lora"),
        ({"init": "pissa", "use_dora": True}, "lora.use_dora: true with init: pissa -> set use_dora: false"),
        ({"init": "olora", "use_dora": True}, "lora.use_dora: true with init: olora"),
        ({"init": "pisa"}, "lora.init: 'pisa' is not allowed -> did you mean 'pissa'?"),
    ],
)
def test_combinations_peft_cannot_do_are_refused_with_the_field_value_and_fix(lora, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(_raw(**lora))
    assert any(p.startswith("methods[0] (x)") and fragment in p for p in err.value.problems), err.value.problems


def test_loftq_on_a_cpu_is_refused_and_on_a_gpu_allowed():
    raw = _raw(kind="qlora", init="loftq")
    raw["methods"][0]["resources"] = {"gpus_per_node": 0}
    with pytest.raises(ConfigError, match="replace_lora_weights_loftq, quantises and decomposes on CUDA only"):
        from_dict(raw)
    raw["methods"][0]["resources"] = {"gpus_per_node": 1}
    assert from_dict(raw).methods[0].variant == "qlora(init=loftq)"


@pytest.mark.parametrize(
    "ia3, fragment",
    [
        ({"target_modules": []}, "ia3.target_modules: empty"),
        ({"target_modules": ["k_proj"]}, "feedforward_modules: auto with listed target_modules"),
        ({"feedforward_modules": ["down_proj"]}, "with target_modules: auto -> list target_modules too"),
        ({"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}, "['down_proj'] not in target_modules"),
    ],
)
def test_ia3_settings_are_checked(ia3, fragment):
    raw = _raw()
    raw["methods"][0] = {"name": "x", "kind": "ia3", "ia3": ia3}
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert any(fragment in p for p in err.value.problems), err.value.problems


# --------------------------------------------------------------------------- estimates, forecast, report


def test_memory_estimates_count_dora_magnitudes_and_ia3_vectors():
    cfg = from_dict(_raw(r=8))
    lora = cfg.methods[0]
    dora = from_dict(_raw(r=8, use_dora=True)).methods[0]
    plain, extra = memory.estimate(SHAPE, lora, 256), memory.estimate(SHAPE, dora, 256)
    outs = 4 * (128 + 64 + 64 + 128 + 256 + 256 + 128)  # every layer's output features, 4 layers
    assert extra.trainable_params - plain.trainable_params == outs
    assert extra.activations_gb > plain.activations_gb  # one layer's weight copies while DoRA takes its norm
    raw = _raw()
    raw["methods"][0] = {"name": "x", "kind": "ia3"}
    ia3 = memory.estimate(SHAPE, from_dict(raw).methods[0], 256)
    assert ia3.trainable_params == 4 * (64 + 64 + 256) and ia3.setup.startswith("(IA)^3")  # k, v out; down in
    fewer = plain.trainable_params - ia3.trainable_params
    assert ia3.weights_gb == pytest.approx(plain.weights_gb - 4 * fewer / memory.GB)


def test_the_forecast_multiplies_dora_by_its_measured_factor_and_names_the_variant():
    train, evals = SplitTokens(400, 40000.0, 4e6, 400.0), SplitTokens(100, 10000.0, 1e6, 100.0)
    counts = TokenCounts(train=train, eval=evals, source="test", counted=True)
    lora = from_dict(_raw(r=8)).methods[0]
    dora = from_dict(_raw(r=8, use_dora=True)).methods[0]
    rs = from_dict(_raw(r=8, use_rslora=True, init="gaussian")).methods[0]
    cfg = from_dict(_raw(r=8))
    plain, slow, same = (method_forecast(m, cfg, SHAPE, counts, "H100") for m in (lora, dora, rs))
    assert DORA_TIME_FACTOR > 1 and variant_factor(dora) == DORA_TIME_FACTOR and variant_factor(rs) == 1.0
    assert slow.flops == pytest.approx(plain.flops * DORA_TIME_FACTOR) and same.flops == plain.flops
    assert slow.compute_s == pytest.approx(plain.compute_s * DORA_TIME_FACTOR)
    assert (slow.variant, same.variant) == ("lora+dora", "lora+rslora(init=gaussian)")


def test_a_report_row_names_its_variant():
    metrics = {"status": "completed", "kind": "lora", "variant": "lora+dora", "wall_s": 1.0}
    rows = report.build_rows([("d", "lora"), ("old", "lora")], {}, {"d": metrics, "old": {"status": "completed"}})
    assert [(r["kind"], r["variant"]) for r in rows] == [("lora", "lora+dora"), ("lora", "lora")]
    assert "lora+dora" in report.format_table(rows) and "lora+dora" in report.format_markdown(rows)


# --------------------------------------------------------------------------- each variant on the tiny model

TRAINED = ("lora_dora", "lora_rslora", "lora_gaussian", "lora_pissa", "lora_olora", "qlora_dora", "ia3")
"""Every method of the variant config that runs on a CPU (LoftQ is peft's CUDA-only path)."""
RELOAD_TOL = 1e-4
"""Log-probabilities: the merged (or, for QLoRA, reloaded 4-bit) model against the trained one in memory."""


def _variant_experiment(root: Path, tiny_model: Path, name: str, batch: int = 8) -> tuple:
    from support.experiments import new_experiment

    overrides = [
        f"model.name_or_path={tiny_model}",
        f"output_dir={root}",
        "tracking.backend=none",
        "data.max_train=64",
        "data.max_eval=16",
        f"methods.{name}.max_steps=8",
        f"methods.{name}.micro_batch_size={batch}",
        f"methods.{name}.checkpoint.every_steps=4",
    ]
    return new_experiment(overrides, config=VARIANTS)


def _adapter(exp, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(exp.method(name).adapter_dir / "adapter_model.safetensors")


@pytest.mark.parametrize("name", TRAINED)
def test_each_variant_trains_saves_reloads_to_its_scores_and_resumes(name, tiny_model, tmp_path, monkeypatch):
    from launch.jobs import ENTRYPOINTS
    from train import batches, evaluate, loop, scoring
    from train.checkpoint import Preempted

    cfg, exp = _variant_experiment(tmp_path / "whole", tiny_model, name)
    main = importlib.import_module(ENTRYPOINTS[cfg.method(name).kind]).main
    kept = {}
    train_loop = loop.train_loop

    def keep_model(*args, **kwargs):
        kept["result"] = train_loop(*args, **kwargs)
        return kept["result"]

    monkeypatch.setattr(loop, "train_loop", keep_model)
    metrics = main(cfg, name, exp, threads=1)
    assert metrics["status"] == "completed" and metrics["steps"] == 8 and metrics["variant"] == SHOWN[name]
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    estimated = memory.estimate(memory.model_shape(str(tiny_model)), cfg.method(name), cfg.model.max_seq_len)
    assert metrics["trainable_params"] == estimated.trainable_params  # DoRA's magnitudes, (IA)^3's vectors
    assert SHOWN[name] in estimated.line() or name == "ia3"

    # Reload: the evaluation's model (from the saved adapter) scores as the trained model in memory.
    tokenizer = batches.load_tokenizer(cfg.model.name_or_path)
    questions = batches.load_split(cfg, exp, "eval")
    trained = kept["result"].model.eval()
    want = scoring.score_loglik(trained, tokenizer, questions, 8, cfg.model.max_seq_len, progress=False)
    evaluate.evaluate_model(cfg, name, exp, questions, tokenizer, progress=False)
    got = [json.loads(line) for line in exp.eval.predictions_file(name).read_text().splitlines()]
    diff = max(abs(g["logprobs"][k] - w["logprobs"][k]) for g, w in zip(got, want) for k in w["logprobs"])
    print(f"{name}: reload max |logprob diff| = {diff:.2g}")
    assert len(got) == len(want) == 16 and diff <= RELOAD_TOL
    adapter = _adapter(exp, name)
    if name in ("lora_pissa", "lora_olora"):  # converted for the original base: [A | A0], [B | -B0]
        assert {t.shape[0] for k, t in adapter.items() if "lora_A" in k} == {2 * cfg.method(name).lora.r}

    # Resume: stopped right after its step-4 checkpoint, restarted, it ends with the uninterrupted run's weights.
    cfg2, exp2 = _variant_experiment(tmp_path / "resumed", tiny_model, name)
    save = loop.Checkpoints.save

    def save_then_stop(self, state):
        save(self, state)
        raise Preempted("stopped after the checkpoint (test)")

    monkeypatch.setattr(loop.Checkpoints, "save", save_then_stop)
    with pytest.raises(Preempted):
        main(cfg2, name, exp2, threads=1)
    assert not exp2.method(name).metrics_file.exists() and exp2.method(name).read_progress().step == 4
    monkeypatch.setattr(loop.Checkpoints, "save", save)
    resumed = main(cfg2, name, exp2, threads=1)
    weights = _adapter(exp2, name)
    drift = max(float((weights[k] - t).abs().max()) for k, t in adapter.items())
    print(f"{name}: resume max |w - w_uninterrupted| = {drift:.2g}")
    assert weights.keys() == adapter.keys() and drift <= 1e-6
    assert resumed["final_loss"] == pytest.approx(metrics["final_loss"], abs=1e-6)


# --------------------------------------------------------------------------- two processes (slow)

TWO_PROCESS = ("lora_dora", "lora_pissa", "ia3")
"""A variant of each new code path on 2 ranks: DoRA's magnitudes under DDP, PiSSA's conversion on rank 0, (IA)^3."""


@pytest.mark.slow
@pytest.mark.parametrize("name", TWO_PROCESS)
def test_a_variant_on_two_processes_follows_one_process(name, tiny_model, tmp_path):
    """Same seed and global batch (2 ranks x 4 against 1 x 8): the same losses, and the same saved adapter."""
    import os
    import subprocess
    import sys

    from support import dist_train_entry

    entry = [str(Path(dist_train_entry.__file__)), "train"]
    runs = {}
    for nproc, batch in ((1, 8), (2, 4)):
        _, exp = _variant_experiment(tmp_path / str(nproc), tiny_model, name, batch)
        exp_dir = exp.root
        (exp_dir / "probe").mkdir()
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        done = subprocess.run(
            launcher + entry + [str(exp_dir), name, str(exp_dir / "probe")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[nproc] = exp
    metrics = {n: json.loads(e.method(name).metrics_file.read_text()) for n, e in runs.items()}
    assert metrics[2]["n_devices"] == 2 and metrics[2]["variant"] == SHOWN[name]
    losses = {n: json.loads((e.root / "probe" / "losses.json").read_text()) for n, e in runs.items()}
    diff = max(abs(a - b) for a, b in zip(losses[1], losses[2]))
    one, two = _adapter(runs[1], name), _adapter(runs[2], name)
    drift = max(float((one[k] - t).abs().max()) for k, t in two.items())
    print(f"{name}: 2 ranks vs 1, max |loss diff| = {diff:.2g}, max |adapter diff| = {drift:.2g}")
    assert len(losses[2]) == 8 and diff <= 1e-4 and one.keys() == two.keys() and drift <= 1e-4
