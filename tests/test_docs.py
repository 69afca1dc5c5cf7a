"""The README and docs/ are tested: their commands run or are marked, their links, flags and keys exist.

The rules a page follows are written for its authors in docs/README.md ("Writing these pages"):

- every fenced block has a language; ``bash`` (``sh``, ``shell``, ``console``) blocks hold commands;
- every command in them runs here, verbatim, in a scratch copy of the checkout's layout and exits 0,
  or a marker line above it (``# long``, ``# needs: slurm``, ...) says why it cannot; only ``cyberft``
  commands run here, anything else must be marked;
- every ``cyberft <command> --flag`` (fenced or inline) is a flag of that command in ``launch/cli.py``;
  every ``key=value`` override and every key of a ``yaml`` block is a field of the config schema
  (``launch/spec/config.py``), or of the profile's (``launch/site/profiles.py``) for a block headed by a
  ``slurm/profiles/`` comment;
- every relative link names a file that exists, and its ``#anchor`` a heading there (GitHub's slug);
  every page of docs/ is linked from the README.

The commands run in this process (``launch.cli.main``): the whole file takes a few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
import types
import typing as tp
from pathlib import Path

import pytest
import yaml

from launch import cli
from launch.site.profiles import SlurmProfile
from launch.spec.config import ExperimentConfig, SweepConfig
from launch.spec.schema import field_types
from support import mddocs
from support.mddocs import REPO, Command, doc_files, rel

FILES = doc_files()
BLOCKS = [b for f in FILES for b in mddocs.blocks(f)]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in mddocs.SHELL]
COMMANDS: list[Command] = [c for b in SHELL_BLOCKS for c in mddocs.commands(b)[0]]
RUNNABLE = [c for c in COMMANDS if not c.marked]
MARKED = [c for c in COMMANDS if c.marked]
OVERRIDE_COMMANDS = ("run", "validate", "submit")

# The smoke study's tiny model, as far as the login side reads it (config.json: the memory estimate,
# the forecast's parameter count, the feature head's layer check); `make smoke` builds the real one.
STAND_IN_MODEL = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}


# --------------------------------------------------------------------------- the rules themselves


def test_the_docs_hold_commands_that_run_and_commands_that_are_marked():
    """A floor, so that a parser change that finds no commands cannot pass the other tests vacuously."""
    assert len(FILES) >= 10, [rel(f) for f in FILES]
    assert len(RUNNABLE) >= 10, [c.where for c in RUNNABLE]
    assert len(MARKED) >= 10, [c.where for c in MARKED]


@pytest.mark.parametrize(
    "line, parsed",
    [
        ("# long", (True, ())),
        ("# needs: slurm", (False, ("slurm",))),
        ("# needs: slurm, experiment (a directory `submit` printed)", (False, ("slurm", "experiment"))),
        ("# long, needs: network, data (see data/cybermetric/README.md)", (True, ("network", "data"))),
        ("# needs slurm", None),
        ("# needs: cluster", None),
        ("# Long", None),
        ("# long needs: gpu", None),
    ],
)
def test_marker_grammar(line, parsed):
    assert mddocs.parse_marker(line) == parsed
    assert mddocs.looks_like_marker(line)


def test_a_marker_covers_its_paragraph_and_a_broken_one_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n# needs: gpu\nmake gpu-check\nmake gpu-check --x\n\ncyberft --help\n# need: slurm\n"
        "cyberft status X\n# long\n```\n"
    )
    (block,) = mddocs.blocks(page)
    cmds, problems = mddocs.commands(block)
    assert [(c.text, c.needs, c.long) for c in cmds] == [
        ("make gpu-check", ("gpu",), False),
        ("make gpu-check --x", ("gpu",), False),
        ("cyberft --help", (), False),
        ("cyberft status X", (), False),
    ]
    assert len(problems) == 2 and "'# need: slurm' is not a marker" in problems[0]
    assert "a marker with no command under it" in problems[1]


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("The real study: Qwen2.5-Coder-0.5B-Instruct", "the-real-study-qwen25-coder-05b-instruct"),
        ("1. Config and `validate`", "1-config-and-validate"),
        ("What bounds the evaluation at 1.4x lm-eval", "what-bounds-the-evaluation-at-14x-lm-eval"),
        ("few_shot", "few_shot"),
        ("Secrets, see [here](x.md)", "secrets-see-here"),
    ],
)
def test_github_slug(heading, anchor):
    assert mddocs.slug(heading) == anchor


# --------------------------------------------------------------------------- blocks and markers


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_every_fenced_block_has_a_language(path):
    bad = [f"{rel(path)}:{b.line - 1}: ```{b.lang}" for b in mddocs.blocks(path) if b.lang not in mddocs.LANGUAGES]
    assert not bad, f"label each block with one of {', '.join(mddocs.LANGUAGES)} (docs/README.md): {bad}"


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_markers_are_well_formed(path):
    problems = [p for b in mddocs.blocks(path) if b.lang in mddocs.SHELL for p in mddocs.commands(b)[1]]
    assert not problems, "\n".join(problems)


def test_every_unmarked_command_is_one_this_test_runs():
    """Only ``cyberft`` commands run here; anything else (make, cp, python, wandb ...) must say why it cannot."""
    bad = [f"{c.where}: {c.text}" for c in RUNNABLE if c.argv()[:1] != ["cyberft"]]
    assert not bad, "mark these (# long, # needs: ...; docs/README.md):\n" + "\n".join(bad)


# --------------------------------------------------------------------------- running the commands


@pytest.fixture(scope="module")
def checkout_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory laid out like the checkout for what the commands read: the shipped configs,
    data and DeepSpeed files (links), and a stand-in for the smoke model's config.json."""
    root = tmp_path_factory.mktemp("docs-checkout")
    for name in ("configs", "data", "ds_configs"):
        (root / name).symlink_to(REPO / name)
    model = root / ".cache" / "tiny-llama"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(STAND_IN_MODEL))
    return root


def run_cyberft(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # --help
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("cmd", [c for c in RUNNABLE if c.argv()[:1] == ["cyberft"]], ids=lambda c: c.where)
def test_documented_command_runs(cmd: Command, checkout_layout: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(checkout_layout)
    rc, out, err = run_cyberft(cmd.argv()[1:])
    assert rc == 0, f"{cmd.where}: `{cmd.text}` exited {rc}\n{err[-3000:]}\n{out[-2000:]}"


# --------------------------------------------------------------------------- flags and keys


def _mentions() -> list[tuple[str, list[str]]]:
    """``(where, words after cyberft)`` of every ``cyberft ...`` in a shell block or an inline span."""
    found = [(c.where, words) for c in COMMANDS for words in mddocs.cyberft_mentions(c.text)]
    for path in FILES:
        for line, code in mddocs.inline_code(path):
            if code.startswith("cyberft ") or code == "cyberft":
                found += [(f"{rel(path)}:{line}", w) for w in mddocs.cyberft_mentions(code)]
    return found


MENTIONS = _mentions()


def test_documented_commands_and_flags_exist():
    parser = cli.build_parser()
    problems = [f"{where}: {p}" for where, words in MENTIONS for p in mddocs.walk_parser(parser, words)[1]]
    assert not problems, "\n".join(problems)


def _unwrap(t: tp.Any) -> tp.Any:
    """The type a field holds: ``Annotated`` ranges and ``None`` alternatives dropped."""
    while True:
        origin = tp.get_origin(t)
        if origin is tp.Annotated:
            t = tp.get_args(t)[0]
        elif origin in (tp.Union, types.UnionType):
            args = [a for a in tp.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        else:
            return t


def key_problem(root: type, key: str) -> str | None:
    """What is wrong with a dotted key of ``root`` (``methods.lora.lora.r``); None when it is a field.

    A list of sections takes an index or a name (``methods.0``, ``methods.lora``); a mapping field takes
    any key, except ``sweep.grid``, whose keys are dotted keys of the config again."""
    parts, t, where = key.split("."), root, []
    for i, part in enumerate(parts):
        t = _unwrap(t)
        if dataclasses.is_dataclass(t):
            fields = field_types(t)
            if part not in fields:
                section = ".".join(where) or "the top level"
                return f"{key}: {section} has no field {part!r} (it has: {', '.join(fields)})"
            if t is SweepConfig and part == "grid" and i + 1 < len(parts):
                return key_problem(ExperimentConfig, ".".join(parts[i + 1 :]))
            t = fields[part]
        elif tp.get_origin(t) is list and dataclasses.is_dataclass(_unwrap(tp.get_args(t)[0])):
            t = tp.get_args(t)[0]  # the part is an index or a name
        elif tp.get_origin(t) is dict or t is tp.Any:
            return None
        else:
            return f"{key}: {'.'.join(where)} is a value, not a section"
        where.append(part)
    return None


def yaml_problems(value: tp.Any, t: tp.Any, where: str) -> list[str]:
    """Every key in a YAML value that the type ``t`` does not have."""
    t = _unwrap(t)
    if dataclasses.is_dataclass(t) and isinstance(value, dict):
        fields, out = field_types(t), []
        for k, v in value.items():
            here = f"{where}.{k}" if where else str(k)
            if k not in fields:
                out.append(f"{here}: no such field (known: {', '.join(fields)})")
            elif t is SweepConfig and k == "grid" and isinstance(v, dict):
                out += [p for g in v if (p := key_problem(ExperimentConfig, str(g)))]
            else:
                out += yaml_problems(v, fields[k], here)
        return out
    if tp.get_origin(t) is list and isinstance(value, list):
        return [p for i, v in enumerate(value) for p in yaml_problems(v, tp.get_args(t)[0], f"{where}[{i}]")]
    return []


def _overrides(words: list[str]) -> list[str]:
    """The keys of the ``key=value`` words of a ``cyberft run|validate|submit`` command."""
    if not words or words[0] not in OVERRIDE_COMMANDS:
        return []
    keys = [w.split("=", 1)[0] for w in words[1:] if "=" in w and not w.startswith("-")]
    return [k for k in keys if k != "key"]  # the command table's `[key=value ...]`


def _inline_overrides() -> list[tuple[str, str]]:
    """``(where, key)`` of inline spans made only of ``key=value`` words whose key starts with a config section."""
    sections = field_types(ExperimentConfig)
    found = []
    for path in FILES:
        for line, code in mddocs.inline_code(path):
            try:
                words = shlex.split(code)
            except ValueError:
                continue
            keys = [w.split("=", 1)[0] for w in words if re.match(r"^[a-z_]+(\.[\w-]+)+=", w)]
            if keys and len(keys) == len(words) and all(k.split(".")[0] in sections for k in keys):
                found += [(f"{rel(path)}:{line}", k) for k in keys]
    return found


OVERRIDES = [(where, k) for where, words in MENTIONS for k in _overrides(words)] + _inline_overrides()
YAML_BLOCKS = [b for b in BLOCKS if b.lang == "yaml"]


def test_documented_override_keys_exist():
    assert OVERRIDES, "no override found: the search is broken"
    problems = [f"{where}: {p}" for where, key in OVERRIDES if (p := key_problem(ExperimentConfig, key))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: f"{rel(b.path)}:{b.line}")
def test_documented_yaml_keys_exist(block):
    profile = bool(block.lines) and block.lines[0].lstrip().startswith("#") and "slurm/profiles/" in block.lines[0]
    value = yaml.safe_load("\n".join(block.lines))
    problems = yaml_problems(value, SlurmProfile if profile else ExperimentConfig, "")
    assert not problems, f"{rel(block.path)}:{block.line}:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- links


LINKS = [(path, line, target) for path in FILES for line, target in mddocs.links(path)]


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_links_and_anchors_resolve(path):
    problems = []
    for line, target in mddocs.links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{rel(path)}:{line}: {target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in mddocs.anchors(dest)):
            known = sorted(mddocs.anchors(dest)) if dest.suffix == ".md" else []
            problems.append(f"{rel(path)}:{line}: {target}: no heading #{anchor} (there: {', '.join(known)})")
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    readme = REPO / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for _, t in mddocs.links(readme)}
    orphans = [rel(p) for p in FILES[1:] if p.resolve() not in linked]
    assert not orphans, f"link these from README.md's documentation table: {orphans}"
