"""The typed config: shipped configs validate; bad configs list every problem with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launch.spec import preflight
from launch.spec.config import METHOD_KINDS, ConfigError, build_config, config_hash, dump_yaml, from_dict, load_config

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.name for p in SHIPPED} >= {"smoke.yaml", "llama3-8b-cybermetric.yaml"}


def test_smoke_config_validates(repo, smoke_overrides, monkeypatch):
    monkeypatch.chdir(repo)
    cfg = load_config(repo / "configs" / "smoke.yaml", smoke_overrides)
    # every kind but ia3 (configs/peft-variants.yaml shows it), each named as its kind
    assert [m.name for m in cfg.methods] == [m.kind for m in cfg.methods] == [k for k in METHOD_KINDS if k != "ia3"]
    assert cfg.tracking.mode == "offline"


def test_llama3_config_validates_except_for_the_unshipped_data(repo, monkeypatch):
    monkeypatch.chdir(repo)
    path = repo / "configs" / "llama3-8b-cybermetric.yaml"
    data_file = repo / "data" / "cybermetric" / "CyberMetric-10000-v1.json"
    cfg = load_config(path)  # schema and values only: the data file is the preflight's business
    if not data_file.exists():
        problems = preflight.check(cfg).problems
        assert len(problems) == 1 and problems[0].startswith("data.train.path:"), problems
    cfg = load_config(path, ["data.train.path=data/sample/cyber_mcq.json"])
    assert preflight.check(cfg).problems == []
    sft = cfg.method("full_sft")
    assert (sft.resources.nodes, sft.resources.gpus_per_node, sft.deepspeed) == (1, 8, "ds_configs/zero2.json")
    assert cfg.method("qlora").resources.gpus_per_node == 1
    assert cfg.model.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"  # hub names are not path-checked


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_has_only_known_keys(path, repo, monkeypatch):
    """Type and key checks pass for every shipped file (paths may need the local model)."""
    monkeypatch.chdir(repo)
    try:
        load_config(path)
    except ConfigError as err:
        for p in err.problems:
            assert p.startswith(("model.name_or_path:", "data.train.path:")), p


def _base(tmp_path: Path, **extra) -> dict:
    data = tmp_path / "d.json"
    data.write_text('{"questions": []}')
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    raw = {
        "name": "t",
        "model": {"name_or_path": str(model)},
        "data": {"train": {"path": str(data)}},
        "methods": [{"name": "l", "kind": "lora"}],
    }
    raw.update(extra)
    return raw


def test_minimal_config_and_defaults(tmp_path):
    cfg = from_dict(_base(tmp_path))
    assert cfg.methods[0].lora.r == 16 and cfg.eval.mode == "loglik" and cfg.data.eval_fraction == 0.2
    assert len(config_hash(cfg)) == 12
    assert yaml.safe_load(dump_yaml(cfg))["methods"][0]["name"] == "l"


def _all_problems(raw: dict, overrides: tuple = ()) -> list[str]:
    """What `cyberft validate` reports: the config's own problems, then its files' (preflight)."""
    cfg, problems = build_config(raw, overrides)
    found = preflight.check(cfg)
    return problems + found.problems + found.data_problems


def test_every_problem_is_listed_once(tmp_path):
    raw = _base(tmp_path)
    raw["modle"] = {}
    raw["data"]["train"]["path"] = str(tmp_path / "missing.json")
    raw["methods"] = [
        {"name": "q", "kind": "qlora", "learning_rate": "fast", "resources": {"gpus_per_node": 2}},
        {"name": "f", "kind": "ful_sft"},
        {"name": "q", "kind": "lora", "micro_batch_size": 0},
    ]
    with pytest.raises(ConfigError) as err:
        from_dict(raw, source="bad.yaml")
    problems = err.value.problems
    text = str(err.value)
    assert "modle: unknown key -> did you mean 'model'?" in problems
    assert any(p.startswith("methods[0] (q).learning_rate: expected a number") and "'fast'" in p for p in problems)
    assert any("'ful_sft' is not allowed -> did you mean 'full_sft'?" in p for p in problems)
    assert any("qlora runs on one GPU" in p and "gpus_per_node=2" in p and "fix" not in p for p in problems)
    assert any("used twice" in p for p in problems)
    assert any("micro_batch_size: 0 -> at least 1" in p for p in problems)
    assert len(problems) == 6, problems
    assert text.startswith("6 problem(s) in bad.yaml")
    everything = _all_problems(raw)
    assert len(everything) == 7 and everything[-1].startswith("data.train.path:") and "does not exist" in everything[-1]


def test_overrides_by_method_name_and_index(tmp_path):
    cfg = from_dict(
        _base(tmp_path), ["methods.l.learning_rate=1e-3", "methods.0.lora.r=4", "eval.mode=generate", "seed=7"]
    )
    m = cfg.methods[0]
    assert (m.learning_rate, m.lora.r, cfg.eval.mode, cfg.seed) == (1e-3, 4, "generate", 7)


def test_bad_overrides_are_problems(tmp_path):
    with pytest.raises(ConfigError) as err:
        from_dict(_base(tmp_path), ["methods.nope.learning_rate=1", "seed", "model.name_or_pth=x"])
    p = err.value.problems
    assert any("no list item 'nope'" in x for x in p)
    assert any("expected key=value" in x for x in p)
    assert any("did you mean 'name_or_path'" in x for x in p)


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"seed": "x"}, "seed: expected an integer"),
        ({"seed": True}, "seed: expected an integer"),
        ({"name": "a b"}, "name: 'a b'"),
        ({"methods": []}, "methods: empty"),
        ({"methods": [{"name": "base", "kind": "lora"}]}, "reserved"),
        (
            {"methods": [{"name": "x", "kind": "lora", "deepspeed": "ds_configs/zero3.json"}]},
            "DeepSpeed ZeRO is for full_sft",
        ),
        ({"methods": [{"name": "x", "kind": "full_sft", "deepspeed": "nope.json"}]}, "does not exist"),
        ({"methods": [{"name": "x", "kind": "qlora", "resources": {"nodes": 2}}]}, "qlora runs on one GPU"),
        ({"methods": [{"name": "x", "kind": "lora", "lora": {"target_modules": []}}]}, "target_modules: empty"),
        ({"methods": "lora"}, "methods: expected a list"),
        ({"eval": {"batch_size": 0}}, "eval.batch_size: 0"),
        ({"eval": {"mode": "rouge"}}, "eval.mode: 'rouge' is not allowed"),
        ({"data": {"train": {"path": "x.json"}, "eval_fraction": 1.5}}, "does not exist"),
        ({"tracking": {"mode": "ofline"}}, "did you mean 'offline'"),
    ],
)
def test_bad_values(tmp_path, patch, fragment):
    raw = _base(tmp_path)
    raw.update(patch)
    problems = _all_problems(raw)
    assert any(fragment in p for p in problems), problems


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# ---- issue 22: words for "off", overrides without a key, a data source's record count

OFF_FIX = "did you mean 'disabled'? (this field's word for off; the others: 'online', 'offline')"


@pytest.mark.parametrize(
    "yaml_text, override",
    [
        ("off", None),  # YAML 1.2 (the config's reader): the text 'off'
        ("Off", None),
        ("none", None),
        ("no", None),
        ("", None),  # `mode:` with nothing after it: null
        (None, "tracking.mode=false"),  # what a YAML 1.1 reader would have made of off
        (None, "tracking.mode=0"),
        (None, "tracking.mode=null"),
    ],
)
def test_an_off_like_tracking_mode_is_pointed_at_disabled(tmp_path, yaml_text, override):
    path = tmp_path / "exp.yaml"
    text = yaml.safe_dump(_base(tmp_path))
    if yaml_text is not None:
        text += f"tracking:\n  mode: {yaml_text}\n"
    path.write_text(text)
    cfg, problems = check_config_file(path, [override] if override else [])
    hits = [p for p in problems if p.startswith("tracking.mode:")]
    assert len(hits) == 1 and hits[0].endswith(OFF_FIX), problems
    assert "offline'?" not in hits[0]


def check_config_file(path: Path, overrides: list[str]) -> tuple:
    from launch.spec.config import check_config

    return check_config(path, overrides)


def test_off_gets_each_fields_own_word_and_a_typo_its_closest_spelling(tmp_path):
    problems = _all_problems(_base(tmp_path, tracking={"backend": "off"}))
    assert any(p.startswith("tracking.backend: 'off' is not allowed -> did you mean 'none'?") for p in problems)
    problems = _all_problems(_base(tmp_path, tracking={"mode": "ofline"}))
    assert "tracking.mode: 'ofline' is not allowed -> did you mean 'offline'?" in problems
    problems = _all_problems(_base(tmp_path, eval={"mode": "off"}))  # no word for off among its choices
    assert "eval.mode: 'off' is not allowed -> use one of 'loglik', 'generate'" in problems


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "=1e-3",
            "override '=1e-3': no key before '=' -> write the dotted field name, then '=' and the value, "
            "e.g. methods.lora.learning_rate=1e-3",
        ),
        (
            " =1e-3",
            "override ' =1e-3': no key before '=' -> write the dotted field name, then '=' and the value, "
            "e.g. methods.lora.learning_rate=1e-3",
        ),
        (
            "methods..learning_rate=1e-3",
            "override 'methods..learning_rate=1e-3': key 'methods..learning_rate' has an empty part (two dots in "
            "a row, or one at an end) -> one dot between names, e.g. methods.lora.learning_rate=1e-3",
        ),
        (
            "seed.=3",
            "override 'seed.=3': key 'seed.' has an empty part (two dots in a row, or one at an end) -> one dot "
            "between names, e.g. methods.lora.learning_rate=1e-3",
        ),
    ],
)
def test_an_override_with_an_empty_key_is_named_with_its_fix(tmp_path, override, expected):
    cfg, problems = build_config(_base(tmp_path), [override])
    assert problems == [expected]
    assert cfg.seed == 0 and cfg.methods[0].learning_rate == 2e-4  # nothing applied


def test_a_data_sources_record_count_is_checked_and_left_out_of_the_text_when_null(tmp_path):
    raw = _base(tmp_path)
    cfg = from_dict(raw)
    assert cfg.data.train.examples is None
    assert "examples" not in dump_yaml(cfg)  # configs without it keep their text and hash
    declared = from_dict(raw, ["data.train.examples=10000"])
    assert declared.data.train.examples == 10000
    assert "    examples: 10000\n" in dump_yaml(declared)
    assert load_config_text(tmp_path, dump_yaml(declared)).data.train.examples == 10000  # read back equal
    for value, fragment in [
        ("0", "data.train.examples: 0 -> a positive number of records, or null"),
        ("1.5", "data.train.examples: expected an integer"),
        ("1", "data.train.examples: 1 -> at least 2: with data.eval null the records are split"),
    ]:
        _, problems = build_config(raw, [f"data.train.examples={value}"])
        assert [p for p in problems if p.startswith(fragment)], (value, problems)
    _, problems = build_config(raw, ["data.train.examples=1", f"data.eval={{path: {raw['data']['train']['path']}}}"])
    assert problems == []  # one training record is enough when the evaluation has its own data


def load_config_text(tmp_path: Path, text: str):
    path = tmp_path / "again.yaml"
    path.write_text(text)
    return load_config(path)
