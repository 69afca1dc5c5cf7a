"""cyberft import-gguf on tiny GGUF files written here with the gguf package (no download)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launch.spec.config import InputError
from support.cli import cyberft
from support.tiny_gguf import write_llama_gguf
from train import gguf_import
from train.tiny_model import ARCHITECTURES, DEFAULT_DATA, _corpus, build_tiny_model, build_tokenizer

REPO = Path(__file__).resolve().parents[1]
SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def llamas(tmp_path_factory) -> dict[str, Path]:
    """Tiny Llamas with tied (SmolLM2's shape) and untied embeddings, and their GGUF files."""
    root = tmp_path_factory.mktemp("gguf")
    tok = build_tokenizer(_corpus(DEFAULT_DATA))
    out = {}
    for arch in ("llama-tied", "llama"):
        model_dir = build_tiny_model(root / arch, arch=arch, tokenizer=tok, pretrain_steps=0, **SIZES)
        out[arch] = model_dir
        out[f"{arch}.gguf"] = write_llama_gguf(model_dir, root / f"{arch}.gguf")
    out["q8.gguf"] = write_llama_gguf(out["llama-tied"], root / "q8.gguf", quant="Q8_0")
    return out


def logits(model_dir: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, 600, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits


@pytest.mark.parametrize("arch", ["llama-tied", "llama"])
def test_a_float_gguf_imports_to_the_model_it_was_written_from(arch, llamas, tmp_path):
    out = tmp_path / "imported"
    record = gguf_import.import_gguf(llamas[f"{arch}.gguf"], out)
    assert record["max_logit_diff"] == 0.0 and record["architecture"] == "llama"
    assert record["tied_embeddings"] == (arch == "llama-tied")
    assert torch.equal(logits(out), logits(llamas[arch]))
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] == (arch == "llama-tied")
    from safetensors.torch import load_file

    names = set(load_file(out / "model.safetensors"))
    assert ("lm_head.weight" in names) == (arch == "llama"), "a tied lm_head is stored once, as the embedding"
    from transformers import AutoTokenizer

    from launch.questions import prompting

    ours, theirs = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(llamas[arch])
    assert ours.chat_template == theirs.chat_template
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource

    for question in load_questions(DataSource(path=str(DEFAULT_DATA)))[:20]:
        assert prompting.prompt_ids(ours, question) == prompting.prompt_ids(theirs, question)
    assert not list(tmp_path.glob(".imported.*")), "the staging directory was left behind"


def test_a_quantised_gguf_saves_once_its_marker_is_dropped(llamas, tmp_path):
    """Q8_0 blocks are dequantised; without dropping GGUF's marker save_pretrained would refuse."""
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(llamas["q8.gguf"].parent), gguf_file=llamas["q8.gguf"].name)
    with pytest.raises(ValueError, match="not serializable"):  # what a user hits without import-gguf
        plain.save_pretrained(tmp_path / "refused")
    record = gguf_import.import_gguf(llamas["q8.gguf"], tmp_path / "imported")
    assert record["max_logit_diff"] == 0.0
    # Q8_0 rounds each weight to 1/127 of its block's largest: close to the float model, not equal.
    diff = float((logits(tmp_path / "imported") - logits(llamas["llama-tied"])).abs().max())
    assert 0 < diff < 0.1, diff


def test_a_failed_import_leaves_the_output_directory_as_it_was(llamas, tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("earlier import")
    calls = []

    def drifting(model, tokenizer):  # the reloaded model disagrees with the loaded one
        calls.append(1)
        return torch.zeros(1, 3, 5) + len(calls)

    monkeypatch.setattr(gguf_import, "probe_logits", drifting)
    with pytest.raises(RuntimeError, match="logits differ"):
        gguf_import.import_gguf(llamas["llama-tied.gguf"], out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return cyberft("import-gguf", *args)


def test_a_file_that_is_not_gguf_exits_2_and_writes_nothing(tmp_path):
    res = cli(str(REPO / "README.md"), str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    assert "is not a GGUF file" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_an_architecture_transformers_cannot_load_exits_2_listing_the_supported_ones(llamas, tmp_path):
    rwkv = write_llama_gguf(llamas["llama-tied"], tmp_path / "rwkv.gguf", arch="rwkv6")
    res = cli(str(rwkv), str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    assert "architecture 'rwkv6'" in res.stderr and "supported: " in res.stderr
    for arch in ("llama", "qwen2", "phi3", "gemma2"):
        assert arch in res.stderr.split("supported: ")[1]
    assert not (tmp_path / "out").exists()


def test_every_tiny_architecture_name_is_a_cli_choice():
    res = subprocess.run([sys.executable, "-m", "train.tiny_model", "--help"], cwd=REPO, capture_output=True, text=True)
    for arch in ARCHITECTURES:
        assert arch in res.stdout


def test_import_gguf_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\nimport launch.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        launch.cli.main(['import-gguf', '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'gguf'}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_input_error_names_the_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        gguf_import.gguf_architecture(tmp_path / "missing.gguf")
