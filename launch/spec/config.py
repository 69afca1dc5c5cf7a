"""The one typed experiment config: YAML + dotted ``key=value`` overrides.

A contract module: ``train/`` imports it too (the experiment's schema: both sides read the same typed config).

Every field is documented where it is defined. Defaults live here and only
here. The module is standard library + PyYAML so that the login node, the
compute nodes and the tests all read configs the same way, without torch.

Loading collects *every* problem (unknown keys with a did-you-mean, wrong
types, numbers out of range, cross-field conflicts, values that cannot go into
a job script, token-shaped values) and raises one :class:`ConfigError` listing
them all, each naming the field, the value (shortened, secrets never shown) and
the fix. YAML is read by :mod:`launch.spec.yamlio` and typed by :mod:`launch.spec.schema`,
as site profiles are. Whether the files a config names exist and hold usable
data is checked separately (:mod:`launch.spec.preflight`), by the commands that start
something, never by a job reloading its experiment's frozen config.

Example
-------
>>> cfg = load_config("configs/smoke.yaml", ["methods.lora.learning_rate=1e-3"])
>>> cfg.methods[1].learning_rate
0.001
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from launch.spec import scriptsafe, yamlio
from launch.spec.redact import short
from launch.spec.schema import NAME_RE, InputError, Range, build, key_label

METHOD_KINDS = ("full_sft", "lora", "qlora", "few_shot", "prompt_tuning", "feature_head", "multi_task", "ia3")
"""Every method kind, in the order docs/methods.md presents them (``MethodConfig.kind`` accepts exactly these)."""
SINGLE_DEVICE_KINDS = ("qlora", "few_shot", "feature_head")
"""Kinds whose job runs as one process: QLoRA's 4-bit base, and the two that train nothing through
accelerate (few-shot selects its examples; the feature head extracts features, then fits a small head)."""
KIND_SECTIONS = ("few_shot", "prompt_tuning", "feature_head", "multi_task", "ia3")
"""Method sections that only their own kind reads (each named as its kind)."""
MAX_NAME_LEN = 100
"""Longest experiment or method name: each names directories (``<name>-<UTC time>``,
``methods/<name>``) and Slurm jobs (``<experiment>.<method>``), and file names stop at 255 bytes."""
LETTERS = ("A", "B", "C", "D")
BIG = 10**9
"""Upper bound of counts that have no natural limit (steps, examples): far above any real run, far
below what would overflow the arithmetic that uses them."""
FRACTION = Range(0, 1, "a fraction strictly between 0 and 1", lo_open=True, hi_open=True)
SEED = Range(0, 2**32 - 1, f"a whole number from 0 to {2**32 - 1}")
TRAINING_FREE_KINDS: tuple[str, ...] = ()
"""Method kinds whose cells get no training job, the evaluation scoring them from the config alone. None
today: even few-shot has a job (it selects its examples, ``shots.jsonl``); every kind has one per cell."""


class ConfigError(InputError):
    """Every problem found in an experiment config (``field: what is wrong (value) -> fix``)."""


# --------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    """Which model to fine-tune."""

    name_or_path: str = ""
    """A Hugging Face hub name (``meta-llama/Meta-Llama-3-8B``) or a local directory
    written by ``save_pretrained``. Relative paths are resolved against the
    directory the CLI runs from."""

    dtype: tp.Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype when loading. ``auto``: bfloat16 on a GPU that supports it,
    float32 on CPU."""

    trust_remote_code: bool = False
    """Passed to ``from_pretrained``; leave off unless the model needs it."""

    max_seq_len: tp.Annotated[int, Range(16, 1 << 20)] = 512
    """Prompts plus answers longer than this are truncated from the left of the
    prompt (the answer is always kept)."""


@dataclass
class DataSource:
    """One dataset: a file or a Hugging Face dataset."""

    path: str = ""
    """CyberMetric JSON (``{"questions": [...]}``), JSONL with the same records, a
    directory written by ``datasets.save_to_disk``, or a hub dataset name."""

    format: tp.Literal["auto", "cybermetric", "jsonl", "hf"] = "auto"
    """``auto`` picks by extension: ``.json`` CyberMetric, ``.jsonl`` JSONL, a
    directory or anything else a Hugging Face dataset."""

    split: str = "train"
    """Split to read for Hugging Face datasets (ignored for files)."""

    examples: tp.Annotated[int, Range(1, BIG, "a positive number of records, or null")] | None = None
    """How many records the source holds, so that the cost forecast can be made before the data is on this
    machine (``cyberft submit --dry-run`` before the file is fetched; ``data.train.examples=10000`` as an
    override does the same). The split is then planned from this count as ``eval_fraction``, ``max_train``
    and ``max_eval`` would make it (no duplicates assumed), each question as long as the bundled sample's
    on average, and the forecast says its tokens were estimated so. Once the data is read, its own count
    is used (and a different one noted). null: no forecast without the data."""


@dataclass
class DataConfig:
    """Training and evaluation data."""

    train: DataSource = field(default_factory=DataSource)
    """Training questions."""

    eval: DataSource | None = None
    """Held-out questions. ``null``: split ``eval_fraction`` off ``train``."""

    eval_fraction: tp.Annotated[float, FRACTION] = 0.2
    """Fraction of ``train`` held out when ``eval`` is null (0 < x < 1)."""

    seed: tp.Annotated[int, Range(0, 2**32 - 1, f"a whole number from 0 to {2**32 - 1}")] = 0
    """Seed of the train/eval split; the same seed gives the same split."""

    dedup: bool = True
    """Drop training questions whose normalised text also appears in the eval set
    (CyberMetric-500 and -2000 share 130 questions)."""

    max_train: tp.Annotated[int, Range(1, BIG, "a positive number, or null for all")] | None = None
    """Keep at most this many training questions (after the split), for quick runs."""

    max_eval: tp.Annotated[int, Range(1, BIG, "a positive number, or null for all")] | None = None
    """Keep at most this many eval questions, for quick runs."""


@dataclass
class LoraSettings:
    """LoRA adapter settings, used by ``lora`` and ``qlora`` methods."""

    r: tp.Annotated[int, Range(1, 65536)] = 16
    """Adapter rank."""

    alpha: tp.Annotated[int, Range(1, 1 << 20)] = 32
    """Scaling numerator (``alpha / r`` multiplies the adapter output)."""

    dropout: tp.Annotated[float, Range(0, 1, "between 0 and 1", hi_open=True)] = 0.0
    """Dropout on the adapter input."""

    target_modules: tp.Literal["all-linear"] | list[str] = "all-linear"
    """Modules that get adapters. ``all-linear`` (peft's name): every linear layer of the decoder,
    whatever the architecture calls them (Llama's ``q_proj``..``down_proj``, Phi-3's fused ``qkv_proj``
    and ``gate_up_proj``, GPT-NeoX's ``query_key_value``...), not the output layer. Or a list of module
    names, matched as peft does (a name or its last dotted parts), e.g. ``[q_proj, v_proj]``; an entry
    that matches no linear layer of the model stops the job before its first step, listing the names
    the model has."""

    use_dora: bool = False
    """DoRA (Liu et al. 2024, peft ``use_dora``): each adapted weight is split into a trained magnitude (one
    number per output feature) and a direction that LoRA adapts. The weight's norm is recomputed at every
    forward, which costs time (``launch.cost.forecast.DORA_TIME_FACTOR``); ``lora`` and ``qlora`` (peft
    dequantises the 4-bit weight for the norm)."""

    use_rslora: bool = False
    """Rank-stabilised LoRA (Kalajdzievski 2023, peft ``use_rslora``): the adapter output is scaled by
    ``alpha / sqrt(r)`` instead of ``alpha / r``, so higher ranks keep learning. Costs nothing."""

    init: tp.Literal["default", "gaussian", "pissa", "olora", "loftq"] = "default"
    """How the adapters start (peft ``init_lora_weights``). ``default``: peft's ``True`` (A Kaiming-uniform,
    B zero: the model starts as the base). ``gaussian``: A normal with std ``1/r``, B zero. ``pissa``
    (Meng et al. 2024) and ``olora`` (Buyukakyuz 2024): the adapters start as the top ``r`` singular
    vectors (PiSSA, an exact SVD) or a QR factor (OLoRA) of each weight, and the base keeps the residual;
    the saved adapter is converted to a plain LoRA adapter of rank ``2r`` on the original base (peft's
    ``path_initial_model_for_weight_conversion``), so the evaluation loads it like any other; ``lora``
    only, without ``use_dora``. ``loftq`` (Li et al. 2023): ``qlora`` only, the adapters start as the
    rank-``r`` SVD of the 4-bit quantisation error, read from the unquantised ``model.safetensors``
    (peft ``replace_lora_weights_loftq``); peft computes it on CUDA only, so the job needs a GPU."""


@dataclass
class FewShotSettings:
    """``few_shot``: no training; ``k`` solved training questions are put before every eval question.

    The examples are the same for every question (a shared prompt prefix, which the evaluation
    computes once per model: see docs/methods.md "How it scores"), drawn from the training split with a seed,
    balanced over the answer letters (each letter ``k / 4`` times, +-1), never a question whose
    normalised text is in the eval split. Each example is a prior user turn (the question in the
    same template) and assistant turn (``ANSWER: X``) through the chat template, as the model sees
    its own answer; without a chat template, the same blocks one after the other."""

    k: tp.Annotated[int, Range(1, 256)] = 4
    """Examples before each question; at most the training split's size (checked with the data).
    Every prompt, examples included, must fit ``model.max_seq_len`` (checked by the method's job)."""

    seed: tp.Annotated[int, Range(0, 2**32 - 1, f"a whole number from 0 to {2**32 - 1}")] | None = None
    """Seed of the draw; null: the experiment's ``seed``."""


@dataclass
class PromptTuningSettings:
    """``prompt_tuning``: trained virtual tokens (peft soft prompts) before every prompt, the model frozen.

    Trained by the same loop as LoRA, saved as an adapter, scored by the shared evaluation. The
    virtual tokens are prepended to every row, so the method needs ``batching: padded`` (packing
    several examples into one row would give them one soft prompt between them)."""

    style: tp.Literal["prompt_tuning", "p_tuning"] = "prompt_tuning"
    """``prompt_tuning``: the virtual tokens' embeddings are the parameters (peft ``PromptTuningConfig``,
    Lester et al. 2021). ``p_tuning``: an MLP maps them to the embeddings (peft ``PromptEncoderConfig``,
    Liu et al. 2021), more parameters to train, the same number of virtual tokens at inference."""

    num_virtual_tokens: tp.Annotated[int, Range(1, 4096)] = 20
    """Virtual tokens prepended to every prompt (each costs one position of ``model.max_seq_len``)."""

    init: tp.Literal["sample_vocab", "text", "random"] = "sample_vocab"
    """``prompt_tuning`` only. ``sample_vocab``: embeddings of random vocabulary tokens; ``text``:
    the embeddings of ``init_text``'s tokens (repeated to length); ``random``: peft's random init."""

    init_text: str = "Answer the cybersecurity question with the letter of the correct option."
    """The text whose token embeddings start the virtual tokens when ``init: text``."""

    encoder_hidden_size: tp.Annotated[int, Range(1, 1 << 20)] = 128
    """``p_tuning`` only: the hidden size of its MLP."""


@dataclass
class IA3Settings:
    """``ia3``: (IA)^3 (Liu et al. 2022, peft ``IA3Config``): learned vectors that rescale the outputs of some
    linear layers (attention keys and values) and the inputs of the feed-forward ones, the model frozen.

    Trained by the same loop as LoRA, saved as an adapter, merged for the evaluation. Trains about 0.01-0.2%
    of LoRA's parameters; like LoRA it runs on several GPUs."""

    target_modules: tp.Literal["auto"] | list[str] = "auto"
    """Modules that get a vector. ``auto``: peft's choice for the architecture (Llama and Mistral
    ``[k_proj, v_proj, down_proj]``, Qwen2 ``[q_proj, v_proj, down_proj]``, ...; an architecture peft has
    no entry for stops the job before its first step, asking for a list). Or module names, as LoRA's."""

    feedforward_modules: tp.Literal["auto"] | list[str] = "auto"
    """Which of ``target_modules`` are feed-forward layers (their input is rescaled, not their output).
    ``auto``: peft's choice for the architecture (``[down_proj]`` for Llama); needs ``target_modules: auto``.
    With listed ``target_modules``, list these too (a subset of them; ``[]`` for none)."""


@dataclass
class FeatureHeadSettings:
    """``feature_head``: the model frozen; a linear 4-way head over A-D on one layer's hidden state.

    The feature of a question is the hidden state at the answer position (the last token of
    ``ANSWER:``, where the letter would be predicted) of layer ``layer``. Training features are
    extracted once and cached in the method's directory (a restarted job reuses them); the head
    (hidden size x 4 weights and 4 biases) is trained with AdamW for ``epochs`` or ``max_steps``,
    ``micro_batch_size`` features a step, at ``learning_rate``. The evaluation scores it by the head
    (its log-softmax are the predictions' ``logprobs``), in either ``eval.mode``: it never generates."""

    layer: tp.Annotated[int, Range(-(1 << 16), 1 << 16)] = -1
    """Which hidden state: 0 the embeddings, ``i`` the output of decoder layer ``i`` (1..num_layers, the
    last one after the final norm), negative counts from the end (-1: the last). Checked against the
    model's ``num_hidden_layers``."""

    normalize: bool = True
    """Standardise each feature with the training features' mean and standard deviation (stored
    with the head): raw hidden states differ in scale by orders of magnitude between dimensions."""

    extract_batch_size: tp.Annotated[int, Range(1, 1 << 20)] = 32
    """Questions per forward pass while extracting features."""


@dataclass
class AuxTask:
    """One auxiliary task of a ``multi_task`` method: a multiple-choice dataset and its weight."""

    name: str = ""
    """Its name in the per-task losses (``train/loss/<name>``); ``target`` is the experiment's own data."""

    path: str = ""
    """A dataset in a format ``data.train`` reads: CyberMetric JSON, JSONL, a Hugging Face dataset. Its
    questions are prepared into the experiment's data (those whose normalised text is in the eval split
    dropped and counted), so jobs never read the original."""

    format: tp.Literal["auto", "cybermetric", "jsonl", "hf"] = "auto"
    """As ``data.train.format``."""

    split: str = "train"
    """Split to read for Hugging Face datasets (ignored for files)."""

    weight: tp.Annotated[float, Range(0, 10**6, "a positive number such as 0.5", lo_open=True)] = 1.0
    """Share of this task in the training mixture, relative to ``multi_task.target_weight``."""


@dataclass
class MultiTaskSettings:
    """``multi_task``: one run over the target task (the experiment's own training split) and auxiliary
    tasks, mixed by weight; the loss of each task is reported separately, the evaluation is on the target.

    The mixture is built once, before training, from the seed: the target's ``n`` questions, and from
    each auxiliary task ``round(n x weight / target_weight)`` of its questions (a seeded draw, repeated
    when the task has fewer). The training loop then runs over it as over any training set (same
    shuffling, resumption and batching)."""

    tasks: list[AuxTask] = field(default_factory=list)
    """The auxiliary tasks (at least one)."""

    target_weight: tp.Annotated[float, Range(0, 10**6, "a positive number such as 1.0", lo_open=True)] = 1.0
    """The target task's share of the mixture."""

    adapt: tp.Literal["lora", "full"] = "lora"
    """What the run trains: ``lora`` (adapters as set in ``lora``, the default: the same adapters as a
    ``lora`` method, so the two rows differ only by the data mixture) or ``full`` (every weight, as
    ``full_sft``, ``deepspeed`` allowed)."""


@dataclass
class CheckpointSettings:
    """When a training job saves a resumable checkpoint (model or adapter, optimizer, scheduler,
    RNG states, data position) into ``EXP/methods/<name>/checkpoints/``.

    A job restarted for any reason (requeued on SIGUSR2 near its time limit or on preemption,
    ``scontrol requeue``, a node failure) continues from the newest complete one; on SIGUSR2 the
    job also saves one right away. They are deleted once the final model is saved."""

    every_steps: tp.Annotated[int, Range(1, BIG, "at least 1, or null to save by time only")] | None = None
    """Save every this many optimizer steps; null: by time only."""

    every_min: tp.Annotated[float, Range(0, 10**6, "0 (by steps only) or more minutes")] = 30.0
    """Save when this many minutes of training passed since the last save; 0: by steps only."""

    keep: tp.Annotated[int, Range(1, 1000, "at least 1 (the newest complete checkpoint)")] = 2
    """Complete checkpoints kept (older ones are deleted once a newer one is complete)."""


@dataclass
class Resources:
    """What one method's job asks of the cluster (Slurm) or the machine (local)."""

    nodes: tp.Annotated[int, Range(1, 100_000)] = 1
    """Number of nodes."""

    gpus_per_node: tp.Annotated[int, Range(0, 1024, "0 (CPU) or more")] = 1
    """GPUs per node; 0 runs on CPU."""

    cpus_per_gpu: tp.Annotated[int, Range(1, 100_000)] = 8
    """CPU cores per GPU (per task on CPU-only runs)."""

    mem_gb_per_gpu: tp.Annotated[int, Range(1, 100_000)] = 64
    """Host memory per GPU in GiB."""

    time_min: tp.Annotated[int, Range(1, 10**7)] = 60
    """Wall-clock limit of the job in minutes."""

    max_timeouts: tp.Annotated[int, Range(0, 1000, "0 (never requeue on the time limit) or more")] = 3
    """How many times the job may run into ``time_min`` and be requeued to continue from its
    last checkpoint (submitit's ``max_num_timeout``); preemptions are not counted. A run
    longer than the partition allows needs ``time_min x (max_timeouts + 1)`` to cover it."""


@dataclass
class MethodConfig:
    """One fine-tuning method: its kind, hyperparameters and resources."""

    name: str = ""
    """Unique name; used for directories, W&B run names and report rows. ``base``
    is reserved for the un-tuned model."""

    kind: tp.Literal["full_sft", "lora", "qlora", "few_shot", "prompt_tuning", "feature_head", "multi_task", "ia3"] = (
        "lora"
    )
    """``full_sft`` (all weights, accelerate; ZeRO via ``deepspeed``), ``lora`` (peft adapters on a
    frozen model), ``qlora`` (4-bit NF4 base + LoRA, one GPU), ``few_shot`` (no training: solved
    examples before each question, see ``few_shot``), ``prompt_tuning`` (trained soft prompts, see
    ``prompt_tuning``), ``feature_head`` (a linear head on a frozen layer, see ``feature_head``) or
    ``multi_task`` (the target task trained with auxiliary ones, see ``multi_task``) or ``ia3`` (learned
    rescaling vectors on a frozen model, see ``ia3``). LoRA's variants (DoRA, rsLoRA, PiSSA/OLoRA/LoftQ
    starts) are settings of ``lora``, not kinds."""

    learning_rate: tp.Annotated[float, Range(0, 10, "a positive number such as 2e-4", lo_open=True)] = 2e-4
    """Peak learning rate (linear warm-up, then linear decay to 0)."""

    epochs: tp.Annotated[float, Range(0, 10**6, "positive, or set max_steps")] = 1.0
    """Passes over the training set; ignored when ``max_steps`` is set."""

    max_steps: tp.Annotated[int, Range(1, BIG, "at least 1, or null to use epochs")] | None = None
    """Optimizer steps to run; overrides ``epochs``."""

    micro_batch_size: tp.Annotated[int, Range(1, 1 << 20)] = 4
    """Examples (questions) per device per forward pass, in either ``batching`` layout."""

    batching: tp.Literal["packed", "padded"] = "packed"
    """How a micro-batch's examples become tensors. ``packed``: laid end to end in one row,
    no padding; position ids restart at every example and attention stays within it
    (per-example SDPA, or transformers' packed-sequence masks for other attention
    implementations; see ``train/packing.py``). ``padded``: one row per example, right-padded
    to the longest. Same examples, order, steps and loss (the mean over the micro-batch's
    answer tokens) either way; ``packed`` computes no padding: 1.66x the tokens/s of
    ``padded`` in ``bench/bench_train.py`` (16 CyberMetric-500 questions per micro-batch, CPU)."""

    grad_accum_steps: tp.Annotated[int, Range(1, 1 << 20)] = 1
    """Micro-batches accumulated per optimizer step. Global batch =
    micro_batch_size x grad_accum_steps x nodes x gpus_per_node."""

    warmup_ratio: tp.Annotated[float, Range(0, 1, "between 0 and 1", hi_open=True)] = 0.03
    """Fraction of steps spent warming the learning rate up."""

    weight_decay: tp.Annotated[float, Range(0, 100, "0 or more")] = 0.0
    """AdamW weight decay."""

    max_grad_norm: tp.Annotated[float, Range(0, 10**9, "0 (no clipping) or more")] = 1.0
    """Gradient clipping norm; 0 disables clipping."""

    precision: tp.Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision. ``auto``: bf16 on GPUs with native bf16; on a CPU, bf16 with AMX-BF16 or AVX512-BF16
    for models of 100M parameters or more, else fp32. An explicit value is used as asked or the job is refused
    (bf16 on a CPU without those units, fp16 on any CPU), never swapped."""

    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory (slower)."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    """Adapter settings (``lora``, ``qlora``, and ``multi_task`` with ``adapt: lora``)."""

    few_shot: FewShotSettings = field(default_factory=FewShotSettings)
    """In-context examples (``few_shot`` only)."""

    prompt_tuning: PromptTuningSettings = field(default_factory=PromptTuningSettings)
    """Soft prompts (``prompt_tuning`` only)."""

    feature_head: FeatureHeadSettings = field(default_factory=FeatureHeadSettings)
    """The frozen layer and its head (``feature_head`` only)."""

    multi_task: MultiTaskSettings = field(default_factory=MultiTaskSettings)
    """Auxiliary tasks and their weights (``multi_task`` only)."""

    ia3: IA3Settings = field(default_factory=IA3Settings)
    """The layers that get (IA)^3 vectors (``ia3`` only)."""

    deepspeed: str | None = None
    """Path of a DeepSpeed JSON in ``ds_configs/`` (``full_sft``, and ``multi_task`` with
    ``adapt: full``); null: plain accelerate (DDP across GPUs)."""

    init_from: str | None = None
    """Continue an earlier result instead of starting from ``model`` (continual re-training): ``EXP_DIR:method``
    (an experiment directory ``cyberft run`` or ``submit`` made, and one of its methods, or a cell ``lora[3]``)
    or the path of a saved result (a LoRA adapter directory, or a full model directory written by
    ``save_pretrained``). ``lora`` continues a LoRA adapter (loaded trainable; its ``r``, ``alpha`` and targets
    are the adapter's, so ``lora`` must match them), ``full_sft`` a full model; other kinds cannot continue.
    Checked before anything runs or is submitted: the result exists and its training completed, it was
    trained on the same ``model.name_or_path``, and its kind fits. With ``EXP_DIR:method`` the evaluation
    also scores the earlier experiment's eval split (the old questions), and the report shows the row's
    change there against the result it continued from (forgetting) beside its gain on this split. null:
    start from ``model``."""

    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Resumable checkpoints (requeue, preemption, time limits)."""

    resources: Resources = field(default_factory=Resources)
    """What the job asks for."""

    @property
    def adapts(self) -> str:
        """What the run trains, as one of the weight-training kinds: ``full_sft`` (every weight), ``lora``
        or ``qlora``; ``multi_task`` answers what its ``adapt`` trains, other kinds their own name."""
        if self.kind == "multi_task":
            return "full_sft" if self.multi_task.adapt == "full" else "lora"
        return self.kind

    @property
    def variant(self) -> str:
        """The kind with its LoRA options, as report rows, W&B and ``summary.json`` name it: ``lora``,
        ``lora+dora``, ``lora+rslora``, ``lora(init=pissa)``, ``qlora+dora(init=loftq)``... Kinds without
        adapters, and LoRA with peft's defaults, are their kind."""
        if self.adapts not in ("lora", "qlora"):
            return self.kind
        lora = self.lora
        name = self.kind + "+dora" * lora.use_dora + "+rslora" * lora.use_rslora
        return name + (f"(init={lora.init})" if lora.init != "default" else "")


@dataclass
class EvalConfig:
    """The shared evaluation job."""

    mode: tp.Literal["loglik", "generate"] = "loglik"
    """``loglik``: the answer letter with the highest log-likelihood; ``generate``:
    greedy generation parsed strictly as ``ANSWER: X`` (parse failures count as
    wrong and are reported)."""

    batch_size: tp.Annotated[int, Range(1, 1 << 20)] = 32
    """Questions per forward pass."""

    include_base: bool = True
    """Also score the un-tuned base model (the ``base`` row)."""

    max_new_tokens: tp.Annotated[int, Range(4, 1 << 16, "at least 4 ('ANSWER: X')")] = 8
    """Generation budget in ``generate`` mode."""

    models_per_job: tp.Annotated[int, Range(1, BIG, "at least 1")] = 20
    """Most models one evaluation job scores on Slurm. With more (a sweep's cells and base), the
    scoring is shared out over an array of ``ceil(models / models_per_job)`` tasks that run at once,
    and one more evaluation job after them writes the report (scoring any model a task left). Below
    it, one job: each array task loads the tokenizer and data again and waits in the queue for its
    own GPU, which costs more than it saves for a few models. 20 models of an 8B model on 500
    questions are about an hour of one GPU (load plus scoring, 2-3 minutes each)."""

    resources: Resources = field(default_factory=Resources)
    """What the evaluation job asks for."""


@dataclass
class TrackingConfig:
    """Weights & Biases. The API key is read from ``WANDB_API_KEY`` on the compute
    node at run time and is never stored in a config."""

    backend: tp.Literal["wandb", "none"] = "wandb"
    """``none`` disables tracking entirely."""

    project: str = "cyberft"
    """W&B project."""

    entity: str | None = None
    """W&B entity (team or user); null: the key's default."""

    mode: tp.Literal["online", "offline", "disabled"] = "offline"
    """``offline`` writes runs under the experiment directory (sync later with
    ``wandb sync``); compute nodes often have no internet."""


@dataclass
class LocalConfig:
    """Local execution (``cyberft run``)."""

    max_parallel: tp.Annotated[int, Range(0, 1024, "0 (automatic) or more")] = 0
    """Training jobs run at once; 0: one per 1-thread CPU slot on CPU, 1 on a GPU."""

    threads_per_job: tp.Annotated[int, Range(1, 1024)] = 1
    """torch threads per job on CPU."""


@dataclass
class SweepConfig:
    """Run each method once per seed and per point of a grid over its fields."""

    seeds: list[tp.Annotated[int, SEED]] | None = None
    """Training seeds (model init, data order, dropout); each grid point runs once per seed. null: the
    experiment's own ``seed`` only. The data split (``data.seed``) stays the same for every cell, so
    all cells are scored on the same questions."""

    seeded: list[str] | None = None
    """The methods that run once per seed of ``seeds``; null: every method. The others run once, with
    the experiment's ``seed`` (their rows show n = 1, and their comparisons pair that one run with
    every seed of the other side). For studies whose budget gives seeds to the cheap methods only:
    ``seeded: [lora, qlora]``."""

    grid: dict[str, tp.Any] = field(default_factory=dict)
    """Values to try, per method field: ``methods.<method>.<field>: [value, ...]``, e.g.
    ``methods.lora.learning_rate: [1.0e-4, 2.0e-4]`` or ``methods.lora.lora.r: [8, 16]``. Each value is
    checked like the field itself (type, range). A method's cells are the cartesian product of its
    fields' values, times the seeds; a method without grid entries runs once per seed. ``name``,
    ``kind``, ``resources`` and ``deepspeed`` cannot vary (one array per method shares one job shape). Nested
    mappings are read as dotted keys, so an override can replace the whole grid:
    ``sweep.grid='{methods.lora.learning_rate: [1e-4, 3e-4]}'``."""

    max_parallel: tp.Annotated[int, Range(1, 100000, "at least 1, or null for no limit of ours")] | None = None
    """Cells of one method running at once on Slurm (the ``%N`` of ``--array=0-11%N``); null:
    submitit's default of 256. Local runs use ``local.max_parallel``."""


@dataclass
class ExperimentConfig:
    """One experiment: a model, data, the methods to compare, evaluation, tracking."""

    name: str = "experiment"
    """Experiment name; the experiment directory is ``output_dir/<name>-<time>``."""

    output_dir: str = "runs"
    """Where experiment directories are created (shared storage on a cluster)."""

    seed: tp.Annotated[int, SEED] = 0
    """Seed for model init, data order and dropout (``sweep.seeds`` runs each method once per seed instead)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""

    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data."""

    methods: list[MethodConfig] = field(default_factory=list)
    """The methods to compare (at least one)."""

    sweep: SweepConfig | None = None
    """Run each method several times: once per seed and per point of a grid over its fields, each run a
    *cell* (``lora[3]``); null: each method once. Checked and expanded by :mod:`launch.spec.sweep`."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    """The shared evaluation job."""

    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Experiment tracking."""

    local: LocalConfig = field(default_factory=LocalConfig)
    """Local execution settings."""

    def method(self, name: str) -> MethodConfig:
        """The method called ``name``, or the method of a cell address (``lora[3]``); ``KeyError`` otherwise.

        In a cell's view of the config (:func:`launch.spec.sweep.locate`) that method holds the cell's
        settings; in the experiment's config, the method's own.
        """
        for m in self.methods:
            if m.name == name:
                return m
        base = _CELL_SUFFIX.sub("", name)
        if base != name:
            return self.method(base)
        raise KeyError(f"no method {name!r}; known: {[m.name for m in self.methods]}")


_DEFAULT_SECTIONS = {name: dataclasses.asdict(getattr(MethodConfig(), name)) for name in KIND_SECTIONS}
_LORA_VARIANT_DEFAULTS = {"use_dora": False, "use_rslora": False, "init": "default"}
"""LoRA's variant settings at peft's defaults: left out of dumps (:func:`to_dict`), so a config written before
they existed keeps its text and hash."""


_CELL_SUFFIX = re.compile(r"\[[0-9]+\]$")
"""``[3]`` at the end of a cell's address (:func:`launch.store.expdir.cell_address`)."""


# --------------------------------------------------------------------------- overrides


_UNUSABLE = object()  # an override value refused by the YAML reader: not applied


def _parse_value(text: str, key: str, problems: list[str]) -> tp.Any:
    """An override value read as YAML (``1e-3``, ``true``, ``[a, b]``, ``null``) by the config's reader.

    Text that is not valid YAML is taken as the string it is (``name=a: b``); a value the reader
    refuses (aliases expanding too far, duplicate keys, too deep) is a problem.
    """
    try:
        return yamlio.parse(text)
    except yamlio.YamlProblem as exc:
        problems.append(f"override {key_label(key)}: {exc}")
        return _UNUSABLE
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: e.g. an integer of 5000 digits
        return text


def apply_overrides(raw: dict, overrides: tp.Sequence[str], problems: list[str]) -> dict:
    """Apply dotted ``key=value`` overrides to the raw mapping.

    Methods are addressed by name (``methods.lora.learning_rate=1e-4``) or by
    index (``methods.0.learning_rate=1e-4``).
    """
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {short(item)}: expected key=value -> e.g. methods.lora.learning_rate=1e-4")
            continue
        key, text = item.split("=", 1)
        if not key.strip() or "" in key.strip().split("."):
            if not key.strip():
                what, fix = "no key before '='", "write the dotted field name, then '=' and the value"
            else:
                what = f"key {short(key)} has an empty part (two dots in a row, or one at an end)"
                fix = "one dot between names"
            problems.append(f"override {short(item)}: {what} -> {fix}, e.g. methods.lora.learning_rate=1e-3")
            continue
        value = _parse_value(text, key, problems)
        if value is not _UNUSABLE:
            _set(raw, key, value, problems)
    return raw


def _set(raw: dict, key: str, value: tp.Any, problems: list[str]) -> None:
    """Put ``value`` at the dotted ``key`` of ``raw``, creating mappings on the way."""
    parts = key.strip().split(".")
    node: tp.Any = raw
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            idx = _list_index(node, part, key if last else here, problems)
            if idx is None:
                return
            if last:
                node[idx] = value
            node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:  # e.g. name.x=1: never drop an override silently
            parent = ".".join(parts[:i])
            problems.append(
                f"override {key_label(key)}: {key_label(parent)} is {_kind_of(node)}, not a mapping -> "
                f"set it as a whole ({key_label(parent)}=...), or check the key"
            )
            return


def _kind_of(value: tp.Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {short(value)}"


def _list_index(items: list, part: str, where: str, problems: list[str]) -> int | None:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [it.get("name") for it in items if isinstance(it, dict)]
    problems.append(f"override {key_label(where)}: no list item {short(part)} -> use an index or one of {short(names)}")
    return None


# --------------------------------------------------------------------------- value checks


def _name_problem(where: str, name: str) -> str | None:
    if not NAME_RE.fullmatch(name or ""):
        return f"{where}: {short(name)} -> use letters, digits, '_', '.', '-' (it names a directory)"
    if len(name) > MAX_NAME_LEN:
        return (
            f"{where}: {len(name)} characters ({short(name[:20])}...) -> at most {MAX_NAME_LEN}: it names a "
            "directory, and file names have a length limit"
        )
    return None


def validate(cfg: ExperimentConfig, problems: list[str]) -> None:
    """Cross-field and value checks that need no file system; appends to ``problems``.

    Ranges of single numbers are checked while loading (:class:`~launch.spec.schema.Range`); what is
    on disk (data, model, output directory, DeepSpeed JSON) is :mod:`launch.spec.preflight`'s job, so a
    job reloading its frozen ``config.yaml`` never depends on the original files.
    """
    problem = _name_problem("name", cfg.name)
    if problem:
        problems.append(problem)
    if not cfg.model.name_or_path:
        problems.append(
            "model.name_or_path: empty -> a hub name (meta-llama/Meta-Llama-3-8B) or a local model directory"
        )
    if not cfg.output_dir:
        problems.append("output_dir: empty -> the directory that receives experiment directories, e.g. runs")
    for src, where in ((cfg.data.train, "data.train"), (cfg.data.eval, "data.eval")):
        if src is not None and not src.path:
            problems.append(f"{where}.path: empty -> give a CyberMetric JSON, a JSONL file or a dataset directory")
    if cfg.data.eval is None and cfg.data.train.examples == 1:
        problems.append(
            "data.train.examples: 1 -> at least 2: with data.eval null the records are split into training "
            "and evaluation questions (or give data.eval)"
        )
    if not cfg.methods:
        problems.append(f"methods: empty -> list at least one method (kind: {' | '.join(METHOD_KINDS)})")
    seen: set[str] = set()
    for i, m in enumerate(cfg.methods):
        _validate_method(m, f"methods[{i}]", seen, problems)
    problems.extend(scriptsafe.output_dir_problems(cfg.output_dir))


def _validate_method(m: MethodConfig, where: str, seen: set[str], problems: list[str]) -> None:
    label = f"{where} ({m.name})" if NAME_RE.fullmatch(m.name or "") and len(m.name) <= MAX_NAME_LEN else where
    problem = _distinct_name_problem(f"{label}.name", m.name, seen, ("base", "the un-tuned model row"), "method")
    if problem:
        problems.append(problem)
    if m.max_steps is None and m.epochs <= 0:
        problems.append(f"{label}.epochs: {m.epochs} -> positive, or set max_steps")
    if m.adapts in ("lora", "qlora"):
        _lora_problems(m, label, problems)
    r = m.resources
    world = r.nodes * max(r.gpus_per_node, 1)
    if m.kind in SINGLE_DEVICE_KINDS and (r.nodes != 1 or r.gpus_per_node > 1):
        device, other = ("GPU", ", or use kind: lora for several GPUs") if m.kind == "qlora" else ("device", " (or 0)")
        problems.append(
            f"{label}: {m.kind} runs on one {device}, but resources ask for nodes={r.nodes} x gpus_per_node="
            f"{r.gpus_per_node} = {world} devices -> set resources.nodes=1 and resources.gpus_per_node=1{other}"
        )
    if m.deepspeed is not None and m.adapts != "full_sft":
        problems.append(
            f"{label}.deepspeed: set for kind {m.kind!r} -> DeepSpeed ZeRO is for full_sft (and multi_task with "
            "adapt: full); remove it"
        )
    if m.init_from is not None:
        _init_from_problems(m, label, problems)
    if m.kind == "prompt_tuning":
        _prompt_tuning_problems(m, label, problems)
    elif m.kind == "multi_task":
        _multi_task_problems(m.multi_task, f"{label}.multi_task", problems)
    elif m.kind == "ia3":
        _ia3_problems(m, label, problems)


def _distinct_name_problem(where: str, name: str, seen: set[str], reserved: tuple[str, str], things: str) -> str | None:
    """What is wrong with ``name`` (None: nothing): not a valid name, the ``reserved`` one (``(name, what it
    names)``), or one of ``seen`` (it is added to them)."""
    problem = _name_problem(where, name)
    if not problem and name == reserved[0]:
        problem = f"{where}: {name!r} is reserved for {reserved[1]} -> pick another name"
    elif not problem and name in seen:
        problem = f"{where}: {name!r} is used twice -> {things} names must be unique"
    seen.add(name)
    return problem


def _lora_problems(m: MethodConfig, label: str, problems: list[str]) -> None:
    if not m.lora.target_modules:
        problems.append(
            f"{label}.lora.target_modules: empty -> all-linear (every linear layer), or names such as [q_proj, v_proj]"
        )
    elif isinstance(m.lora.target_modules, list) and "all-linear" in m.lora.target_modules:
        problems.append(
            f"{label}.lora.target_modules: {m.lora.target_modules!r} -> all-linear stands alone: "
            "write target_modules: all-linear (not in a list), or list module names only"
        )
    _variant_problems(m, label, problems)


RESIDUAL_INITS = ("pissa", "olora")
"""``lora.init`` values that move part of each base weight into the adapters (the base keeps the residual)."""


def _variant_problems(m: MethodConfig, label: str, problems: list[str]) -> None:
    """The combinations of ``lora.init`` / ``lora.use_dora`` and the kind that peft 0.21 cannot train, save and
    reload to the same scores on this stack; each with the reason (what peft does) and the fix."""
    lora, at = m.lora, f"{label}.lora"
    if lora.init == "loftq" and m.adapts == "lora":
        problems.append(
            f"{at}.init: loftq with kind {m.kind} -> use kind: qlora (LoftQ starts the adapters from the error of "
            "the base's 4-bit quantisation; on an unquantised base peft would replace the weights by their 4-bit "
            "round trip), or init: pissa / olora / gaussian for an unquantised base"
        )
    if lora.init == "loftq" and m.kind == "qlora" and m.resources.gpus_per_node == 0:
        problems.append(
            f"{at}.init: loftq with resources.gpus_per_node=0 -> set gpus_per_node: 1 (peft's LoftQ, "
            "replace_lora_weights_loftq, quantises and decomposes on CUDA only), or init: default on a CPU"
        )
    if lora.init == "pissa" and m.kind == "qlora":
        problems.append(
            f"{at}.init: pissa with kind qlora -> use kind: lora for PiSSA, or init: loftq for a 4-bit base "
            "(peft's PiSSA takes the SVD of unquantised weights only: 'Please initialize PiSSA under float32, "
            "float16, or bfloat16')"
        )
    if lora.init == "olora" and m.kind == "qlora":
        problems.append(
            f"{at}.init: olora with kind qlora -> use kind: lora for OLoRA, or init: loftq for a 4-bit base "
            "(peft re-quantises the residual weight to NF4 at the start, so the adapter converted for the "
            "original 4-bit base does not reload to the trained model's scores)"
        )
    if lora.init in RESIDUAL_INITS and lora.use_dora:
        problems.append(
            f"{at}.use_dora: true with init: {lora.init} -> set use_dora: false or init: default (peft converts a "
            f"{lora.init} adapter for the original base from lora_A and lora_B only: DoRA's magnitudes, "
            "measured on the residual weights, would be dropped)"
        )


CONTINUABLE_KINDS = ("lora", "full_sft")
"""Kinds that can start from an earlier result (``init_from``): LoRA continues an adapter, full SFT a model."""


def _init_from_problems(m: MethodConfig, label: str, problems: list[str]) -> None:
    """``init_from``'s value and kind, without the file system (whether the result exists, completed and fits
    is :mod:`launch.spec.preflight`'s check)."""
    at = f"{label}.init_from"
    if not m.init_from.strip():
        problems.append(
            f"{at}: empty -> null to start from model, EXP_DIR:method (e.g. runs/round1-<time>:lora), or the "
            "path of a saved adapter or model directory"
        )
    elif m.kind not in CONTINUABLE_KINDS:
        problems.append(
            f"{at}: {short(m.init_from)} with kind {m.kind} -> remove init_from, or use kind: lora (continues a "
            "LoRA adapter) or kind: full_sft (continues a full model): only these two can start from an earlier "
            "result"
        )
    elif m.kind == "lora" and m.lora.init != "default":
        problems.append(
            f"{at}: {short(m.init_from)} with lora.init: {m.lora.init} -> set lora.init: default: a continued "
            "adapter starts from the earlier adapter's weights, so an initialisation would be ignored"
        )


def _ia3_problems(m: MethodConfig, label: str, problems: list[str]) -> None:
    ia3, at = m.ia3, f"{label}.ia3"
    targets, feedforward = ia3.target_modules, ia3.feedforward_modules
    if isinstance(targets, list) and not targets:
        problems.append(f"{at}.target_modules: empty -> auto (peft's choice for the architecture), or module names")
    elif isinstance(targets, list) and feedforward == "auto":
        problems.append(
            f"{at}.feedforward_modules: auto with listed target_modules -> list the feed-forward ones among "
            f"{targets} (e.g. [down_proj]; [] for none), or set target_modules: auto"
        )
    elif targets == "auto" and isinstance(feedforward, list):
        problems.append(
            f"{at}.feedforward_modules: {feedforward} with target_modules: auto -> list target_modules too "
            "(peft takes both from the same place), or set feedforward_modules: auto"
        )
    elif isinstance(targets, list) and isinstance(feedforward, list) and set(feedforward) - set(targets):
        problems.append(
            f"{at}.feedforward_modules: {sorted(set(feedforward) - set(targets))} not in target_modules -> "
            "feed-forward modules are a subset of target_modules (peft refuses others)"
        )


def _prompt_tuning_problems(m: MethodConfig, label: str, problems: list[str]) -> None:
    if m.batching == "packed":
        problems.append(
            f"{label}.batching: packed -> set batching: padded: prompt tuning prepends its virtual tokens to every "
            "row, so examples packed into one row would share one soft prompt and attend to each other"
        )
    pt = m.prompt_tuning
    if pt.style == "prompt_tuning" and pt.init == "text" and not pt.init_text.strip():
        problems.append(
            f"{label}.prompt_tuning.init_text: empty with init: text -> write the text, or init: sample_vocab"
        )


def _multi_task_problems(mt: MultiTaskSettings, where: str, problems: list[str]) -> None:
    if not mt.tasks:
        problems.append(
            f"{where}.tasks: empty -> list at least one auxiliary task, e.g. "
            "[{name: aux, path: data/sample/aux_mcq.json, weight: 0.5}]"
        )
    names: set[str] = set()
    for i, task in enumerate(mt.tasks):
        at = f"{where}.tasks[{i}]"
        problem = _distinct_name_problem(
            f"{at}.name", task.name, names, ("target", "the experiment's own data"), "task"
        )
        if problem:
            problems.append(problem)
        if not task.path:
            problems.append(f"{at}.path: empty -> a CyberMetric JSON, a JSONL file or a dataset directory")


# --------------------------------------------------------------------------- entry points


def build_config(raw: tp.Any, overrides: tp.Sequence[str] = ()) -> tuple[ExperimentConfig | None, list[str]]:
    """Build a config from a raw mapping and validate it, without raising.

    Returns the config (bad values left at their defaults, so it is always
    usable for display) and every problem found; the config is None only when
    ``raw`` is not a mapping at all. ``--dry-run`` uses this to show a plan
    together with everything that would stop it.
    """
    problems: list[str] = []
    if not isinstance(raw, dict):
        return None, [
            f"top level: expected a mapping of config keys, got {type(raw).__name__} "
            "-> write `key: value` lines (name, model, data, methods, ...) as in configs/smoke.yaml"
        ]
    # A deep copy, not a JSON round trip: YAML also gives sets and non-string keys, and those must
    # become problems below, not a TypeError here. (The YAML reader already unshared aliases.)
    raw = apply_overrides(copy.deepcopy(raw), overrides, problems)
    cfg = build(ExperimentConfig, raw, "", problems)
    validate(cfg, problems)  # bad values were left at their defaults, so this is safe
    return cfg, problems


def from_dict(raw: tp.Any, overrides: tp.Sequence[str] = (), source: str = "config") -> ExperimentConfig:
    """Build and validate a config from a raw mapping; raise :class:`ConfigError` with every problem."""
    cfg, problems = build_config(raw, overrides)
    if problems or cfg is None:
        raise ConfigError(problems, source)
    return cfg


def read_raw(path: str | os.PathLike) -> tp.Any:
    """The YAML mapping of a config file; :class:`ConfigError` when it cannot be read."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError([f"config: {str(p)!r} is a directory -> give a YAML file such as configs/smoke.yaml"], str(p))
    if not p.exists():
        raise ConfigError(
            [f"config: {str(p)!r} does not exist -> check the path; shipped configs are in configs/"], str(p)
        )
    raw, problem = yamlio.read(p, "config", "configs/smoke.yaml")
    if problem:
        raise ConfigError([problem], str(p))
    if raw is None:
        raise ConfigError(
            [
                f"config: {str(p)!r} is empty -> write the experiment's settings (name, model, data, "
                "methods, ...); start from a copy of configs/smoke.yaml"
            ],
            str(p),
        )
    return raw


def check_config(
    path: str | os.PathLike, overrides: tp.Sequence[str] = ()
) -> tuple[ExperimentConfig | None, list[str]]:
    """:func:`build_config` for a file: (config or None, every problem)."""
    try:
        raw = read_raw(path)
    except ConfigError as exc:
        return None, list(exc.problems)
    return build_config(raw, overrides)


def load_config(path: str | os.PathLike, overrides: tp.Sequence[str] = ()) -> ExperimentConfig:
    """Load a YAML experiment config, apply overrides, validate; raise :class:`ConfigError`.

    Schema and value checks only: the files the config names are checked by
    :func:`launch.spec.preflight.check` (``validate``, ``run``, ``submit``), never when a job reloads the
    frozen ``EXP/config.yaml``.
    """
    return from_dict(read_raw(path), overrides, source=str(path))


def to_dict(cfg: tp.Any) -> dict:
    """The config as plain data (for YAML/JSON).

    A method's section of another kind that holds only defaults is left out: it changes nothing,
    reads back equal, and a config written before that kind existed keeps its text and hash. So is a
    data source's ``examples`` when null, a method's ``init_from`` when null, the sweep's ``seeded``, and
    LoRA's variant settings (``use_dora``, ``use_rslora``, ``init``) at their defaults, for the same reason.
    """
    data = dataclasses.asdict(cfg)
    sources = [data["data"]["train"], data["data"]["eval"]] if isinstance(cfg, ExperimentConfig) else []
    for source in sources:
        if isinstance(source, dict) and source.get("examples", 0) is None:
            del source["examples"]
    sweep = data.get("sweep") if isinstance(cfg, ExperimentConfig) else None
    if isinstance(sweep, dict) and sweep.get("seeded", 0) is None:
        del sweep["seeded"]
    for method in data.get("methods", []) if isinstance(cfg, ExperimentConfig) else []:
        if method.get("init_from", 0) is None:
            del method["init_from"]
        for key, default in _LORA_VARIANT_DEFAULTS.items():
            if method["lora"].get(key, default) == default:
                del method["lora"][key]
        for section in KIND_SECTIONS:
            if method["kind"] != section and method[section] == _DEFAULT_SECTIONS[section]:
                del method[section]
    return data


def dump_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text (read back equal by :func:`load_config`)."""
    return yamlio.dump(to_dict(cfg))


def config_hash(cfg: ExperimentConfig) -> str:
    """A short, stable hash of the resolved config."""
    text = json.dumps(to_dict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
