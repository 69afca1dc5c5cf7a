"""Per-site calibration (launch/cost/calibration.py): records, the file, combining runs, show, the forecast using it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.cost import calibration as cal
from launch.cost import forecast as fc
from launch.cost.memory import ModelShape
from launch.cost.tokencount import SplitTokens, TokenCounts
from launch.spec.config import from_dict

REPO = Path(__file__).resolve().parents[1]
SMALL = 134_515_008  # SmolLM2-135M's parameters: the "<1B" bucket


def _job(name="lora", kind="lora", gpus=1, peak=0.17, per_token=8e8, modelled=70.0, n_params=SMALL) -> dict:
    """A job's entry as Forecast.to_json() writes it (the keys measure_job reads)."""
    return {
        "name": name,
        "kind": kind,
        "gpus": gpus,
        "peak_tflops": peak,
        "flops_per_token": per_token,
        "modelled_overhead_s": modelled,
        "n_params": n_params,
    }


def _record(experiment, tokens, compute_s, wall_s, precision=None, **job) -> dict:
    return cal.measure_job(
        _job(**job), tokens, compute_s, wall_s, experiment, "fake", None, "2026-12-01T00:00:00Z", precision
    )


def test_measure_job_by_hand():
    rec = _record("smoke-1", tokens=34_838, compute_s=200.0, wall_s=270.0)
    assert set(rec) == set(cal.FIELDS)
    assert rec["utilisation"] == pytest.approx(34_838 * 8e8 / (200.0 * 1 * 0.17e12))
    assert rec["overhead_s"] == 70.0 and rec["overhead_factor"] == pytest.approx(1.0)
    assert (rec["id"], rec["kind"], rec["gpu_type"], rec["size"]) == ("smoke-1/lora", "lora", "fake", "<1B")


def test_measure_method_uses_sacct_and_skips_what_cannot_calibrate():
    metrics = {"status": "completed", "train_tokens": 1000, "phases_s": {"load": 5.0, "train": 10.0}, "wall_s": 20.0}
    local = cal.measure_method(_job(), metrics, None, "e", "fake")
    assert local["wall_s"] == 20.0 and local["compute_s"] == 10.0 and local["gpus"] == 1
    slurm = cal.measure_method(_job(), metrics, {"elapsed_s": 40, "gpus": 2}, "e", "fake")
    assert slurm["wall_s"] == 40.0 and slurm["gpus"] == 2  # sacct's elapsed time (every attempt) and GPUs
    assert cal.measure_method(_job(), {**metrics, "status": "failed"}, None, "e", "fake") is None
    assert cal.measure_method(_job(peak=None), metrics, None, "e", "fake") is None  # unknown GPU: nothing to learn


def test_a_cpu_job_that_waited_for_its_cores_is_calibrated_at_the_rate_its_cores_gave():
    """cpu_share from metrics.json: the utilisation is divided by it (a job with half a core ran at half the
    machine's rate); a GPU job's share is not kept (the GPU, not the CPU, sets its pace)."""
    metrics = {"status": "completed", "train_tokens": 1000, "phases_s": {"train": 10.0}, "wall_s": 12.0}
    starved = cal.measure_method(_job(), {**metrics, "cpu_share": 0.5}, None, "e", "cpu")
    whole = cal.measure_method(_job(), {**metrics, "cpu_share": 1.0}, None, "f", "cpu")
    assert (starved["cpu_share"], whole["cpu_share"]) == (0.5, 1.0)
    assert starved["utilisation"] == whole["utilisation"]  # the record keeps what was measured
    assert cal.utilisation_of(starved) == pytest.approx(2 * cal.utilisation_of(whole))
    assert cal.utilisation_of({**whole, "cpu_share": 1.3}) == whole["utilisation"]  # libraries' threads: as measured
    assert cal.measure_method(_job(), {**metrics, "cpu_share": 0.5}, None, "e", "h100")["cpu_share"] is None
    assert cal.record_problem({**starved, "cpu_share": -1}) == "cpu_share: -1 is not a positive number or null"


def test_cpu_runs_that_measured_their_share_replace_those_that_did_not(tmp_path):
    """On a CPU, runs without cpu_share (recorded before it was, or beside other work) are left out of the
    time calibration once some runs of the kind have it; the memory scale still uses them all."""
    old = {**_record("old", 10_000, 400.0, 420.0), "gpu_type": "cpu", "mem_estimate_gb": 1.0, "mem_peak_gb": 1.5}
    new = {**_record("new", 10_000, 100.0, 120.0), "gpu_type": "cpu", "cpu_share": 0.8}
    alone = cal.Calibration(records=[old])
    assert alone.lookup("lora", "cpu", SMALL).utilisation == pytest.approx(old["utilisation"])
    both = cal.Calibration(records=[old, new])
    found = both.lookup("lora", "cpu", SMALL)
    assert found.runs == 1 and found.utilisation == pytest.approx(new["utilisation"] / 0.8)
    assert both.memory_scale("lora", "cpu", SMALL) == (1.5, 1)
    assert "2 (1 timed)" in cal.format_calibration(both)
    gpu = [{**old, "gpu_type": "fake"}, {**new, "gpu_type": "fake", "cpu_share": None}]
    assert cal.Calibration(records=gpu).lookup("lora", "fake", SMALL).runs == 2  # a GPU site: no such rule


def test_round_trip_append_reload_combine(tmp_path):
    path = tmp_path / "site.calibration.jsonl"
    runs = [("a", 10_000, 100.0, 300.0), ("b", 30_000, 250.0, 330.0), ("c", 20_000, 190.0, 250.0)]
    for name, tokens, compute, wall in runs:
        assert cal.append(path, _record(name, tokens, compute, wall)) is True
    loaded = cal.load(path)
    assert [r["id"] for r in loaded.records] == ["a/lora", "b/lora", "c/lora"] and loaded.skipped == []
    found = loaded.lookup("lora", "FAKE", SMALL)
    # Utilisation = tokens/s x 8e8 FLOPs per token / 0.17e12: a 100 tokens/s (10,000 tokens), c 105.3 (20,000),
    # b 120 (30,000). Half of the 60,000 tokens lie at or below c, so the median is midway between c and b.
    # Overhead factors (wall - compute) / 70 s modelled: 200/70, 80/70, 60/70: median 80/70.
    util = (20_000 / 190 + 30_000 / 250) / 2 * 8e8 / 0.17e12
    assert found == (pytest.approx(util), pytest.approx(80 / 70), 3)
    assert loaded.lookup("lora", "fake", 8_030_261_248) is None  # another size bucket
    assert loaded.lookup("qlora", "fake", SMALL) is None
    assert loaded.lookup("lora", "h100", SMALL) is None


def test_weighted_median():
    assert cal.weighted_median([0.1, 0.5, 0.9], [1, 1, 10]) == 0.9
    assert cal.weighted_median([0.9, 0.1, 0.5], [1, 1, 1]) == 0.5
    assert cal.weighted_median([0.2, 0.4], [1, 1]) == pytest.approx(0.3)
    assert cal.weighted_median([0.7], [5]) == 0.7


def test_append_is_idempotent_and_keeps_other_lines_byte_for_byte(tmp_path):
    path = tmp_path / "site.calibration.jsonl"
    old = '{"hand": "edited"}\nnot json at all\n{"v": 1, "id": "half a li'  # a last line cut short
    path.write_text(old)
    rec = _record("x", 1000, 10.0, 20.0)
    assert cal.append(path, rec) is True
    assert cal.append(path, rec) is False  # the report ran twice: nothing new
    text = path.read_text()
    assert text.startswith(old + "\n")  # earlier lines unchanged; the cut line stays a line of its own
    assert text.count("x/lora") == 1
    loaded = cal.load(path)
    assert [r["id"] for r in loaded.records] == ["x/lora"]
    assert loaded.skipped[0] == "line 1: v: None -> this version reads v 1"
    assert loaded.skipped[1].startswith("line 2: not JSON (")
    assert loaded.skipped[2].startswith("line 3: not JSON (")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_bad_records_are_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "site.calibration.jsonl"
    rec = _record("x", 1000, 10.0, 20.0)
    for bad, why in (
        ({**rec, "token": "x"}, "unknown keys"),
        ({**rec, "kind": "dpo"}, "kind"),
        ({**rec, "utilisation": float("nan")}, "utilisation"),
    ):
        with pytest.raises(ValueError, match=why):
            cal.append(path, bad)
    assert not path.exists()


def test_no_secret_reaches_the_file(tmp_path):
    path = tmp_path / "site.calibration.jsonl"
    token = "hf_" + "a" * 34
    rec = cal.measure_job(_job(name=f"lora-{token}"), 1000, 10.0, 20.0, f"exp-{token}", "fake")
    cal.append(path, rec)
    text = path.read_text()
    assert token not in text and "<redacted>" in text
    assert set(json.loads(text)) == set(cal.FIELDS)


def test_a_lost_update_is_written_again(tmp_path, monkeypatch):
    """Another writer's rename landing just after ours drops our line: the read-back notices and appends again."""
    path = tmp_path / "site.calibration.jsonl"
    cal.append(path, _record("first", 1000, 10.0, 20.0))
    before = path.read_text()  # what the other writer read, before our write
    theirs = json.dumps(_record("other", 1000, 10.0, 20.0)) + "\n"
    real, calls = cal.atomic_write_text, []

    def racing(p, text):
        calls.append(text)
        real(p, text)
        if len(calls) == 1:
            real(p, before + theirs)  # their rename wins

    monkeypatch.setattr(cal, "atomic_write_text", racing)
    assert cal.append(path, _record("second", 1000, 10.0, 20.0)) is True
    assert len(calls) == 2
    assert [r["id"] for r in cal.load(path).records] == ["first/lora", "other/lora", "second/lora"]

    monkeypatch.setattr(cal, "atomic_write_text", lambda p, text: None)  # every write lost
    with pytest.raises(OSError, match="replaced by other writers 5 times"):
        cal.append(path, _record("third", 1000, 10.0, 20.0))


def test_calibration_path_is_next_to_the_profile(tmp_path, monkeypatch):
    monkeypatch.delenv(cal.DIR_ENV)  # the suite keeps every calibration out of the checkout (conftest)
    assert cal.calibration_path("dev") == REPO / "slurm" / "profiles" / "dev.calibration.jsonl"
    assert cal.calibration_path(tmp_path / "site.yaml") == tmp_path / "site.calibration.jsonl"
    assert cal.local_calibration_path() == REPO / ".cache" / "local.calibration.jsonl"
    monkeypatch.setenv(cal.DIR_ENV, str(tmp_path / "elsewhere"))
    assert cal.calibration_path("dev") == tmp_path / "elsewhere" / "dev.calibration.jsonl"
    assert cal.local_calibration_path() == tmp_path / "elsewhere" / "local.calibration.jsonl"


def test_show(tmp_path):
    profile = tmp_path / "site.yaml"
    profile.write_text("name: site\n")
    assert cal.show(profile).startswith("profile site: no calibration runs yet (")
    path = cal.calibration_path(profile)
    cal.append(path, _record("a", 10_000, 100.0, 170.0))
    cal.append(path, _record("b", 10_000, 50.0, 120.0, name="full", kind="full_sft", gpus=2))
    cal.append(path, _record("c", 10_000, 25.0, 60.0, "bf16", name="full", kind="full_sft", gpus=2))
    with path.open("a") as fh:
        fh.write("garbage\n")
    lines = cal.show(profile).splitlines()
    assert lines[0] == f"calibration of profile site: {path}, 3 runs"
    assert lines[1].split() == [
        "kind",
        "GPU",
        "params",
        "precision",
        "runs",
        "utilisation",
        "range",
        "overhead",
        "x",
        "memory",
        "x",
        "tokens",
        "mean",
        "wall",
        "last",
        "recorded",
    ]
    # A bf16 run is a row of its own (never combined with fp32 runs); a GPU run recorded without one is "?".
    assert lines[3].split()[:6] == ["full_sft", "fake", "135M", "?", "1", "0.471"]  # 8e12 / (50 s x 2 x 0.17e12)
    assert lines[4].split()[:6] == ["full_sft", "fake", "135M", "bf16", "1", "0.941"]  # the same FLOPs in 25 s
    assert lines[5].split()[:6] == ["lora", "fake", "135M", "?", "1", "0.471"]
    assert lines[6].startswith(f"skipped {path}: line 4: not JSON")
    assert lines[3].split()[8] == "-"  # no run of the group measured its memory
    # A run that measured its memory: the group shows the largest peak / estimate, and from how many runs.
    cal.append(path, {**_record("d", 10_000, 50.0, 120.0, kind="qlora"), "mem_estimate_gb": 4.0, "mem_peak_gb": 5.0})
    qlora = next(line for line in cal.show(profile).splitlines() if line.startswith("qlora"))
    assert qlora.split()[8:10] == ["1.25", "(1)"]
    # Runs on another model are a row of their own: its memory ratio is not this model's.
    cal.append(path, {**_record("e", 10_000, 50.0, 120.0, kind="qlora", n_params=853_120), "mem_estimate_gb": 0.1})
    rows = [line.split() for line in cal.show(profile).splitlines() if line.startswith("qlora")]
    assert [(r[2], r[4]) for r in rows] == [("853k", "1"), ("135M", "1")]


# --------------------------------------------------------------------------- the forecast through its calibration


def _cfg(steps: int, micro_batch: int):
    method = {
        "name": "lora",
        "kind": "lora",
        "max_steps": steps,
        "micro_batch_size": micro_batch,
        "precision": "fp32",
        "lora": {"r": 8},
        "resources": {"gpus_per_node": 1, "time_min": 60},
    }
    return from_dict(
        {
            "name": "t",
            "model": {"name_or_path": "x", "dtype": "float32"},
            "data": {"train": {"path": "x.json"}},
            "methods": [method],
        }
    )


def test_forecast_uses_the_calibration_and_says_so(tmp_path):
    """A run measured at utilisation u with overhead factor f: the next forecast of another size uses both."""
    shape = ModelShape(
        hidden_size=576,
        num_layers=30,
        vocab_size=49152,
        intermediate_size=1536,
        num_heads=9,
        num_kv_heads=3,
        tie_embeddings=True,
        source="smollm2-like",
    )
    counts = TokenCounts(
        SplitTokens(300, 300 * 115.0, 300 * 115.0**2, 1200),
        SplitTokens(200, 200 * 110.0, 200 * 110.0**2, 200, 19),
        "tokens: counted with the tokenizer",
        True,
    )
    first = fc.forecast(_cfg(38, 8), shape, counts, "cpu", gpu_tflops=0.17).methods[0]
    assert first.source == "default"
    # What the "cluster" measured: 0.4 of peak, and three times the modelled start-up, load and save.
    compute = first.flops / (0.17e12 * 0.4)
    wall = compute + 3 * first.modelled_overhead_s
    job = fc.Forecast("cpu", 0, counts.source, [first], first).to_json()["methods"]["lora"]
    path = tmp_path / "site.calibration.jsonl"
    cal.append(path, cal.measure_job(job, first.tokens, compute, wall, "run1", "cpu"))
    second = fc.forecast(_cfg(76, 4), shape, counts, "cpu", gpu_tflops=0.17, calibration=cal.load(path)).methods[0]
    assert second.source == "calibrated from 1 run"
    assert second.utilisation == pytest.approx(0.4)
    assert second.compute_s == pytest.approx(second.flops / (0.17e12 * 0.4))
    assert second.overhead_s == pytest.approx(3 * second.modelled_overhead_s)


def test_a_much_smaller_model_in_the_same_bucket_does_not_calibrate():
    """The smoke study's 0.85M-parameter runs and a 494M model share the "<1B" bucket, not their utilisation."""
    tiny = _record("smoke", 10_000, 100.0, 170.0, n_params=853_120)
    near = _record("qwen", 10_000, 50.0, 60.0, n_params=400_000_000)
    found = cal.Calibration(None, [tiny, near])
    assert tiny["size"] == near["size"] == "<1B"
    assert [r["experiment"] for r in found.matching("lora", "fake", 494_032_768)] == ["qwen"]
    assert [r["experiment"] for r in found.matching("lora", "fake", 853_120)] == ["smoke"]
    assert found.lookup("lora", "fake", 494_032_768).runs == 1
