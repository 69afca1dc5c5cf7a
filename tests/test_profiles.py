"""Every shipped Slurm profile loads; a bad profile reports every problem at once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `pytest` run from anywhere finds launch/

from launch.site.profiles import PROFILES_DIR, ProfileError, SlurmProfile, list_profiles, load_profile  # noqa: E402

SHIPPED = sorted(PROFILES_DIR.glob("*.yaml"))


def test_profiles_are_shipped():
    assert {"dev", "example-a100"} <= set(list_profiles())
    assert list_profiles() == [p.stem for p in SHIPPED]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profile_loads(path):
    by_path = load_profile(path)
    by_name = load_profile(path.stem)
    assert by_path == by_name
    assert isinstance(by_name, SlurmProfile) and by_name.name == path.stem
    assert by_name.partition and by_name.gpus_per_node >= 1 and by_name.max_time_min >= 1


def test_example_site_values():
    p = load_profile("example-a100")
    assert (p.partition, p.constraint, p.gpus_per_node, p.gpu_mem_gb) == ("gpu", "a100", 8, 80)
    assert p.setup[0] == "module load cuda/12.4" and p.env["NCCL_DEBUG"] == "WARN"
    assert (p.max_time_min, p.price_per_gpu_hour) == (2880, 2.5)


def test_bad_profile_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "partition: gpu\n"
        "gpu_per_node: 4\n"  # unknown key (typo)
        "gpus_per_node: -2\n"  # non-positive
        "cpus_per_gpu: eight\n"  # wrong type
        "max_time_min: 0\n"  # non-positive
        "setup: module load cuda\n"  # wrong type: not a list
        "env:\n  WANDB_API_KEY: abc123\n  HF_TOKEN: x\n  NCCL_DEBUG: WARN\n"
        "additional_parameters:\n  partition: other\n"
    )
    with pytest.raises(ProfileError) as info:
        load_profile(bad)
    problems = info.value.problems
    text = "\n".join(problems)
    assert len(problems) == 8, text
    assert "gpu_per_node: unknown key -> did you mean 'gpus_per_node'?" in text
    assert "gpus_per_node: -2 -> a positive whole number" in text
    assert "cpus_per_gpu: expected an integer, got str 'eight'" in text  # the config's typed loader, same words
    assert "max_time_min: 0" in text
    assert "setup: expected a list" in text
    for key in ("env.WANDB_API_KEY", "env.HF_TOKEN"):
        line = next(p for p in problems if p.startswith(key))
        assert "export it in your shell" in line and "the job reads it on the compute node" in line
        assert "abc123" not in line  # the secret is not echoed back
    assert "additional_parameters.partition: the launcher sets this option itself -> use partition instead" in text
    assert str(bad) in str(info.value)


def test_unknown_name_suggests_a_shipped_profile():
    with pytest.raises(ProfileError) as info:
        load_profile("dve")
    assert "did you mean 'dev'?" in info.value.problems[0]


def test_name_must_match_file(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("name: other\npartition: gpu\n")
    with pytest.raises(ProfileError, match="differs from the file name 'site'"):
        load_profile(p)
    p.write_text("partition: gpu\nenv: {OMP_NUM_THREADS: 4}\n")
    assert load_profile(p).env == {"OMP_NUM_THREADS": "4"}  # numbers become strings; the name comes from the file


def test_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- partition\n")
    with pytest.raises(ProfileError, match="expected a mapping"):
        load_profile(p)
