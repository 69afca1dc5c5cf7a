"""Tests of launch/spec/sweep.py: the sweep section, its checks and its expansion into cells."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from launch.spec import config, sweep
from launch.spec.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
GRID = {"methods.lora.learning_rate": [1.0e-4, 2.0e-4], "methods.lora.lora.r": [8, 16]}


@pytest.fixture
def cfg() -> config.ExperimentConfig:
    """The smoke config's full_sft, lora and qlora (no file is read beyond the YAML)."""
    smoke = config.load_config(REPO / "configs" / "smoke.yaml")
    return dataclasses.replace(smoke, methods=[m for m in smoke.methods if m.kind in ("full_sft", "lora", "qlora")])


def _sweep(raw: dict) -> sweep.SweepConfig:
    problems: list[str] = []
    parsed = sweep.parse(raw, problems)
    assert not problems, problems
    return parsed


def test_expand_orders_cells_and_applies_each_point(cfg):
    cells = sweep.expand(cfg, _sweep({"seeds": [0, 1, 2], "grid": GRID, "max_parallel": 4}))
    assert [c.id for c in cells] == (
        [f"full_sft[{i}]" for i in range(3)] + [f"lora[{i}]" for i in range(12)] + [f"qlora[{i}]" for i in range(3)]
    )
    lora = [c for c in cells if c.method == "lora"]
    # The first grid entry varies slowest, seeds fastest.
    assert [(c.config.learning_rate, c.config.lora.r, c.seed) for c in lora[:7]] == [
        (1e-4, 8, 0),
        (1e-4, 8, 1),
        (1e-4, 8, 2),
        (1e-4, 16, 0),
        (1e-4, 16, 1),
        (1e-4, 16, 2),
        (2e-4, 8, 0),
    ]
    assert lora[3].point == {"learning_rate": 1e-4, "lora.r": 16}
    assert lora[3].point_label == "learning_rate=0.0001, lora.r=16"
    assert lora[3].group == "lora (learning_rate=0.0001, lora.r=16)"
    # Methods without grid entries keep their own values, once per seed.
    full = [c for c in cells if c.method == "full_sft"]
    assert [(c.seed, c.point, c.group) for c in full] == [(0, {}, "full_sft"), (1, {}, "full_sft"), (2, {}, "full_sft")]
    assert all(c.config == cfg.method("full_sft") for c in full)


def test_cells_are_independent_copies(cfg):
    before = copy.deepcopy(cfg)
    cells = sweep.expand(cfg, _sweep({"seeds": [0, 1], "grid": GRID}))
    cells[0].config.lora.target_modules = ["q_proj"]
    cells[0].config.resources.nodes = 7
    assert cfg == before
    assert cells[1].config.lora.target_modules == "all-linear" and cells[1].config.resources.nodes == 1
    assert sweep.expand(cfg, _sweep({"seeds": [0, 1], "grid": GRID}))[0].config.lora.target_modules == "all-linear"


def test_expand_is_deterministic(cfg):
    s = _sweep({"seeds": [2, 0], "grid": GRID})
    first, second = sweep.expand(cfg, s), sweep.expand(cfg, s)
    assert [(c.id, c.seed, c.point) for c in first] == [(c.id, c.seed, c.point) for c in second]
    assert [c.seed for c in first[:2]] == [2, 0]  # seeds in the order listed


def test_no_sweep_and_no_seeds_mean_the_experiment_seed(cfg):
    cfg.seed = 41
    # Without a sweep each method is one cell addressed by its name: the layout and names of an
    # experiment without a sweep stay what they were.
    assert [(c.id, c.index, c.seed, c.point, c.swept) for c in sweep.expand(cfg, None)] == [
        ("full_sft", 0, 41, {}, False),
        ("lora", 0, 41, {}, False),
        ("qlora", 0, 41, {}, False),
    ]
    assert [c.id for c in sweep.select(sweep.expand(cfg, None), "lora[0]")] == ["lora"]
    cells = sweep.expand(cfg, _sweep({"grid": {"methods.qlora.max_steps": [10, 20]}}))
    assert [(c.id, c.seed, c.config.max_steps) for c in cells if c.method == "qlora"] == [
        ("qlora[0]", 41, 10),
        ("qlora[1]", 41, 20),
    ]


def test_summary_text(cfg):
    s = _sweep({"seeds": [0, 1, 2], "grid": GRID, "max_parallel": 4})
    assert sweep.summary(cfg, s) == (
        "sweep: 18 cells in 3 submissions (at most 4 running per method)\n"
        "  full_sft: 3 seeds = 3 cells\n"
        "  lora: 2 learning_rate x 2 r x 3 seeds = 12 cells\n"
        "  qlora: 3 seeds = 3 cells"
    )
    assert sweep.summary(cfg, None).splitlines()[:2] == [
        "sweep: 3 cells in 3 submissions",
        "  full_sft: 1 seed = 1 cell",
    ]
    nested = _sweep({"grid": {"methods.lora.checkpoint.every_steps": [10, 20], "methods.lora.max_steps": [50]}})
    assert "  lora: 2 every_steps x 1 max_steps x 1 seed = 2 cells" in sweep.summary(cfg, nested)
    # Two fields with the same last name (none in today's MethodConfig) would be shown in full.
    axes = [sweep.Axis("m", "lora.dropout", (0.0, 0.1), "k1"), sweep.Axis("m", "dropout", (0.0,), "k2")]
    assert sweep._count_text(axes, "m", 2) == "2 lora.dropout x 1 dropout x 2 seeds = 4 cells"


def test_every_problem_is_reported_at_once(cfg):
    raw = {
        "seeds": [0, 0, 3],
        "grid": {
            "methods.lora.learning_rate": [0, "x", 1e-4, 1e-4],
            "methods.lroa.learning_rate": [1e-4],
            "methods.lora.lora": [8],
            "methods.lora.lora.rank": [8],
            "methods.lora.resources.nodes": [2],
            "methods.lora.kind": ["qlora"],
            "methods.lora.name": ["other"],
            "model.dtype": ["float32"],
            "methods.lora.warmup_ratio": 0.1,
            "methods.lora.precision": ["bf17"],
            "methods.full_sft.max_steps": [None, 100],
            "methods.qlora.learning_rate.x": [1],
        },
    }
    problems = sweep.check(cfg, _sweep(raw))
    expected = [
        "sweep.seeds: 0 is listed 2 times -> list each seed once",
        "sweep.grid.methods.lora.learning_rate[0]: 0.0 -> a positive number such as 2e-4",
        "sweep.grid.methods.lora.learning_rate[1]: expected a number, got str 'x'",
        "sweep.grid.methods.lora.learning_rate[3]: 0.0001 is listed twice -> list each value once",
        "sweep.grid.methods.lroa.learning_rate: no method 'lroa' -> did you mean 'lora'?",
        "sweep.grid.methods.lora.lora: lora is a section -> vary one of its fields: lora.r, lora.alpha",
        "sweep.grid.methods.lora.lora.rank: no field 'rank' in LoraSettings -> LoraSettings fields: r, alpha, dropout",
        "sweep.grid.methods.lora.resources.nodes: resources cannot vary in a sweep",
        "sweep.grid.methods.lora.kind: kind cannot vary in a sweep",
        "sweep.grid.methods.lora.name: name cannot vary in a sweep",
        "sweep.grid.model.dtype: not a method field -> keys are methods.<method>.<field>",
        "sweep.grid.methods.lora.warmup_ratio: expected a non-empty list of values, got float 0.1",
        "sweep.grid.methods.lora.precision[0]: 'bf17' is not allowed -> did you mean 'bf16'?",
        # full_sft has epochs 1.0: max_steps null is fine there, so no problem from that entry.
        "sweep.grid.methods.qlora.learning_rate.x: learning_rate is a value, not a section",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected), problems
    with pytest.raises(ConfigError) as err:
        sweep.expand(cfg, _sweep(raw))
    assert err.value.problems == problems


def test_grid_points_get_the_configs_own_cross_field_checks(cfg):
    # epochs 0 is in the field's range, but without max_steps the config refuses it.
    s = _sweep({"grid": {"methods.full_sft.max_steps": [None, 100], "methods.full_sft.epochs": [0.0, 1.0]}})
    assert sweep.check(cfg, s) == [
        "sweep.grid at max_steps=None, epochs=0.0: methods[0] (full_sft).epochs: 0.0 -> positive, or set max_steps"
    ]
    s = _sweep({"grid": {"methods.lora.lora.target_modules": [["q_proj", "v_proj"], [], "all-linear"]}})
    (problem,) = sweep.check(cfg, s)
    assert problem.startswith("sweep.grid at lora.target_modules=[]: methods[1] (lora).lora.target_modules: empty")


def test_values_take_the_field_type(cfg):
    s = _sweep(
        {
            "grid": {
                "methods.lora.lora.target_modules": [["q_proj", "v_proj"], "all-linear"],
                "methods.lora.max_steps": [None, 5],
            }
        }
    )
    cells = sweep.expand(cfg, s)
    lora = [c.config for c in cells if c.method == "lora"]
    assert [(m.lora.target_modules, m.max_steps) for m in lora] == [
        (["q_proj", "v_proj"], None),
        (["q_proj", "v_proj"], 5),
        ("all-linear", None),
        ("all-linear", 5),
    ]
    # An int where a float is expected is a number; a float where an int is expected is not.
    assert sweep.check(cfg, _sweep({"grid": {"methods.lora.learning_rate": [1]}})) == []
    (problem,) = sweep.check(cfg, _sweep({"grid": {"methods.lora.lora.r": [8.5]}}))
    assert problem.startswith("sweep.grid.methods.lora.lora.r[0]: expected an integer, got float 8.5")


def test_nested_grid_and_overrides(cfg):
    nested = _sweep({"grid": {"methods": {"lora": {"learning_rate": [1e-4, 2e-4], "lora": {"r": [8, 16]}}}}})
    flat = _sweep({"grid": GRID})
    assert [(c.id, c.point) for c in sweep.expand(cfg, nested)] == [(c.id, c.point) for c in sweep.expand(cfg, flat)]
    # An override of one grid key nests it (config.apply_overrides splits at dots): alone it works...
    problems: list[str] = []
    raw = config.apply_overrides({"sweep": {}}, ["sweep.grid.methods.lora.lora.r=[4, 8]"], problems)
    cells = sweep.expand(cfg, sweep.parse(raw["sweep"], problems))
    assert [c.point for c in sweep.select(cells, "lora")] == [{"lora.r": 4}, {"lora.r": 8}]
    # ...and next to the same key written flat it is a problem, not a silent choice; the fix is to
    # replace the whole grid.
    raw = config.apply_overrides({"sweep": {"grid": dict(GRID)}}, ["sweep.grid.methods.lora.lora.r=[4]"], problems)
    assert sweep.check(cfg, sweep.parse(raw["sweep"], problems)) == [
        "sweep.grid.methods.lora.lora.r: given twice (as a dotted key and nested) -> keep one"
    ]
    raw = config.apply_overrides({"sweep": {"grid": dict(GRID)}}, ["sweep.grid={methods.lora.lora.r: [4]}"], problems)
    assert sweep.summary(cfg, sweep.parse(raw["sweep"], problems)).splitlines()[2] == "  lora: 1 r x 1 seed = 1 cell"
    assert problems == []


def test_method_names_with_dots(cfg):
    cfg.methods.append(dataclasses_replace(cfg.method("lora"), name="lora.v2"))
    cells = sweep.expand(
        cfg, _sweep({"grid": {"methods.lora.v2.learning_rate": [1e-3, 2e-3], "methods.lora.lora.r": [4]}})
    )
    assert [(c.id, c.config.learning_rate, c.config.lora.r) for c in cells if c.method.startswith("lora")] == [
        ("lora[0]", 3e-3, 4),
        ("lora.v2[0]", 1e-3, 16),
        ("lora.v2[1]", 2e-3, 16),
    ]


@dataclasses.dataclass
class _Inner:
    r: int = 1


@dataclasses.dataclass
class _Outer:
    r: int = 1
    lora: _Inner = dataclasses.field(default_factory=_Inner)


def test_a_key_that_fits_two_methods_is_refused(monkeypatch):
    # Methods "a" and "a.lora": methods.a.lora.r is field lora.r of "a" and would be field r of
    # "a.lora" if MethodConfig had a top-level r (it has not today: patched in).
    monkeypatch.setattr(sweep, "MethodConfig", _Outer)
    two = config.ExperimentConfig(methods=[config.MethodConfig(name="a"), config.MethodConfig(name="a.lora")])
    problems: list[str] = []
    assert sweep.resolve(two, _sweep({"grid": {"methods.a.lora.r": [2]}}), problems) == []
    assert problems == ["sweep.grid.methods.a.lora.r: names a field of methods a, a.lora -> rename one of them"]


def dataclasses_replace(obj, **changes):
    return dataclasses.replace(copy.deepcopy(obj), **changes)


def test_parse_types_the_section():
    problems: list[str] = []
    assert sweep.parse(None, problems) is None
    assert sweep.parse([1, 2], problems) is None
    parsed = sweep.parse({"seeds": [1, -1], "max_parallel": 0, "grdi": {}}, problems)
    assert parsed is not None and parsed.seeds == [1]
    assert problems[0].startswith("sweep: expected a mapping, got list")
    assert any(p.startswith("sweep.seeds[1]: -1 -> a whole number from 0") for p in problems)
    assert any(p.startswith("sweep.max_parallel: 0 -> at least 1") for p in problems)
    assert any(p == "sweep.grdi: unknown key -> did you mean 'grid'?" for p in problems)
    problems.clear()
    assert sweep.check(
        config.ExperimentConfig(methods=[config.MethodConfig(name="m")]), sweep.parse({"seeds": []}, problems)
    )[0].startswith("sweep.seeds: empty")


def test_too_many_cells_is_refused_before_expanding(cfg):
    # 20^5 = 3.2 million grid points: refused from the counts, never built.
    grid = {
        f"methods.lora.{f}": list(range(1, 21))
        for f in ("lora.r", "lora.alpha", "max_steps", "micro_batch_size", "grad_accum_steps")
    }
    (problem,) = sweep.check(cfg, _sweep({"seeds": [0, 1], "grid": grid}))
    assert problem.startswith(
        "sweep: methods.lora has 20 r x 20 alpha x 20 max_steps x 20 micro_batch_size x "
        "20 grad_accum_steps x 2 seeds = 6400000 cells -> at most 1001 cells per method"
    )
    ok = _sweep({"seeds": list(range(7)), "grid": {"methods.lora.lora.r": list(range(1, 144))}})
    assert len(sweep.expand(cfg, ok)) == 7 * 143 + 7 + 7


def test_secret_shaped_values_are_refused_unshown(cfg):
    token = "hf_" + "a1B2c3D4e5" * 4
    problems = sweep.check(cfg, _sweep({"grid": {"methods.full_sft.deepspeed": [token]}}))
    assert problems and all(token not in p for p in problems)


def test_select_arrays_and_groups(cfg):
    cells = sweep.expand(cfg, _sweep({"seeds": [0, 1, 2], "grid": {"methods.lora.learning_rate": [1e-4, 2e-4]}}))
    assert [c.id for c in sweep.select(cells, "lora")] == [f"lora[{i}]" for i in range(6)]
    assert [c.id for c in sweep.select(cells, "lora[4]")] == ["lora[4]"]
    with pytest.raises(
        ValueError,
        match=r"no method or cell 'lora\[6\]' -> a method name or a cell: "
        r"full_sft\[0-2\], lora\[0-5\], qlora\[0-2\]",
    ):
        sweep.select(cells, "lora[6]")
    with pytest.raises(ValueError, match="no method or cell 'base'"):
        sweep.select(cells, "base")
    with pytest.raises(ValueError, match=r"-> a method name or a cell: full_sft, lora, qlora$"):
        sweep.select(sweep.expand(cfg, None), "lora[1]")
    arrays = sweep.arrays(list(reversed(cells)))
    assert list(arrays) == ["qlora", "lora", "full_sft"]
    assert [c.index for c in arrays["lora"]] == list(range(6))
    groups = sweep.groups(cells)
    assert list(groups) == ["full_sft", "lora (learning_rate=0.0001)", "lora (learning_rate=0.0002)", "qlora"]
    assert [c.seed for c in groups["lora (learning_rate=0.0002)"]] == [0, 1, 2]


def test_locate_gives_the_cells_view_of_the_config(cfg):
    cfg.sweep = _sweep({"seeds": [5, 6], "grid": {"methods.lora.learning_rate": [1e-4, 2e-4]}})
    view, cell = sweep.locate(cfg, "lora[3]")
    assert (cell.id, cell.seed, cell.point) == ("lora[3]", 6, {"learning_rate": 2e-4})
    assert view.seed == 6 and view.method("lora").learning_rate == 2e-4
    # The address names the method in the view (what an entrypoint's cfg.method(name) does).
    assert view.method("lora[3]") is view.method("lora")
    assert view.method("full_sft") == cfg.method("full_sft") and cfg.method("lora").learning_rate == 3e-3
    # Expanding the view again gives the same cells: a job may locate its cell in either config.
    assert [(c.id, c.seed, c.point) for c in sweep.cells(view)] == [(c.id, c.seed, c.point) for c in sweep.cells(cfg)]
    assert cell.tags == ["method:lora", "seed:6", "learning_rate:0.0002"]
    with pytest.raises(KeyError, match=r"no cell 'lora' in this experiment -> one of: full_sft\[0-1\], lora\[0-3\]"):
        sweep.locate(cfg, "lora")
    cfg.sweep = None
    assert sweep.locate(cfg, "lora")[0] == cfg


def test_sweep_imports_no_torch():
    code = "import sys, launch.spec.sweep; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_seeded_gives_seeds_to_the_methods_it_names_and_one_run_to_the_others(cfg):
    cfg.seed = 7
    s = _sweep({"seeds": [0, 1, 2], "seeded": ["lora", "qlora"], "grid": {"methods.lora.learning_rate": [1e-4, 2e-4]}})
    cells = sweep.expand(cfg, s)
    assert [(c.id, c.seed) for c in cells if c.method == "full_sft"] == [("full_sft[0]", 7)]
    assert [c.seed for c in cells if c.method == "lora"] == [0, 1, 2, 0, 1, 2]
    assert [c.seed for c in cells if c.method == "qlora"] == [0, 1, 2]
    assert sweep.summary(cfg, s) == (
        "sweep: 10 cells in 3 submissions\n"
        "  full_sft: 1 seed = 1 cell\n"
        "  lora: 2 learning_rate x 3 seeds = 6 cells\n"
        "  qlora: 3 seeds = 3 cells"
    )
    # Written out only when set: a config without it keeps its text (and its hash).
    assert "seeded" not in config.dump_yaml(dataclasses.replace(cfg, sweep=_sweep({"seeds": [0, 1]})))
    assert "seeded:\n  - lora" in config.dump_yaml(dataclasses.replace(cfg, sweep=s)).replace("- qlora", "")


def test_seeded_problems_are_reported_with_the_fix(cfg):
    problems: list[str] = []
    sweep.resolve(cfg, sweep.parse({"seeds": [0, 1], "seeded": ["lroa", "lora", "lora", "nope"]}, problems), problems)
    assert "sweep.seeded: 'lroa' is not a method of this experiment -> did you mean 'lora'?" in problems
    assert "sweep.seeded: 'lora' is listed 2 times -> list each method once" in problems
    assert any(p.startswith("sweep.seeded: 'nope' is not a method") and "full_sft, lora, qlora" in p for p in problems)
    problems = []
    sweep.resolve(cfg, sweep.parse({"seeded": ["lora"]}, problems), problems)
    expected = "sweep.seeded: ['lora'] but sweep.seeds is not set -> list the seeds (seeds: [0, 1, 2]) or remove seeded"
    assert problems == [expected]
