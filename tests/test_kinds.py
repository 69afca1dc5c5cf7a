"""The four kinds added to full SFT, LoRA and QLoRA, on the login side: their config sections and checks,
the preflight's checks against the data and the model, the auxiliary data, memory estimates, report cost.

No torch here (tests/test_kinds_train.py runs the kinds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.cost import memory
from launch.questions.data import load_questions, normalize_question, plan_aux
from launch.results import report
from launch.spec import preflight
from launch.spec.config import ConfigError, build_config, dump_yaml, from_dict, load_config
from support.tools import load_tool

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "cyber_mcq.json"
AUX = REPO / "data" / "sample" / "aux_mcq.json"
LAYERS = 2


def _model_dir(tmp_path: Path) -> Path:
    """A local model directory whose config.json says it has :data:`LAYERS` layers (Llama sizes)."""
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    sizes = {"hidden_size": 64, "num_hidden_layers": LAYERS, "vocab_size": 1000, "intermediate_size": 128}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 4, "model_type": "llama"}
    (model / "config.json").write_text(json.dumps({**sizes, **heads}))
    return model


def _raw(tmp_path: Path, *methods: dict) -> dict:
    return {
        "name": "t",
        "model": {"name_or_path": str(_model_dir(tmp_path))},
        "data": {"train": {"path": str(SAMPLE)}},
        "methods": list(methods),
    }


def _all_problems(raw: dict) -> list[str]:
    """What ``cyberft validate`` reports: the config's problems, then its files' and its data's."""
    cfg, problems = build_config(raw)
    if cfg is None:
        return problems
    found = preflight.check(cfg)
    return problems + found.problems + found.data_problems


AUX_TASK = {"name": "net", "path": str(AUX), "weight": 0.5}


def test_a_valid_config_with_every_new_kind_has_no_problem(tmp_path):
    raw = _raw(
        tmp_path,
        {"name": "fs", "kind": "few_shot", "few_shot": {"k": 8}, "resources": {"gpus_per_node": 0}},
        {"name": "pt", "kind": "prompt_tuning", "batching": "padded", "prompt_tuning": {"style": "p_tuning"}},
        {"name": "fh", "kind": "feature_head", "feature_head": {"layer": -(LAYERS + 1)}},
        {"name": "mt", "kind": "multi_task", "multi_task": {"tasks": [AUX_TASK]}},
    )
    assert _all_problems(raw) == []


@pytest.mark.parametrize(
    "method, fragment",
    [
        ({"kind": "prompt_tuning"}, "batching: packed -> set batching: padded"),
        ({"kind": "prompt_tuning", "batching": "padded", "deepspeed": "ds_configs/zero2.json"}, "DeepSpeed ZeRO"),
        (
            {"kind": "prompt_tuning", "batching": "padded", "prompt_tuning": {"init": "text", "init_text": " "}},
            "init_text: empty",
        ),
        ({"kind": "prompt_tuning", "batching": "padded", "prompt_tuning": {"num_virtual_tokens": 0}}, "at least 1"),
        ({"kind": "few_shot", "few_shot": {"k": 0}}, "few_shot.k: 0"),
        ({"kind": "few_shot", "resources": {"gpus_per_node": 2}}, "few_shot runs on one device"),
        ({"kind": "feature_head", "resources": {"nodes": 2}}, "feature_head runs on one device"),
        ({"kind": "multi_task"}, "multi_task.tasks: empty"),
        ({"kind": "multi_task", "multi_task": {"tasks": [{**AUX_TASK, "weight": 0}]}}, "tasks[0] (net).weight: 0"),
        ({"kind": "multi_task", "multi_task": {"tasks": [{**AUX_TASK, "weight": -1}]}}, "tasks[0] (net).weight: -1"),
        ({"kind": "multi_task", "multi_task": {"tasks": [AUX_TASK], "target_weight": 0}}, "target_weight: 0"),
        ({"kind": "multi_task", "multi_task": {"tasks": [{**AUX_TASK, "name": "target"}]}}, "'target' is reserved"),
        ({"kind": "multi_task", "multi_task": {"tasks": [AUX_TASK, AUX_TASK]}}, "'net' is used twice"),
        ({"kind": "multi_task", "multi_task": {"tasks": [{**AUX_TASK, "path": ""}]}}, "tasks[0].path: empty"),
        ({"kind": "multi_task", "multi_task": {"tasks": [AUX_TASK], "adapt": "qlora"}}, "'qlora' is not allowed"),
        ({"kind": "multi_task", "multi_task": {"tasks": [AUX_TASK]}, "lora": {"target_modules": []}}, "empty"),
        ({"kind": "multi_task", "deepspeed": "ds_configs/zero2.json", "multi_task": {"tasks": [AUX_TASK]}}, "ZeRO"),
    ],
)
def test_bad_settings_of_a_kind_name_the_field(tmp_path, method, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(_raw(tmp_path, {"name": "x", **method}))
    assert any(fragment in p and p.startswith("methods[0] (x)") for p in err.value.problems), err.value.problems


def test_every_problem_of_every_kind_is_listed_at_once(tmp_path):
    raw = _raw(
        tmp_path,
        {"name": "pt", "kind": "prompt_tuning"},
        {"name": "mt", "kind": "multi_task"},
        {"name": "fs", "kind": "few_shot", "resources": {"gpus_per_node": 4}},
    )
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    assert [p.split(":")[0].split(" ")[1] for p in err.value.problems] == [
        "(pt).batching",
        "(mt).multi_task.tasks",
        "(fs)",
    ]


def test_multi_task_with_full_weights_may_use_deepspeed(tmp_path):
    method = {"name": "mt", "kind": "multi_task", "deepspeed": "ds_configs/zero2.json"}
    method["multi_task"] = {"tasks": [AUX_TASK], "adapt": "full"}
    cfg = from_dict(_raw(tmp_path, method))
    assert cfg.methods[0].adapts == "full_sft"
    assert _all_problems(_raw(tmp_path, method)) == []


@pytest.mark.parametrize("layer, ok", [(LAYERS, True), (0, True), (-(LAYERS + 1), True), (LAYERS + 1, False)])
def test_feature_head_layer_is_checked_against_the_model(tmp_path, layer, ok):
    problems = _all_problems(_raw(tmp_path, {"name": "fh", "kind": "feature_head", "feature_head": {"layer": layer}}))
    if ok:
        assert problems == []
    else:
        (p,) = problems
        assert p.startswith(f"methods[0] (fh).feature_head.layer: {layer}, but the model has {LAYERS} layers -> 0")


def test_few_shot_k_is_checked_against_the_training_split(tmp_path):
    raw = _raw(tmp_path, {"name": "fs", "kind": "few_shot", "few_shot": {"k": 100}})
    raw["data"]["max_train"] = 60
    (p,) = _all_problems(raw)
    assert p == "methods[0] (fs).few_shot.k: 100, but the training split has 60 question(s) -> at most 60"
    raw["methods"][0]["few_shot"]["k"] = 60
    assert _all_problems(raw) == []


def test_auxiliary_tasks_are_checked_with_the_data(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"questions": [{"question": "q?", "answers": {"A": "1"}, "solution": "E"}]}))
    raw = _raw(
        tmp_path, {"name": "mt", "kind": "multi_task", "multi_task": {"tasks": [{"name": "b", "path": str(bad)}]}}
    )
    problems = _all_problems(raw)
    assert problems and all(p.startswith("methods.mt.multi_task.tasks (b): ") for p in problems), problems
    raw["methods"][0]["multi_task"]["tasks"][0]["path"] = str(tmp_path / "gone.json")
    (p,) = _all_problems(raw)
    assert p.startswith("methods[0] (mt).multi_task.tasks[0].path:") and "does not exist" in p


def test_auxiliary_questions_in_the_eval_split_are_dropped(tmp_path):
    aux = load_questions(_source(AUX))
    eval_ = aux[:5] + load_questions(_source(SAMPLE))[:5]
    cfg = from_dict(_raw(tmp_path, {"name": "mt", "kind": "multi_task", "multi_task": {"tasks": [AUX_TASK]}}))
    planned = plan_aux(cfg.methods, eval_)["mt"]["net"]
    assert planned.dropped == 5 and len(planned.questions) == len(aux) - 5
    in_eval = {normalize_question(q.question) for q in eval_}
    assert not any(normalize_question(q.question) in in_eval for q in planned.questions)


def _source(path: Path):
    from launch.spec.config import DataSource

    return DataSource(path=str(path))


def test_the_auxiliary_sample_set_is_committed_as_generated_and_shares_no_question(tmp_path):
    sample_data = load_tool("sample_data")
    assert sample_data.main([str(tmp_path / "aux.json"), "--set", "aux"]) == 0
    assert (tmp_path / "aux.json").read_bytes() == AUX.read_bytes(), (
        "data/sample/aux_mcq.json is stale -> python tools/sample_data.py data/sample/aux_mcq.json --set aux"
    )
    target = {normalize_question(q.question) for q in load_questions(_source(SAMPLE))}
    aux = load_questions(_source(AUX))
    assert len(aux) >= 200 and not any(normalize_question(q.question) in target for q in aux)


def test_sections_of_other_kinds_are_left_out_of_the_written_config(tmp_path):
    raw = _raw(tmp_path, {"name": "l", "kind": "lora"}, {"name": "fs", "kind": "few_shot", "few_shot": {"k": 2}})
    written = dump_yaml(from_dict(raw))
    assert "prompt_tuning" not in written and "feature_head:" not in written and "multi_task:" not in written
    path = tmp_path / "c.yaml"
    path.write_text(written)
    assert load_config(path) == from_dict(raw)


# --------------------------------------------------------------------------- memory and cost


@pytest.fixture(scope="module")
def shape8b():
    return memory.model_shape("meta-llama/Meta-Llama-3-8B-Instruct")


def _method(tmp_path: Path, **method):
    return from_dict(_raw(tmp_path, {"name": "x", **method})).methods[0]


def test_memory_of_each_new_kind(shape8b, tmp_path):
    h = shape8b.hidden_size
    lora = memory.estimate(shape8b, _method(tmp_path, kind="lora"), 2048)
    few = memory.estimate(shape8b, _method(tmp_path, kind="few_shot"), 2048)
    head = memory.estimate(shape8b, _method(tmp_path, kind="feature_head"), 2048)
    soft = memory.estimate(shape8b, _method(tmp_path, kind="prompt_tuning", batching="padded"), 2048)
    p_tuning = memory.estimate(
        shape8b, _method(tmp_path, kind="prompt_tuning", batching="padded", prompt_tuning={"style": "p_tuning"}), 2048
    )
    multi = memory.estimate(shape8b, _method(tmp_path, kind="multi_task", multi_task={"tasks": [AUX_TASK]}), 2048)
    assert (few.trainable_params, head.trainable_params, soft.trainable_params) == (0, 4 * (h + 1), 20 * h)
    assert p_tuning.trainable_params == 20 * h + (h * 128 + 128) + (128 * 128 + 128) + (128 * h + h)
    assert multi.total_gb == lora.total_gb and multi.kind == "lora"
    # Forward-only kinds hold the weights and no optimizer; all below LoRA's training, above the weights alone.
    for est in (few, head):
        assert shape8b.n_params * 2 / 2**30 < est.total_gb < lora.total_gb, est.line()
    assert "few-shot" in few.setup and "feature head" in head.setup and "soft prompt" in soft.setup


def test_few_shot_cost_is_its_own_scoring_time():
    rows = [
        {"method": "few", "kind": "few_shot", "cpu_hours": 0.0, "gpu_hours": None, "cost_source": "local"},
        {"method": "lora", "kind": "lora", "cpu_hours": 0.5, "gpu_hours": None, "cost_source": "local"},
    ]
    results = {"few": {"load_s": 6.0, "eval_s": 30.0}, "lora": {"load_s": 1.0, "eval_s": 10.0}, "base": {}}
    report.add_scoring_cost(rows, results, gpus=2, threads=4, price_per_gpu_hour=3.0)
    few, lora = rows
    assert few["scoring_s"] == 36.0 and few["gpu_hours"] == pytest.approx(36 * 2 / 3600)
    assert few["cpu_hours"] == pytest.approx(36 * 4 / 3600) and few["cost"] == pytest.approx(36 * 2 / 3600 * 3.0)
    assert few["cost_source"] == "local + eval scoring"
    assert lora == {"method": "lora", "kind": "lora", "cpu_hours": 0.5, "gpu_hours": None, "cost_source": "local"}


def test_the_dry_run_estimates_every_kind_few_shot_in_the_evaluation_job(tmp_path):
    from launch.run import submit
    from launch.site.profiles import load_profile

    methods = [
        {"name": "fs", "kind": "few_shot", "resources": {"gpus_per_node": 0}},
        {"name": "pt", "kind": "prompt_tuning", "batching": "padded"},
        {"name": "fh", "kind": "feature_head"},
        {"name": "mt", "kind": "multi_task", "multi_task": {"tasks": [AUX_TASK]}},
    ]
    cfg = from_dict(_raw(tmp_path, *methods))
    lines, problems = submit._memory_problems(cfg, load_profile("dev"))
    assert [line.split(":")[0] for line in lines] == ["fs", "pt", "fh", "mt"] and problems == []
    assert "few-shot: the base model scoring" in lines[0]
