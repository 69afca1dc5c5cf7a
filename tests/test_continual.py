"""Continual re-training (``init_from``): its checks before anything runs, and a real two-round study.

The checks run on experiment directories made as ``cyberft run`` makes them, with the training's
records written by hand (completed, failed, another model, another kind). The study trains the
tiny model on the first topic of the sample data (cybersecurity), continues LoRA and full SFT on the
second (networking), and checks that the report pairs each continued row with the result it
started from on both question sets.
"""

from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

import pytest

from launch import cli
from launch.spec import preflight
from launch.spec.config import ConfigError, load_config
from launch.store.expdir import ExperimentDir, TrainMetrics, parse_result_ref, result_dir
from launch.store.fsio import read_json
from support.experiments import new_experiment

REPO = Path(__file__).resolve().parents[1]
ROUND1 = REPO / "configs" / "smoke-continual-round1.yaml"
ROUND2 = REPO / "configs" / "smoke-continual-round2.yaml"
QUICK = ["tracking.backend=none", "data.max_train=48", "data.max_eval=24"]
"""A round small enough for the suite: 48 training and 24 eval questions."""


def _quick_steps(steps: int) -> list[str]:
    return [f"methods.{m}.{k}" for m in ("lora", "full_sft") for k in (f"max_steps={steps}", "micro_batch_size=8")]


def _round1(tiny_model: Path, root: Path, extra: tp.Sequence[str] = ()) -> ExperimentDir:
    """Round 1's experiment directory, config and data split on disk, nothing trained."""
    overrides = [f"model.name_or_path={tiny_model}", f"output_dir={root}", *QUICK, *extra]
    return new_experiment(overrides, ROUND1)[1]


def _trained(exp: ExperimentDir, method: str, status: str = "completed") -> None:
    """Write what a finished training job leaves: its record and (completed) its result folder."""
    cfg = exp.load_config()
    m = cfg.method(method)
    exp.method(method).write_metrics(
        TrainMetrics(method, kind=m.kind, status=status, error="boom" * (status != "completed"))
    )
    if status == "completed":
        saved = result_dir(f"{exp.root}:{method}", m.adapts)
        saved.mkdir(parents=True)
        (saved / ("adapter_config.json" if m.adapts == "lora" else "config.json")).write_text("{}")


def _round2(tiny_model: Path, root: Path, lora: str, full: str, extra: tp.Sequence[str] = ()) -> tp.Any:
    overrides = [f"model.name_or_path={tiny_model}", f"output_dir={root}", *QUICK, *extra]
    overrides += [f"methods.lora.init_from={lora}", f"methods.full_sft.init_from={full}"]
    return load_config(ROUND2, overrides)


# --------------------------------------------------------------------------- the config's own checks


@pytest.mark.parametrize(
    "kind, extra, expected",
    [
        ("qlora", [], "init_from: 'x:lora' with kind qlora -> remove init_from, or use kind: lora"),
        ("feature_head", [], "with kind feature_head -> remove init_from"),
        ("lora", ["methods.lora.lora.init=pissa"], "with lora.init: pissa -> set lora.init: default"),
    ],
)
def test_kinds_that_cannot_continue_are_refused_by_the_config(kind, extra, expected):
    with pytest.raises(ConfigError) as err:
        load_config(ROUND1, [f"methods.lora.kind={kind}", "methods.lora.init_from=x:lora", *extra])
    (problem,) = err.value.problems
    assert problem.startswith("methods[0] (lora).init_from:") and expected in problem, problem


def test_an_empty_init_from_is_refused_and_null_leaves_the_config_as_it_was():
    with pytest.raises(ConfigError) as err:
        load_config(ROUND1, ["methods.lora.init_from=''"])
    assert "methods[0] (lora).init_from: empty -> null to start from model, EXP_DIR:method" in err.value.problems[0]
    from launch.spec.config import dump_yaml

    assert "init_from" not in dump_yaml(load_config(ROUND1))  # hashes of configs without it do not change


def test_result_references_parse_as_experiment_and_method_or_as_a_path(tmp_path):
    assert parse_result_ref(f"{tmp_path}/round1-x:lora[3]") == (ExperimentDir(tmp_path / "round1-x"), "lora[3]")
    assert parse_result_ref(str(tmp_path)) is None  # an existing folder is a path, even with a colon in its name
    colon = tmp_path / "a:b"
    colon.mkdir()
    assert parse_result_ref(str(colon)) is None
    assert result_dir(f"{tmp_path}/e:full", "full_sft") == ExperimentDir(tmp_path / "e").method("full").model_dir
    assert result_dir(f"{tmp_path}/e:lora", "lora") == ExperimentDir(tmp_path / "e").method("lora").adapter_dir


# --------------------------------------------------------------------------- the checks before anything runs


def test_a_completed_result_of_the_same_model_and_kind_passes(tiny_model, tmp_path):
    exp = _round1(tiny_model, tmp_path / "runs")
    _trained(exp, "lora")
    _trained(exp, "full_sft")
    cfg = _round2(tiny_model, tmp_path / "runs", f"{exp.root}:lora", f"{exp.root}:full_sft")
    assert preflight.continual_problems(cfg) == []


def test_missing_results_are_named_with_the_fix(tiny_model, tmp_path):
    exp = _round1(tiny_model, tmp_path / "runs")
    cfg = _round2(tiny_model, tmp_path / "runs", f"{tmp_path}/nowhere:lora", str(tmp_path / "no-such-model"))
    lora, full = preflight.continual_problems(cfg)
    assert lora.startswith("methods[0] (lora).init_from: '") and "nowhere:lora' names no experiment directory" in lora
    assert "-> EXP_DIR:method (an experiment directory and one of its methods)" in lora
    assert full.startswith("methods[1] (full_sft).init_from:") and "does not exist -> EXP_DIR:method" in full
    cfg = _round2(tiny_model, tmp_path / "runs", f"{exp.root}:qlora", f"{exp.root}:full_sft")
    problems = preflight.continual_problems(cfg)
    assert "no cell 'qlora' in this experiment -> one of: lora, full_sft" in problems[0], problems


def test_an_incomplete_result_is_refused(tiny_model, tmp_path):
    exp = _round1(tiny_model, tmp_path / "runs")
    _trained(exp, "lora", status="failed")  # and full_sft never wrote a record
    cfg = _round2(tiny_model, tmp_path / "runs", f"{exp.root}:lora", f"{exp.root}:full_sft")
    lora, full = preflight.continual_problems(cfg)
    assert "did not complete (its training is failed) -> continue from a completed method" in lora
    assert "did not complete (its training is missing)" in full and f"cyberft resume '{exp.root}')" in full


def test_a_result_of_another_base_model_is_refused(tiny_model, tmp_path):
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text((tiny_model / "config.json").read_text())
    exp = _round1(other, tmp_path / "runs")
    _trained(exp, "lora")
    _trained(exp, "full_sft")
    cfg = _round2(tiny_model, tmp_path / "runs", f"{exp.root}:lora", f"{exp.root}:full_sft")
    problems = preflight.continual_problems(cfg)
    assert len(problems) == 2
    for p in problems:
        assert "other-model', not on this config's '" in p and "tiny-llama' -> set model.name_or_path" in p
        assert "-> set model.name_or_path to the earlier experiment's" in p


def test_incompatible_kinds_are_refused_with_the_kind_that_fits(tiny_model, tmp_path):
    exp = _round1(tiny_model, tmp_path / "runs", ["methods.full_sft.kind=qlora"])
    for m in ("lora", "full_sft"):
        _trained(exp, m)
    # full SFT from a LoRA adapter, LoRA from a QLoRA adapter (the method named full_sft is a qlora there)
    cfg = _round2(tiny_model, tmp_path / "runs", f"{exp.root}:full_sft", f"{exp.root}:lora")
    lora, full = preflight.continual_problems(cfg)
    assert "is a qlora result, which neither a lora nor a full_sft method can continue -> give a lora result" in lora
    assert "is a LoRA adapter (lora), but kind full_sft continues a full model -> use kind: lora" in full


def test_an_adapter_of_another_shape_is_refused(tiny_model, tmp_path):
    exp = _round1(tiny_model, tmp_path / "runs")
    _trained(exp, "lora")
    _trained(exp, "full_sft")
    cfg = _round2(tiny_model, tmp_path / "runs", f"{exp.root}:lora", f"{exp.root}:full_sft", ["methods.lora.lora.r=8"])
    (problem,) = preflight.continual_problems(cfg)
    assert "is an adapter with lora {'r': 16" in problem and "but this method's lora is {'r': 8" in problem
    assert "-> set lora to the earlier method's" in problem


def test_saved_folders_given_by_path_are_checked_too(tiny_model, tmp_path):
    adapter, model = tmp_path / "adapter", tmp_path / "model"
    adapter.mkdir()
    model.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "/elsewhere/llama", "r": 16, "lora_alpha": 32})
    )
    shape = json.loads((tiny_model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**shape, "hidden_size": shape["hidden_size"] * 2}))
    cfg = _round2(tiny_model, tmp_path / "runs", str(adapter), str(model))
    lora, weights, full, other = preflight.continual_problems(cfg)
    assert "is an adapter for model '/elsewhere/llama', not this config's" in lora
    assert "has no adapter weights (adapter_model.*): its training did not complete" in weights
    assert "has no weights (*.safetensors)" in full
    assert "is not a fine-tune of this config's model (hidden_size" in other


def test_validate_lists_every_problem_and_exits_2(tiny_model, tmp_path, capsys, monkeypatch):
    """The shipped round-2 config with its placeholders: both methods refused in one report, nothing made."""
    monkeypatch.chdir(REPO)
    assert cli.main(["validate", str(ROUND2), f"model.name_or_path={tiny_model}", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "methods[0] (lora).init_from: 'runs/smoke-continual-round1-TIME:lora' names no experiment directory" in err
    assert "methods[1] (full_sft).init_from: 'runs/smoke-continual-round1-TIME:full_sft' names no experiment" in err
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- a real two-round study


def _run(exp: ExperimentDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train every method, then the evaluation job, in this process (as the local runner's jobs do)."""
    import torch

    from launch.jobs import EvalJob, TrainJob

    threads = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"):  # the jobs set them
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    try:
        for m in exp.load_config().methods:
            TrainJob(exp, m.name, threads=1)()
        EvalJob(exp, threads=1)()
    finally:
        torch.set_num_threads(threads)


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    (path,) = [p for p in folder.glob("*.safetensors")]
    return load_file(str(path))


def _distance(a: dict, b: dict) -> float:
    return sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in a) ** 0.5


@pytest.fixture(scope="module")
def study(tiny_model, tmp_path_factory) -> tuple[ExperimentDir, ExperimentDir]:
    """Round 1 (cybersecurity) and round 2 (networking, continuing round 1's LoRA and full SFT), trained and scored."""
    root = tmp_path_factory.mktemp("continual") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        first = _round1(tiny_model, root, _quick_steps(30))
        _run(first, mp)
        cfg = _round2(tiny_model, root, f"{first.root}:lora", f"{first.root}:full_sft", _quick_steps(10))
        assert preflight.continual_problems(cfg) == []
        from launch.questions.data import prepare_splits
        from launch.store import experiment

        cfg = experiment.resolve_paths(cfg)
        second = experiment.create(cfg, str(ROUND2), [])
        prepare_splits(cfg.data, second.data.root, progress=False)
        _run(second, mp)
    return first, second


def test_round_two_starts_from_round_one(study, tiny_model):
    first, second = study
    for m, folder in (("lora", "adapter_dir"), ("full_sft", "model_dir")):
        r1, r2 = (_tensors(getattr(e.method(m), folder)) for e in study)
        start = {k: v * 0 for k, v in r1.items()} if m == "lora" else _tensors(tiny_model)
        if m == "lora":  # lora_A starts random, lora_B at zero: B alone tells a continued adapter from a fresh one
            r1, r2, start = ({k: v for k, v in t.items() if "lora_B" in k} for t in (r1, r2, start))
        # 10 more steps moved the weights far less than round 1 moved them from where a fresh run starts
        # (measured 0.34 of it for LoRA, 0.43 for full SFT; a fresh start would be about 1 or more away).
        assert 0 < _distance(r2, r1) < 0.7 * _distance(r1, start), m


def test_the_earlier_result_scores_as_in_its_own_experiment(study):
    """What round 2 calls the earlier result on the old questions is round 1's model on round 1's questions."""
    first, second = study
    for m in ("lora", "full_sft"):
        own = [(p["gold"], p["pred"]) for p in first.eval.read_predictions(m)]
        again = [(p["gold"], p["pred"]) for p in second.eval.continual(m, "old").read_predictions("earlier")]
        assert own == again and len(own) == 24, m
    base = [p["pred"] for p in first.eval.read_predictions("base")]
    assert [p["pred"] for p in second.eval.continual("lora", "old").read_predictions("base")] == base


def test_the_report_shows_forgetting_and_gain_with_paired_intervals(study):
    first, second = study
    summary = read_json(second.summary_file)
    entries = {e["row"]: e for e in summary["continual"]}
    assert set(entries) == {"lora", "full_sft"}
    for m, e in entries.items():
        assert e["from"] == f"{first.name}:{m}" and e["old"]["n"] == 24 and e["new"]["n"] == 24
        old = [p["correct"] for p in second.eval.continual(m, "old").read_predictions("continued")]
        assert e["old"]["continued"] == sum(old) / len(old)
        assert e["old"]["earlier"] == read_json(first.eval.result_file(m))["accuracy"]
        assert e["new"]["continued"] == read_json(second.eval.result_file(m))["accuracy"]
        for key, split in (("forgetting", "old"), ("gain", "new")):
            c = e[key]
            assert c["test"] == "mcnemar" and c["n"] == 24
            assert c["diff"] == pytest.approx(e[split]["continued"] - e[split]["earlier"])
            assert -1 <= c["lo"] <= c["hi"] <= 1 and c["p"] <= c["p_holm"] <= 1
            assert c["text"].startswith(f"{m} vs {first.name}:{m}: ") and c["text"].endswith(f"{split} questions (24)")
    assert "Holm-adjusted over these 4 comparison(s)" in summary["continual_note"]
    md = second.report_md.read_text()
    assert "## Continual re-training: forgetting and gain" in md
    assert "| change on old (forgetting) |" in md and "| gain on new |" in md
    shown = _change(entries["lora"]["forgetting"])
    assert f"| lora | {first.name}:lora | n 24: base " in md and shown in md
    printed = cli_report(second)
    assert "Continual re-training:" in printed and shown in printed
    assert "Continual re-training" not in first.report_md.read_text()  # an experiment without init_from: as before
    assert "continual" not in read_json(first.summary_file)


def _change(c: dict) -> str:
    return f"{100 * c['diff']:+.1f} pts [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"


def cli_report(exp: ExperimentDir) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["report", str(exp)]) == 0
    return out.getvalue()
