"""The experiment directory: every path and record the login side and the jobs share.

A contract module: ``train/`` imports it too (the experiment directory: every path and record both sides share).

As submitit's ``JobPaths`` owns the files of a job, :class:`ExperimentDir` owns those of an
experiment: nothing else in ``launch/``, ``train/`` or ``bench/`` spells a name below (the layer
check, ``tools/check_layers.py``, enforces it). Standard library, PyYAML and submitit only: both
sides import it.

Layout::

    EXP/config.yaml                  config_file      the resolved config every job reads
    EXP/manifest.json                manifest_file    Manifest: hash, commit, executor, jobs
    EXP/profile.yaml                 profile_file     the site profile (Slurm only)
    EXP/forecast.json                forecast_file    the cost forecast the plan was made with (launch.cost.costcheck)
    EXP/data/                        data             DataFiles: train.jsonl, eval.jsonl, data_report.json,
                                                      aux/<method>/<task>.jsonl (multi_task)
    EXP/code/                        code_dir         the frozen launch/, train/, ds_configs/ (Slurm only)
    EXP/jobs/<job id>/               job_paths()      submitit's folders: logs, pickles (its own names)
    EXP/methods/<name>/              method(name)     MethodDir: metrics.json (TrainMetrics),
                                                      progress.json (Progress), checkpoints/, model/, adapter/,
                                                      shots.jsonl (few_shot), features/, head.safetensors
                                                      (feature_head)
    EXP/methods/<name>/cells/<i>/    method(name[i])  the same, for cell i of a sweep (launch.spec.sweep)
    EXP/eval/                        eval             EvalDir: predictions/, results/ (EvalResult),
                                                      partial/ (chunks), progress.json (EvalProgress);
                                                      a cell's files are <name>/<i>.jsonl, <name>/<i>.json
    EXP/eval/continual/<name>/old/   eval.continual() the same for a continued method (init_from): the
    EXP/eval/continual/<name>/new/                    earlier split's questions, and the earlier result
    EXP/wandb/                       wandb_dir        W&B runs (offline mode)
    EXP/summary.json, report.md, report.html, chart.png

Models and jobs are named by *address*: ``base``, a method (``lora``: its one run in an experiment
without a sweep) or a cell of a sweep (``lora[3]``, :func:`cell_address`). Paths spell a cell by
its index, never with ``[``/``]`` (glob characters in every shell).

Inside ``checkpoints/`` :mod:`train.checkpoint` owns its format (as accelerate owns its files
inside each checkpoint). Every record is written atomically (:mod:`launch.store.fsio`) and keeps the
keys earlier versions wrote, so older experiments still read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch.store.fsio import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json

if tp.TYPE_CHECKING:  # pragma: no cover
    from submitit.core.utils import JobPaths

    from launch.site.profiles import SlurmProfile
    from launch.spec.config import ExperimentConfig


_CELL = re.compile(r"(?P<method>.+)\[(?P<index>[0-9]+)\]")


def cell_address(method: str, index: int | None) -> str:
    """A model's or job's address: ``lora[3]`` for cell 3 of a sweep, ``lora`` (``index`` None) without one."""
    return method if index is None else f"{method}[{index}]"


def parse_address(address: str) -> tuple[str, int | None]:
    """``("lora", 3)`` for ``lora[3]``; ``("lora", None)`` for ``lora`` (a method, or ``base``, ``eval``)."""
    match = _CELL.fullmatch(address)
    return (match["method"], int(match["index"])) if match else (address, None)


def _address_path(root: Path, address: str, cell_folder: str = "", suffix: str = "") -> Path:
    """``root/<method><suffix>``, or ``root/<method>/<cell_folder>/<i><suffix>`` for a cell."""
    method, index = parse_address(address)
    if index is None:
        return root / f"{method}{suffix}"
    parent = root / method / cell_folder if cell_folder else root / method
    return parent / f"{index}{suffix}"


_RESULT_REF = re.compile(r"(?P<exp>.+):(?P<address>[A-Za-z0-9][A-Za-z0-9_.-]*(\[[0-9]+\])?)")
"""``EXP_DIR:method`` (or ``EXP_DIR:lora[3]``, a cell of a sweep): a method's ``init_from`` naming an earlier
experiment's result."""


def parse_result_ref(text: str) -> tuple[ExperimentDir, str] | None:
    """``(earlier experiment, address)`` of an ``init_from`` written ``EXP_DIR:method``; None for a plain path
    (a saved adapter or model directory), which is also what a text naming an existing file or folder is."""
    if not text or os.path.exists(os.path.expanduser(text)):
        return None
    match = _RESULT_REF.fullmatch(text)
    return (ExperimentDir(Path(match["exp"]).expanduser()), match["address"]) if match else None


def result_dir(init_from: str, adapts: str) -> Path:
    """The folder an ``init_from`` names: the earlier method's ``model/`` (``adapts`` ``full_sft``) or
    ``adapter/`` (the rest) for ``EXP_DIR:method``, the path itself otherwise."""
    ref = parse_result_ref(init_from)
    if ref is None:
        return Path(init_from).expanduser()
    trained = ref[0].method(ref[1])
    return trained.model_dir if adapts == "full_sft" else trained.adapter_dir


def absolute_result_ref(init_from: str | None) -> str | None:
    """``init_from`` with its path made absolute (links not followed), so a job does not depend on its cwd."""
    if not init_from:
        return init_from
    ref = parse_result_ref(init_from)
    if ref is None:
        return os.path.abspath(os.path.expanduser(init_from))
    return f"{os.path.abspath(ref[0].root)}:{ref[1]}"


def now_iso() -> str:
    """The current UTC time as the records write it (``2026-11-30T12:00:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _known(cls: type, raw: tp.Mapping[str, tp.Any]) -> dict[str, tp.Any]:
    """The entries of ``raw`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _read_object(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- records


EVAL_JOB = "eval"
"""The evaluation job's name in the manifest; ``eval[i]`` are the tasks of an evaluation array."""


@dataclass
class JobRecord:
    """One job of the manifest: a method's or a cell's training job (an array task ``4242_3`` for a
    cell of a sweep submitted as an array), ``eval``, or a task ``eval[i]`` of an evaluation array."""

    job_id: str
    executor: str = "local"
    kind: str | None = None
    depends_on: list[str] | None = None
    world_size: int | None = None
    previous_job_ids: list[str] = field(default_factory=list)
    """Earlier jobs of the same method (``cyberft resume``): its cost counts them all."""

    @property
    def all_ids(self) -> list[str]:
        """Every job this method ran as, oldest first."""
        return [*self.previous_job_ids, self.job_id]

    def resubmitted(self, job_id: str) -> JobRecord:
        """This record after the method was sent again as ``job_id``."""
        return dataclasses.replace(self, job_id=job_id, previous_job_ids=self.all_ids)

    def to_dict(self) -> dict[str, tp.Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if v is not None and not (k == "previous_job_ids" and not v)}

    @classmethod
    def from_dict(cls, raw: tp.Mapping[str, tp.Any]) -> JobRecord:
        return cls(**_known(cls, raw))


_MANIFEST_ALWAYS = (
    "experiment",
    "created_at",
    "config_hash",
    "git_commit",
    "source_config",
    "overrides",
    "methods",
    "jobs",
    "executor",
)


@dataclass
class Manifest:
    """``manifest.json``: what the experiment is and which jobs ran it.

    ``executor`` is ``local`` (``cyberft run``) or ``slurm`` (``cyberft submit``); a manifest
    written before it was recorded is a local run's. Keys this version does not know are kept
    in ``extra`` and written back unchanged.
    """

    experiment: str = ""
    created_at: str = ""
    config_hash: str = ""
    git_commit: str | None = None
    source_config: str = ""
    overrides: list[str] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)
    """Method name -> kind."""
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    executor: str = "local"
    profile: str | None = None
    code_snapshot: str | None = None
    submitted_at: str | None = None
    submit_error: str | None = None
    """sbatch's refusal of a job after others were submitted (they were cancelled)."""
    cancelled: list[str] = field(default_factory=list)
    resumed: list[dict] = field(default_factory=list)
    extra: dict[str, tp.Any] = field(default_factory=dict)

    @property
    def on_slurm(self) -> bool:
        return self.executor == "slurm"

    def training_jobs(self) -> dict[str, JobRecord]:
        """The training jobs (one per method, or per cell of a sweep), without the evaluation's."""
        return {name: rec for name, rec in self.jobs.items() if parse_address(name)[0] != EVAL_JOB}

    def eval_jobs(self) -> dict[str, JobRecord]:
        """The evaluation's jobs: ``eval``, after the ``eval[i]`` tasks that share out the scoring (if any)."""
        return {name: rec for name, rec in self.jobs.items() if parse_address(name)[0] == EVAL_JOB}

    def to_dict(self) -> dict[str, tp.Any]:
        """The JSON object, in the order (and with the keys) earlier versions wrote."""
        out: dict[str, tp.Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                continue
            if f.name == "jobs":
                value = {name: rec.to_dict() for name, rec in value.items()}
            if f.name in _MANIFEST_ALWAYS or value not in (None, []):
                out[f.name] = value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, raw: tp.Mapping[str, tp.Any]) -> Manifest:
        known = _known(cls, raw)
        known["jobs"] = {name: JobRecord.from_dict(rec) for name, rec in (raw.get("jobs") or {}).items()}
        known["extra"] = {k: v for k, v in raw.items() if k not in known and k != "extra"}
        return cls(**known)


CPU_BF16_MIN_PARAMS = 100_000_000
"""``precision: auto`` computes in bf16 on a CPU with bf16 matrix units only for models of this many parameters
or more; both sides read it (``train.runtime.decide_precision``, ``train.evaluate.eval_dtype``, and the
calibration's keying, ``launch.cost.calibration.expected_precision``). The measured gain is for a 0.5B model
(LoRA step 1.9x fp32, scoring forward 2.9x under autocast and 3.75x in bf16 weights, issue 27); below
~100M parameters (hidden size 512 or less) the matrix products are too small for AMX tiles to pay for
autocast's casts of every weight and activation, and the smoke models (0.85M) stay fp32 as before."""

_FAILURE_FIELDS = ("method", "kind", "variant", "status", "error", "started_at", "ended_at")
_GPU_FIELDS = ("gpu_name", "gpu_capability", "bf16_native")


@dataclass
class TrainMetrics:
    """``methods/<name>/metrics.json``: how one training job ended and what it cost.

    ``status`` is ``completed`` or ``failed`` on disk; a reader also gets ``missing`` (no file:
    the job never finished) or ``unreadable`` (with ``error``), so a broken job never breaks a report.
    """

    method: str
    kind: str | None = None
    status: str = "missing"
    variant: str | None = None
    """The kind with its LoRA options (:attr:`launch.spec.config.MethodConfig.variant`: ``lora+dora``,
    ``qlora(init=loftq)``...); None in records written before it existed."""
    error: str | None = None
    device: str | None = None
    n_devices: int | None = None
    threads: int | None = None
    cpu_affinity: int | None = None
    """Usable CPUs: a Slurm task bound to one core shows 1."""
    mixed_precision: str | None = None
    gpu_name: str | None = None
    gpu_capability: str | None = None
    bf16_native: bool | None = None
    precision: str | None = None
    """What the job computed in: ``fp32``, or ``bf16``/``fp16`` under autocast (``auto`` resolved; an explicit
    value is used as asked or the job is refused, never swapped: ``train.runtime.decide_precision``)."""
    precision_reason: str | None = None
    """Why: ``as asked``, or what decided ``auto`` (native bf16, the CPU flags seen, the model's size)."""
    cpu_flags: dict[str, bool] | None = None
    """On a CPU: the bf16 features torch saw (``amx_bf16``, ``avx512_bf16``, ``mkldnn_bf16``)."""
    phases_s: dict[str, float] = field(default_factory=dict)
    cpu_share: float | None = None
    """On a CPU: the share of its threads the training phase had, its CPU seconds over its wall seconds x
    ``threads`` (1.0: never waited for a core). A job that shared its cores with other work ran slower than
    the hardware does: the calibration divides its utilisation by this (``launch.cost.calibration``)."""
    wall_s: float | None = None
    train_tokens: int | None = None
    tokens_per_s: float | None = None
    peak_mem_bytes: int | None = None
    peak_mem_kind: str | None = None
    base_mem_bytes: int | None = None
    """Memory in use when the job's libraries were imported and nothing was loaded yet (on the CPU the
    interpreter, torch and the libraries' resident set; on a GPU the allocator's, about 0): the memory
    estimate is checked against ``peak_mem_bytes`` minus this."""
    phase_peak_mem_bytes: dict[str, int] | None = None
    """The peak so far at the end of each phase (``load``, ``train``, ``save``): which phase set the peak."""
    trainable_params: int | None = None
    total_params: int | None = None
    final_loss: float | None = None
    steps: int | None = None
    gpu_hours: float | None = None
    """The job's own estimate; on Slurm the report replaces it with sacct's figures."""
    cpu_hours: float | None = None
    cost_source: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    trainable_dtype: str | None = None
    task_losses: dict[str, float] | None = None
    """``multi_task``: each task's mean loss over its answer tokens in the last steps that had it."""
    task_examples: dict[str, int] | None = None
    """``multi_task``: training examples of each task in the mixture."""

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_dict(self) -> dict[str, tp.Any]:
        """A completed record holds every field (GPU details on a GPU only); a failure only what is known."""
        data = dataclasses.asdict(self)
        if not self.completed:
            return {k: data[k] for k in _FAILURE_FIELDS if k != "variant" or data[k] is not None}
        optional = (
            *_GPU_FIELDS,
            "cpu_flags",
            "task_losses",
            "task_examples",
            "variant",
            "base_mem_bytes",
            "phase_peak_mem_bytes",
            "cpu_share",
        )
        return {k: v for k, v in data.items() if k != "error" and not (k in optional and v is None)}

    @classmethod
    def from_dict(cls, raw: tp.Mapping[str, tp.Any], method: str = "") -> TrainMetrics:
        return cls(**{"method": method, **_known(cls, raw)})


@dataclass
class Progress:
    """``methods/<name>/progress.json``: how far a training job is, for the launcher to show.

    ``flushed_step``: the last step an earlier attempt's W&B run closed cleanly with, so a
    restarted job logs again only what may have been lost.
    """

    step: int
    total_steps: int
    loss: float
    flushed_step: int = 0
    updated_at: str = ""
    task_losses: dict[str, float] | None = None
    """``multi_task``: each task's loss at its last step."""

    def to_dict(self) -> dict[str, tp.Any]:
        data = dataclasses.asdict(self)
        return data if self.task_losses is not None else {k: v for k, v in data.items() if k != "task_losses"}

    @classmethod
    def from_dict(cls, raw: tp.Mapping[str, tp.Any]) -> Progress:
        return cls(**_known(cls, raw))


@dataclass
class EvalResult:
    """``eval/results/<name>.json``: one model's score on the eval split."""

    method: str
    accuracy: float
    ci95: list[float]
    """Wilson 95% interval of the accuracy."""
    n: int
    correct: int
    parse_failures: int | None = None
    """Generations that did not parse as ``ANSWER: X`` (``generate`` mode only)."""
    ties: int | None = None
    """Questions whose best letter score two letters share (``loglik`` mode only)."""
    mode: str = "loglik"
    """``loglik`` or ``generate`` (``eval.mode``), or ``head`` (a ``feature_head`` method, scored by its head)."""
    load_s: float | None = None
    eval_s: float | None = None
    questions_per_s: float | None = None
    precision: str | None = None
    """The dtype the model was scored in (``bf16``, ``fp32``...; None in results written before it was kept)."""

    @classmethod
    def from_counts(
        cls,
        method: str,
        correct: int,
        n: int,
        mode: str,
        *,
        parse_failures: int | None = None,
        ties: int | None = None,
        load_s: float = 0.0,
        eval_s: float = 0.0,
        precision: str | None = None,
    ) -> EvalResult:
        """The result of ``correct`` right answers out of ``n``: accuracy and interval computed here."""
        from launch.results.stats import wilson_interval

        lo, hi = wilson_interval(correct, n)
        return cls(
            method,
            correct / n if n else 0.0,
            [lo, hi],
            n,
            correct,
            parse_failures,
            ties,
            mode,
            round(load_s, 3),
            round(eval_s, 3),
            round(n / eval_s, 1) if eval_s else None,
            precision,
        )

    def to_dict(self) -> dict[str, tp.Any]:
        data = dataclasses.asdict(self)
        return data if self.precision is not None else {k: v for k, v in data.items() if k != "precision"}

    @classmethod
    def from_dict(cls, raw: tp.Mapping[str, tp.Any]) -> EvalResult:
        return cls(**_known(cls, raw))


@dataclass
class EvalProgress:
    """``eval/progress.json``: the model being scored and how far, for the launcher to show."""

    model: str | None = None
    index: int = 0
    """1-based position of ``model`` among ``models``."""
    models: int = 0
    done: int = 0
    total: int = 0
    finished: list[dict[str, tp.Any]] = field(default_factory=list)
    """``{"model", "accuracy"}`` of each model scored so far."""
    updated_at: str = ""

    def to_dict(self) -> dict[str, tp.Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: tp.Mapping[str, tp.Any]) -> EvalProgress:
        return cls(**_known(cls, raw))


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class DataFiles:
    """``EXP/data/``: the prepared split the jobs read (written by :func:`launch.questions.data.prepare_splits`)."""

    root: Path

    @property
    def train_file(self) -> Path:
        return self.root / "train.jsonl"

    @property
    def eval_file(self) -> Path:
        return self.root / "eval.jsonl"

    @property
    def report_file(self) -> Path:
        """Sources and counts of the split."""
        return self.root / "data_report.json"

    def split(self, name: tp.Literal["train", "eval"]) -> Path:
        return {"train": self.train_file, "eval": self.eval_file}[name]

    def aux_file(self, method: str, task: str) -> Path:
        """The prepared questions of one auxiliary task of a ``multi_task`` method."""
        return self.root / "aux" / method / f"{task}.jsonl"


@dataclass(frozen=True)
class MethodDir:
    """``EXP/methods/<name>/`` (or ``.../cells/<i>/``): one method's, or one cell's, training job."""

    root: Path
    address: str = ""
    """``lora`` or ``lora[3]``; the folder's name when not given."""

    @property
    def name(self) -> str:
        """The address of the training run (``lora``, ``lora[3]``)."""
        return self.address or self.root.name

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def progress_file(self) -> Path:
        return self.root / "progress.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model_dir(self) -> Path:
        """The full-SFT model (safetensors + tokenizer)."""
        return self.root / "model"

    @property
    def adapter_dir(self) -> Path:
        """The LoRA/QLoRA/prompt-tuning adapter (+ tokenizer)."""
        return self.root / "adapter"

    @property
    def shots_file(self) -> Path:
        """``few_shot``: the examples put before every question (CyberMetric records, in order)."""
        return self.root / "shots.jsonl"

    def features_file(self, split: str) -> Path:
        """``feature_head``: the cached features and labels of a split (safetensors)."""
        return self.root / "features" / f"{split}.safetensors"

    @property
    def head_file(self) -> Path:
        """``feature_head``: the trained head, its layer and normalisation (safetensors)."""
        return self.root / "head.safetensors"

    def read_metrics(self) -> TrainMetrics:
        """The job's record; ``missing`` without a file, ``unreadable`` (with the reason) when it is not JSON."""
        path = self.metrics_file
        try:
            data = read_json(path)
        except FileNotFoundError:
            return TrainMetrics(self.name, status="missing")
        except (OSError, ValueError) as exc:
            return TrainMetrics(self.name, status="unreadable", error=f"{path}: {exc}")
        if not isinstance(data, dict):
            return TrainMetrics(self.name, status="unreadable", error=f"{path}: not a JSON object")
        return TrainMetrics.from_dict(data, method=self.name)

    def write_metrics(self, metrics: TrainMetrics) -> None:
        atomic_write_json(self.metrics_file, metrics.to_dict())

    def read_progress(self) -> Progress | None:
        """The last progress written; None before the first (or when the file is not a progress record)."""
        data = _read_object(self.progress_file)
        try:
            return Progress.from_dict(data) if data is not None else None
        except TypeError:  # a required key is missing
            return None

    def write_progress(self, progress: Progress) -> None:
        atomic_write_json(self.progress_file, progress.to_dict())


@dataclass(frozen=True)
class EvalDir:
    """``EXP/eval/``: the shared evaluation job's predictions, results, partial chunks and progress."""

    root: Path

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def progress_file(self) -> Path:
        return self.root / "progress.json"

    def predictions_file(self, model: str) -> Path:
        """One line per question: gold, prediction, per-letter log-likelihoods (``model``: an address)."""
        return _address_path(self.predictions_dir, model, suffix=".jsonl")

    def result_file(self, model: str) -> Path:
        return _address_path(self.results_dir, model, suffix=".json")

    def partial_dir(self, model: str) -> Path:
        """The chunks of a model being scored; removed once its result is written."""
        return _address_path(self.root / "partial", model)

    def chunk_file(self, model: str, index: int, count: int) -> Path:
        return self.partial_dir(model) / f"chunk-{index:05d}-of-{count:05d}.jsonl"

    def scored(self) -> list[str]:
        """The addresses of the models with a result, sorted (``base``, ``lora``, ``lora[3]``...)."""
        found = [p.stem for p in self.results_dir.glob("*.json")]
        for p in self.results_dir.glob("*/*.json"):
            if p.stem.isdigit():
                found.append(cell_address(p.parent.name, int(p.stem)))
        return sorted(found)

    def read_result(self, model: str) -> EvalResult | None:
        """The model's result; None when it has none (or only an unreadable one: it is scored again)."""
        data = _read_object(self.result_file(model))
        try:
            return EvalResult.from_dict(data) if data is not None else None
        except TypeError:  # a required key is missing
            return None

    def write_result(self, result: EvalResult) -> None:
        atomic_write_json(self.result_file(result.method), result.to_dict())

    def write_predictions(self, model: str, rows: tp.Iterable[dict]) -> None:
        atomic_write_jsonl(self.predictions_file(model), rows)

    def read_predictions(self, model: str) -> list[dict]:
        """The model's prediction rows (``index``, ``gold``, ``pred``, ``correct``...); [] when it has none."""
        import json

        try:
            text = self.predictions_file(model).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def continual(self, address: str, questions: tp.Literal["old", "new"]) -> EvalDir:
        """A continued model's extra scoring (``init_from``): ``old``, the earlier experiment's eval split
        (``continued``, ``earlier`` and ``base`` scored on it), ``new``, this split (``earlier`` scored on it)."""
        return EvalDir(_address_path(self.root / "continual", address, cell_folder="cells") / questions)

    def shard_progress_file(self, shard: int | None) -> Path:
        """Where task ``shard`` of an evaluation array writes its progress (None: the evaluation job)."""
        return self.progress_file if shard is None else self.root / f"progress-{shard}.json"

    def read_progress(self, shard: int | None = None) -> EvalProgress | None:
        data = _read_object(self.shard_progress_file(shard))
        return EvalProgress.from_dict(data) if data is not None else None

    def write_progress(self, progress: EvalProgress, shard: int | None = None) -> None:
        atomic_write_json(self.shard_progress_file(shard), progress.to_dict())


@dataclass(frozen=True)
class ExperimentDir:
    """One experiment directory (see the module docstring for the layout).

    It is a path (``os.fspath``, ``Path(exp)``), so it goes wherever a directory is expected.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def new(cls, output_dir: str | os.PathLike, name: str) -> ExperimentDir:
        """Make a new, empty ``output_dir/<name>-<UTC time>`` (two in the same second get ``-1``, ``-2``...)."""
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        for i in range(100):
            path = root / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a new experiment directory under {root}")

    # ------------------------------------------------------------------ paths

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_file(self) -> Path:
        return self.root / "manifest.json"

    @property
    def profile_file(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def forecast_file(self) -> Path:
        return self.root / "forecast.json"

    @property
    def data(self) -> DataFiles:
        return DataFiles(self.root / "data")

    @property
    def code_dir(self) -> Path:
        return self.root / "code"

    def code_staging_dir(self) -> Path:
        """Where this process copies the code before renaming it to :attr:`code_dir`."""
        return self.root / f".code.tmp-{os.getpid()}"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def job_folder(self) -> Path:
        """submitit's folder pattern: one sub-directory per job id."""
        return self.jobs_dir / "%j"

    def job_paths(self, job_id: str, task: int = 0) -> JobPaths:
        """submitit's own paths of one task of a job (``.stdout``, ``.stderr``, pickles)."""
        from submitit.core.utils import JobPaths

        return JobPaths(self.job_folder, job_id=job_id, task_id=task)

    def method(self, address: str) -> MethodDir:
        """The training run of a method (``lora``) or of one cell of a sweep (``lora[3]``)."""
        return MethodDir(_address_path(self.root / "methods", address, cell_folder="cells"), address)

    def wandb_run_id(self, address: str) -> str:
        """The W&B run id of a training run: the same for every attempt (requeue, resume) and for the
        evaluation job, which reopens it to put its scores in its summary."""
        method, index = parse_address(address)
        return f"{self.name}-{method}" + (f"-{index}" if index is not None else "")

    @property
    def eval(self) -> EvalDir:
        return EvalDir(self.root / "eval")

    @property
    def wandb_dir(self) -> Path:
        """W&B writes its runs here (``wandb.init(dir=root)`` adds the ``wandb`` part itself)."""
        return self.root / "wandb"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def chart_file(self) -> Path:
        return self.root / "chart.png"

    # ------------------------------------------------------------------ records

    def load_config(self) -> ExperimentConfig:
        """The resolved config, with the schema's checks only: never the original files' (they may have moved)."""
        from launch.spec.config import load_config

        return load_config(self.config_file)

    def write_config(self, cfg: ExperimentConfig) -> None:
        from launch.spec.config import dump_yaml

        atomic_write_text(self.config_file, dump_yaml(cfg))

    def load_profile(self) -> SlurmProfile | None:
        """The profile the experiment was submitted with; None for a local run."""
        from launch.site.profiles import ProfileError, profile_from_dict
        from launch.spec import yamlio

        path = self.profile_file
        if not path.is_file():
            return None
        raw, problem = yamlio.read(path, "profile", "the experiment's profile.yaml")
        if problem:
            raise ProfileError([problem], str(path))
        return profile_from_dict(raw, source=str(path))

    def write_profile(self, profile: SlurmProfile) -> None:
        from launch.spec import yamlio

        atomic_write_text(self.profile_file, yamlio.dump(dataclasses.asdict(profile)))

    def read_forecast(self) -> dict | None:
        """The saved cost forecast (``launch.cost.forecast.Forecast.to_json`` and what ``launch.cost.costcheck``
        adds); None when the experiment has none (made before forecasts, or the model's shape was unknown)."""
        return _read_object(self.forecast_file)

    def write_forecast(self, forecast: tp.Mapping[str, tp.Any]) -> None:
        atomic_write_json(self.forecast_file, dict(forecast))

    def read_manifest(self) -> Manifest:
        return Manifest.from_dict(read_json(self.manifest_file))

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(self.manifest_file, manifest.to_dict())

    def update_manifest(self, **fields: tp.Any) -> Manifest:
        """Read, change ``fields`` (names of :class:`Manifest`), write atomically; the new manifest."""
        manifest = dataclasses.replace(self.read_manifest(), **fields)
        self.write_manifest(manifest)
        return manifest

    def record_job(self, name: str, record: JobRecord) -> Manifest:
        """Put one job into the manifest (a crash after a submission never loses its id)."""
        return self.record_jobs({name: record})

    def record_jobs(self, records: tp.Mapping[str, JobRecord]) -> Manifest:
        """Put the jobs of one submission (an array's cells) into the manifest, in one atomic write."""
        manifest = self.read_manifest()
        manifest.jobs.update(records)
        self.write_manifest(manifest)
        return manifest
