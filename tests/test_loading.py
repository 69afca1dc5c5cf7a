"""The one YAML reader, the one typed loader and the one secret detector, on their own."""

from __future__ import annotations

import pytest

from launch.site.profiles import ProfileError, profile_from_dict
from launch.spec import yamlio
from launch.spec.config import build_config
from launch.spec.redact import assigned_credentials, is_credential_name, scrub, short, token_kind
from launch.spec.schema import InputError

# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 0.001),
        ("2.5", 2.5),
        ("012", 12),
        ("0x1f", 31),
        ("0o17", 15),
        ("-3", -3),
        (".inf", float("inf")),
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        # YAML 1.1 read these as numbers, booleans or dates; here they are the text they look like.
        ("2:00:00", "2:00:00"),
        ("yes", "yes"),
        ("off", "off"),
        ("On", "On"),
        ("1_000", "1_000"),
        ("2024-05-01", "2024-05-01"),
        ("=", "="),
    ],
)
def test_yaml_12_scalars(text, value):
    assert yamlio.parse(f"k: {text}\n") == {"k": value}


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once_with_its_line():
    value, problem = yamlio.parse_problem(_bomb(30))  # 10**30 values if expanded: returning at all shows it was not
    assert value is None and problem.startswith("expands to") and "line 30" in problem and "->" in problem
    assert yamlio.parse(_bomb(3))["a2"][0][0] == ["x"] * 10  # a few aliases are fine


def test_recursive_alias_and_depth_are_refused():
    assert "contains it" in yamlio.parse_problem("a: &a [1, *a]\n")[1]
    assert "nested more than 64 levels" in yamlio.parse_problem("k: " + "[" * 70 + "]" * 70)[1]


@pytest.mark.parametrize(
    "text, line", [("a: 1\nb: 2\na: 3\n", 3), ("m: {x: 1, x: 2}\n", 1), ("methods:\n- name: a\n  lr: 1\n  lr: 2\n", 4)]
)
def test_duplicate_keys_are_errors_with_their_lines(text, line):
    problem = yamlio.parse_problem(text)[1]
    assert problem.startswith(f"line {line}: key") and "appears twice" in problem


def test_merge_keys_may_be_overridden_and_aliases_are_copied_apart():
    value = yamlio.parse("base: &b {x: 1, y: 2}\nm: [{<<: *b, x: 3}, {r: *b}, {r: *b}]\n")
    assert value["m"][0] == {"x": 3, "y": 2}
    value["m"][1]["r"]["x"] = 99
    assert value["m"][2]["r"]["x"] == 1 and value["base"]["x"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "yes",
        "on",
        "2:00:00",
        "012",
        "null",
        "1_000",
        "2024-05-01",
        "a\x85b",
        "x\u2028y",
        "é",
        "two\nlines",
        "'quoted'",
        "",
    ],
)
def test_dump_reads_back_equal_with_both_yaml_versions(text):
    import yaml

    dumped = yamlio.dump({"k": text, "shared": [text]})
    assert yamlio.parse(dumped)["k"] == text and yaml.safe_load(dumped)["k"] == text


def test_only_regular_files_of_bounded_size_are_read(tmp_path):
    assert "is not a regular file" in yamlio.read(__import__("pathlib").Path("/dev/zero"), "config", "x")[1]
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * yamlio.MAX_FILE_BYTES + b"\n")
    assert "is larger than 1,048,576 bytes" in yamlio.read(big, "config", "x")[1]


# --------------------------------------------------------------------------- typed loading


def test_config_and_profile_read_numbers_alike():
    """They used to differ: `1e-3` was text that the config converted and the profile refused."""
    problems = build_config(
        {
            "name": "t",
            "model": {"name_or_path": "m"},
            "data": {"train": {"path": "d.json"}},
            "methods": [{"name": "l", "learning_rate": yamlio.parse("x: 1e-3")["x"]}],
        }
    )[1]
    assert problems == []
    profile = profile_from_dict(yamlio.parse("partition: gpu\nprice_per_gpu_hour: 1e-3\n"), stem="p")
    assert profile.price_per_gpu_hour == 0.001
    for raw_value, field in (("'1e-3'", "learning_rate"), ("yes", "learning_rate")):
        problems = build_config({"methods": [{"name": "l", field: yamlio.parse(f"x: {raw_value}")["x"]}]})[1]
        assert any(p.startswith("methods[0] (l).learning_rate: expected a number, got str") for p in problems)
    with pytest.raises(ProfileError, match=r"price_per_gpu_hour: expected a number, got str '1e-3'"):
        profile_from_dict({"partition": "gpu", "price_per_gpu_hour": "1e-3"}, stem="p")


def test_a_number_of_hundreds_of_digits_is_a_range_problem_not_a_crash():
    cfg, problems = build_config({"methods": [{"name": "l", "lora": {"r": 10**300}}]})
    (line,) = [p for p in problems if ".lora.r:" in p]
    assert len(line) < 200 and "..." in line  # the value is shortened
    assert line.endswith("-> at most 65536") and cfg.methods[0].lora.r == 16  # the default stays


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "WANDB_API_KEY",
        "apiKey",
        "DB_PASSWD",
        "MyAppSecret",
        "AWS_ACCESS_KEY",
        "GITHUB_PAT_TOKEN",
        "password",
        "client_secret",
        "OPENAI_KEY",
        "X_AUTH",
    ],
)
def test_credential_names(name):
    assert is_credential_name(name)


@pytest.mark.parametrize(
    "name",
    ["max_new_tokens", "NCCL_DEBUG", "key", "monkey_business", "OMP_NUM_THREADS", "keep", "HF_HOME", "tokens_per_s"],
)
def test_names_that_are_not_credentials(name):
    assert not is_credential_name(name)


@pytest.mark.parametrize(
    "text, kind",
    [
        ("0123456789abcdef0123456789abcdef01234567", "W&B API key"),
        ("  export WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567", "W&B API key"),
        ("hf_" + "aB3" * 12, "Hugging Face token"),
        ("ghp_" + "x" * 36, "GitHub token"),
        ("github_pat_" + "A1_" * 20, "GitHub token"),
        ("AKIAIOSFODNN7EXAMPLE", "AWS access key id"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ("sk-" + "z" * 40, "API key (sk-...)"),
        ("xoxb-1234567890-abcdef", "Slack token"),
        ("https://bob:hunter2@example.org", "password in a URL"),
    ],
)
def test_token_shapes(text, kind):
    assert token_kind(text) == kind
    assert text.strip().split("=")[-1] not in scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        "/root/.cache/huggingface/hub/models--x--y/snapshots/0123456789abcdef0123456789abcdef01234567",
        "hf_datasets_cache",
        "sk-learn",
        "/data/task-0123456789abcdefghijkl",
        "https://example.org/a:b",
        "q_proj",
        "ds_configs/zero3.json",
    ],
)
def test_ordinary_values_are_not_tokens(text):
    assert token_kind(text) is None


@pytest.mark.parametrize(
    "line, names",
    [
        ("export WANDB_API_KEY=abc", ["WANDB_API_KEY"]),
        ("module load x; HF_TOKEN='abc' python", ["HF_TOKEN"]),
        ('declare -x DB_PASSWD="x"', ["DB_PASSWD"]),
        ("export HF_TOKEN=$(cat ~/.hf_token)", []),
        ('export HF_TOKEN="$SAVED"', []),
        ("export NCCL_DEBUG=INFO", []),
        ("source ~/venv/bin/activate", []),
    ],
)
def test_shell_lines_assigning_credentials(line, names):
    assert assigned_credentials(line) == names


def test_short_is_bounded_and_never_shows_a_token():
    for value in ("X" * 2_000_000, ["a" * 10**6] * 50, {"k" * 10**6: "v"}):
        assert len(short(value)) < 200
    token = "hf_" + "Q" * 34
    for value in (token, [1, {"a": token}], "x" * 70 + token, f"  {token}"):
        assert "QQQQ" not in short(value)


def test_every_problem_line_is_scrubbed():
    assert "hf_" + "Q" * 34 not in str(InputError([f"x: {'hf_' + 'Q' * 34} -> y"]))
