"""The ``sweep:`` section of an experiment config: seeds and a grid over method fields, expanded to cells.

A contract module: ``train/`` imports it too (a job finds its cell's seed and settings from its address).

A sweep runs every method several times: once per seed and per point of a grid over its own
fields. Each run is a *cell*, addressed as ``<method>[<index>]`` (``lora[3]``). In YAML::

    sweep:
      seeds: [0, 1, 2]
      grid:
        methods.lora.learning_rate: [1.0e-4, 2.0e-4]
        methods.lora.lora.r: [8, 16]
      max_parallel: 4

gives ``lora: 2 learning_rate x 2 r x 3 seeds = 12 cells`` and, for every other method,
``3 seeds = 3 cells``. Standard library and the typed config (:mod:`launch.spec.config`,
:mod:`launch.spec.schema`), which checks grid keys and values: no torch. Nothing here submits or
writes anything; how to wire it in (submitit arrays, directories, W&B, the report) is
``docs/sweeps.md``.

How the integrator calls it
---------------------------
1. Config: add ``sweep: tp.Optional[SweepConfig] = None`` to ``ExperimentConfig`` (after
   ``methods``); :func:`launch.spec.schema.build` then types the section like any other. In
   ``launch.spec.config.validate`` add ``problems.extend(sweep.check(cfg, cfg.sweep))`` when it is set:
   every problem, each naming the field, the value and the fix (grid keys that name no method or
   field, values of the wrong type or out of the field's range, duplicates, a field that cannot
   differ between the cells of one Slurm array, too many cells, and the checks of
   ``launch.spec.config.validate`` on every grid point, such as ``epochs: 0`` without ``max_steps``).
   Without the field, :func:`parse` builds the section from a raw mapping.
2. Cells: ``cells = expand(cfg, cfg.sweep)`` (raises :class:`~launch.spec.config.ConfigError`, exit 2).
   ``expand(cfg, None)`` gives one cell per method (index 0, ``cfg.seed``, the method's own
   config), so one code path serves experiments with and without a sweep. Each :class:`Cell` has
   ``method``, ``index``, ``id`` (``lora[3]``), ``seed``, ``point`` (``{"learning_rate": 1e-4,
   "lora.r": 8}``), ``config`` (the resolved ``MethodConfig``, a deep copy with the point applied)
   and ``group`` (the report row its seeds are aggregated in). A training job of a cell runs with
   ``dataclasses.replace(cfg, seed=cell.seed)`` and ``cell.config`` in place of the method; the
   data split seed (``data.seed``) is never swept, so every cell is scored on the same questions
   and :mod:`launch.results.stats` can pair them.
3. Submission: :func:`arrays` gives each method's cells in index order; submit them as one
   submitit array per method (``cell.index`` is the array task id). ``sweep.max_parallel`` is
   submitit's ``array_parallelism`` (``--array=0-N%M``).
4. ``cyberft validate`` and the dry run print :func:`summary`; ``status``/``logs``/``cancel``/
   ``resume`` take a method or a cell and find it with :func:`select`; the report aggregates the
   cells of each :func:`groups` entry over seeds (:func:`launch.results.stats.spread`) and compares groups
   (:func:`launch.results.stats.compare`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import typing as tp
from dataclasses import dataclass

from launch.spec.config import TRAINING_FREE_KINDS, ConfigError, ExperimentConfig, MethodConfig, SweepConfig, validate
from launch.spec.redact import short
from launch.spec.schema import build, convert, field_types, key_label
from launch.store.expdir import cell_address, parse_address

MAX_CELLS_PER_METHOD = 1001
"""Most cells of one method: one Slurm array, and Slurm's default ``MaxArraySize`` (1001) allows
task ids 0-1000. A site with a smaller limit refuses the array at submission."""

FIXED_FIELDS = {
    "name": "the method's name identifies it -> list another method instead",
    "kind": "one array trains one kind -> list another method with that kind",
    "resources": (
        "every cell of a method is one task of the same Slurm array, which asks for the same resources "
        "-> list another method with those resources"
    ),
    "deepspeed": (
        "the method's DeepSpeed file is frozen into the experiment's code copy once, at submission "
        "-> list another method with that file"
    ),
}
"""Method fields a grid may not vary, with the reason and the fix."""


@dataclass(frozen=True)
class Axis:
    """One grid entry, checked: a method's field and the values it takes, typed by the field."""

    method: str
    field: str
    """Dotted path inside ``MethodConfig`` (``learning_rate``, ``lora.r``)."""
    values: tuple
    key: str
    """The grid key as written (``methods.lora.lora.r``)."""


@dataclass(frozen=True)
class Cell:
    """One training run of a sweep: a method at one grid point with one seed.

    Attributes
    ----------
    method:
        The method's name.
    index:
        Position among the method's cells (0..N-1): the ``lora[3]`` address and the Slurm array
        task id. Grid points vary slowest in the order the grid lists them, seeds fastest.
    seed:
        The training seed (``ExperimentConfig.seed`` of this cell's job).
    point:
        ``{field path: value}`` of this cell's grid point (empty without a grid for the method).
    config:
        The method's config with the point applied (a deep copy; change nothing in it).
    swept:
        Whether the experiment has a sweep. Without one, each method is one cell addressed by its
        name (``lora``), which keeps the layout and the names of an experiment without a sweep.
    """

    method: str
    index: int
    seed: int
    point: dict
    config: MethodConfig
    swept: bool = True

    @property
    def id(self) -> str:
        """The cell's address: ``lora[3]`` in a sweep, ``lora`` without one (``launch.store.expdir.cell_address``)."""
        return cell_address(self.method, self.index if self.swept else None)

    @property
    def trains(self) -> bool:
        """Whether the cell has a training job (not for a kind in ``TRAINING_FREE_KINDS``)."""
        return self.config.kind not in TRAINING_FREE_KINDS

    @property
    def tags(self) -> list[str]:
        """W&B tags: ``method:lora``, ``seed:1`` and one ``<field>:<value>`` per grid field."""
        return [f"method:{self.method}", f"seed:{self.seed}"] + [f"{k}:{_value_text(v)}" for k, v in self.point.items()]

    @property
    def point_label(self) -> str:
        """``learning_rate=0.0001, lora.r=8`` (empty without a grid point)."""
        return ", ".join(f"{path}={_value_text(v)}" for path, v in self.point.items())

    @property
    def group(self) -> str:
        """The report row the cell is aggregated in over seeds: ``lora`` or ``lora (learning_rate=0.0001)``."""
        return f"{self.method} ({self.point_label})" if self.point else self.method


def _value_text(value: tp.Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_value_text, value)) + "]"
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- reading and checking


def parse(raw: tp.Any, problems: list[str]) -> SweepConfig | None:
    """The section from its raw mapping (YAML), typed by :func:`launch.spec.schema.build`; problems appended."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(
            f"sweep: expected a mapping, got {type(raw).__name__} {short(raw)} -> write seeds:, grid: "
            "and max_parallel: indented under sweep:"
        )
        return None
    return build(SweepConfig, raw, "sweep", problems)


def check(cfg: ExperimentConfig, sweep: SweepConfig | None) -> list[str]:
    """Every problem of ``sweep`` against ``cfg`` (empty: :func:`expand` will succeed)."""
    return _checked(cfg, sweep)[1]


def _checked(cfg: ExperimentConfig, sweep: SweepConfig | None) -> tuple[list[Axis], list[str]]:
    """The grid's axes and every problem: the entries', then the config's checks at each grid point of the good ones."""
    if sweep is None:
        return [], []
    problems: list[str] = []
    axes = resolve(cfg, sweep, problems)
    problems.extend(_point_problems(cfg, axes))
    return axes, problems


def _axes(cfg: ExperimentConfig, sweep: SweepConfig | None) -> list[Axis]:
    """The grid's axes; :class:`~launch.spec.config.ConfigError` with every problem when there are any."""
    axes, problems = _checked(cfg, sweep)
    if problems:
        raise ConfigError(problems, "sweep")
    return axes


def resolve(cfg: ExperimentConfig, sweep: SweepConfig, problems: list[str]) -> list[Axis]:
    """The grid's entries checked against the config, in the order written; problems appended.

    Also checks the seeds (no duplicates) and each method's cell count. Entries with a problem are
    left out of the result.
    """
    _seed_problems(sweep, problems)
    axes = []
    for key, values in _flatten(sweep.grid, "", {}, problems).items():
        axis = _axis(cfg, key, values, problems)
        if axis is not None:
            axes.append(axis)
    _seeded_problems(cfg, sweep, problems)
    for m in cfg.methods:
        seeds = len(_seeds(cfg, sweep, m.name))
        count = math.prod(len(a.values) for a in axes if a.method == m.name) * seeds
        if count > MAX_CELLS_PER_METHOD:
            problems.append(
                f"sweep: methods.{m.name} has {_count_text(axes, m.name, seeds)} -> at most "
                f"{MAX_CELLS_PER_METHOD} cells per method (one Slurm array; MaxArraySize is 1001 by "
                "default): fewer values or seeds"
            )
    return axes


def _seeds(cfg: ExperimentConfig, sweep: SweepConfig | None, method: str) -> list[int]:
    """The seeds ``method`` runs with: the sweep's (for the methods it seeds), else the experiment's ``seed``."""
    if sweep is None or sweep.seeds is None or (sweep.seeded is not None and method not in sweep.seeded):
        return [cfg.seed]
    return list(sweep.seeds)


def _seeded_problems(cfg: ExperimentConfig, sweep: SweepConfig, problems: list[str]) -> None:
    """``seeded`` names methods of the config, each once, and only with ``seeds`` to give them."""
    if sweep.seeded is None:
        return
    names = [m.name for m in cfg.methods]
    if sweep.seeds is None:
        problems.append(
            f"sweep.seeded: {sweep.seeded} but sweep.seeds is not set -> list the seeds (seeds: [0, 1, 2]) "
            "or remove seeded"
        )
    for name in sweep.seeded:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the methods are {', '.join(names)}"
            problems.append(f"sweep.seeded: {name!r} is not a method of this experiment -> {hint}")
    for name in sorted({n for n in sweep.seeded if sweep.seeded.count(n) > 1}):
        problems.append(f"sweep.seeded: {name!r} is listed {sweep.seeded.count(name)} times -> list each method once")


def _seed_problems(sweep: SweepConfig, problems: list[str]) -> None:
    if sweep.seeds is None:
        return
    if not sweep.seeds:
        problems.append("sweep.seeds: empty -> list at least one seed, e.g. [0, 1, 2], or remove it to use `seed`")
    for s in sorted({s for s in sweep.seeds if sweep.seeds.count(s) > 1}):
        problems.append(f"sweep.seeds: {s} is listed {sweep.seeds.count(s)} times -> list each seed once")


def _flatten(node: dict, prefix: str, out: dict[str, tp.Any], problems: list[str]) -> dict[str, tp.Any]:
    """Grid entries with dotted keys: ``{methods: {lora: {learning_rate: [..]}}}`` is ``methods.lora.learning_rate``."""
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            _flatten(value, path, out, problems)
        elif path in out:
            problems.append(f"sweep.grid.{key_label(path)}: given twice (as a dotted key and nested) -> keep one")
        else:
            out[path] = value
    return out


def _axis(cfg: ExperimentConfig, key: str, values: tp.Any, problems: list[str]) -> Axis | None:
    where = f"sweep.grid.{key_label(key)}"
    found = _method_field(cfg, key, where, problems)
    if found is None:
        return None
    method, path, t = found
    if not isinstance(values, list) or not values:
        problems.append(
            f"{where}: expected a non-empty list of values, got {type(values).__name__} {short(values)} "
            "-> write the values to try as a list, e.g. [1.0e-4, 2.0e-4]"
        )
        return None
    typed: list[tp.Any] = []
    for i, value in enumerate(values):
        before = len(problems)
        converted = convert(value, t, f"{where}[{i}]", problems)
        if len(problems) > before:
            continue
        if converted in typed:
            problems.append(f"{where}[{i}]: {short(value)} is listed twice -> list each value once")
            continue
        typed.append(converted)
    if len(typed) != len(values):
        return None
    return Axis(method, path, tuple(typed), key)


def _method_field(cfg: ExperimentConfig, key: str, where: str, problems: list[str]) -> tuple[str, str, tp.Any] | None:
    """``(method name, field path, field type)`` of a grid key; a problem and None when it names none.

    Method names may hold dots (``lora.v2``): every method whose name prefixes the key is tried,
    and the key must name a field of exactly one of them.
    """
    names = [m.name for m in cfg.methods]
    example = f"methods.{names[0] if names else 'lora'}.learning_rate"
    if not key.startswith("methods."):
        problems.append(f"{where}: not a method field -> keys are methods.<method>.<field>, e.g. {example}")
        return None
    rest = key[len("methods.") :]
    candidates = [n for n in names if rest.startswith(n + ".")]
    if not candidates:
        head = rest.split(".")[0]
        hint = difflib.get_close_matches(head[:100], names, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"the methods are {', '.join(names) or '(none)'}"
        problems.append(f"{where}: no method {short(head)} -> {fix}")
        return None
    trials = {n: [] for n in candidates}
    typed = {n: _field_type(rest[len(n) + 1 :], where, trials[n]) for n in candidates}
    fits = [n for n in candidates if not trials[n]]
    if len(fits) > 1:
        problems.append(f"{where}: names a field of methods {', '.join(fits)} -> rename one of them")
        return None
    if not fits:
        problems.extend(trials[max(candidates, key=len)])
        return None
    return fits[0], rest[len(fits[0]) + 1 :], typed[fits[0]]


def _field_type(path: str, where: str, problems: list[str]) -> tp.Any:
    """The type of the ``MethodConfig`` field at dotted ``path``; a problem when it is not one a grid may vary."""
    parts = path.split(".")
    if parts[0] in FIXED_FIELDS:
        problems.append(f"{where}: {parts[0]} cannot vary in a sweep: {FIXED_FIELDS[parts[0]]}")
        return None
    cls: tp.Any = MethodConfig
    for i, part in enumerate(parts):
        hints = field_types(cls)
        if part not in hints:
            hint = difflib.get_close_matches(part[:100], list(hints), n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"{cls.__name__} fields: {', '.join(hints)}"
            problems.append(f"{where}: no field {short(part)} in {cls.__name__} -> {fix}")
            return None
        t = hints[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(t):
            if last:
                fields = ", ".join(f"{path}.{f}" for f in field_types(t))
                problems.append(f"{where}: {path} is a section -> vary one of its fields: {fields}")
                return None
            cls = t
        elif not last:
            problems.append(f"{where}: {'.'.join(parts[: i + 1])} is a value, not a section -> check the key")
            return None
    return t


def _point_problems(cfg: ExperimentConfig, axes: list[Axis]) -> list[str]:
    """The config's own checks (:func:`launch.spec.config.validate`) at every grid point, each problem once."""
    known: list[str] = []
    validate(cfg, known)
    found: dict[str, list[str]] = {}  # problem -> where it happens
    for m_index, m in enumerate(cfg.methods):
        if math.prod(len(a.values) for a in axes if a.method == m.name) > MAX_CELLS_PER_METHOD:
            continue  # already a problem; checking every point of a huge grid would only take long
        for point in _points(axes, m.name):
            if not point:
                continue
            methods = list(cfg.methods)
            methods[m_index] = _with_point(m, point)
            here: list[str] = []
            validate(dataclasses.replace(cfg, methods=methods), here)
            for problem in here:
                if problem not in known:
                    found.setdefault(problem, []).append(", ".join(f"{p}={_value_text(v)}" for p, v in point.items()))
    out = []
    for problem, points in found.items():
        more = f" (and {len(points) - 1} more grid points)" if len(points) > 1 else ""
        out.append(f"sweep.grid at {points[0]}{more}: {problem}")
    return out


# --------------------------------------------------------------------------- cells


def _points(axes: list[Axis], method: str) -> list[dict]:
    """The method's grid points in order: the first axis varies slowest."""
    mine = [a for a in axes if a.method == method]
    return [dict(zip((a.field for a in mine), combo)) for combo in itertools.product(*(a.values for a in mine))]


def _with_point(m: MethodConfig, point: dict) -> MethodConfig:
    """A deep copy of ``m`` with each ``field path: value`` of ``point`` set."""
    out = copy.deepcopy(m)
    for path, value in point.items():
        *parents, last = path.split(".")
        target = out
        for part in parents:
            target = getattr(target, part)
        setattr(target, last, copy.deepcopy(value))
    return out


def expand(cfg: ExperimentConfig, sweep: SweepConfig | None) -> list[Cell]:
    """Every cell of the experiment: per method (config order), grid points x seeds; ``ConfigError`` if invalid.

    ``sweep=None``: one cell per method, with ``cfg.seed`` and the method's config unchanged.
    """
    axes = _axes(cfg, sweep)
    cells = []
    swept = sweep is not None
    for m in cfg.methods:
        combos = enumerate(itertools.product(_points(axes, m.name), _seeds(cfg, sweep, m.name)))
        cells += [Cell(m.name, i, seed, dict(point), _with_point(m, point), swept) for i, (point, seed) in combos]
    return cells


def cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell of the experiment (its own ``sweep``, or one per method without one)."""
    return expand(cfg, cfg.sweep)


def view(cfg: ExperimentConfig, cell: Cell) -> ExperimentConfig:
    """The config the cell's jobs run with: its seed, and its method's settings at its grid point.

    Everything else (model, data, the other methods, the sweep itself) is the experiment's, so
    expanding the view again gives the same cells.
    """
    methods = [cell.config if m.name == cell.method else m for m in cfg.methods]
    return dataclasses.replace(cfg, seed=cell.seed, methods=methods)


def locate(cfg: ExperimentConfig, address: str) -> tuple[ExperimentConfig, Cell]:
    """The cell at ``address`` (``lora[3]``, or ``lora`` without a sweep) and its :func:`view` of ``cfg``.

    Raises KeyError naming what exists when the address names no single cell.
    """
    every = cells(cfg)
    found = next((c for c in every if c.id == address), None)
    if found is None:
        raise KeyError(f"no cell {short(address)} in this experiment -> one of: {_known(every)}")
    return view(cfg, found), found


def arrays(cells: tp.Sequence[Cell]) -> dict[str, list[Cell]]:
    """Cells per method, in index order: one submission (a Slurm array) each."""
    out: dict[str, list[Cell]] = {}
    for c in cells:
        out.setdefault(c.method, []).append(c)
    return {name: sorted(group, key=lambda c: c.index) for name, group in out.items()}


def groups(cells: tp.Sequence[Cell]) -> dict[str, list[Cell]]:
    """Cells per report row (method and grid point), in cell order: a row aggregates its seeds."""
    out: dict[str, list[Cell]] = {}
    for c in cells:
        out.setdefault(c.group, []).append(c)
    return out


def select(cells: tp.Sequence[Cell], address: str) -> list[Cell]:
    """The cells a command addresses: a method (all its cells) or one cell (``lora[3]``).

    Raises ValueError naming what exists when nothing matches.
    """
    method, index = parse_address(address)
    found = [c for c in cells if c.method == method and (index is None or c.index == index)]
    if not found:
        raise ValueError(f"no method or cell {short(address)} -> a method name or a cell: {_known(cells)}")
    return found


def _known(cells: tp.Sequence[Cell]) -> str:
    """``full_sft[0-2], lora[0-11]`` (``full_sft, lora`` without a sweep): what an address may name."""
    spans = []
    for name, group in arrays(cells).items():
        if not group[0].swept:
            spans.append(name)
        else:
            spans.append(f"{name}[0-{len(group) - 1}]" if len(group) > 1 else f"{name}[0]")
    return ", ".join(spans)


def _count_text(axes: list[Axis], method: str, seeds: int) -> str:
    """``2 learning_rate x 2 r x 3 seeds = 12 cells``."""
    mine = [a for a in axes if a.method == method]
    last = [a.field.rsplit(".", 1)[-1] for a in mine]
    labels = [short_name if last.count(short_name) == 1 else a.field for a, short_name in zip(mine, last)]
    parts = [f"{len(a.values)} {label}" for a, label in zip(mine, labels)]
    parts.append(f"{seeds} seed{'s' if seeds != 1 else ''}")
    total = math.prod(len(a.values) for a in mine) * seeds
    return f"{' x '.join(parts)} = {total} cell{'s' if total != 1 else ''}"


def summary(cfg: ExperimentConfig, sweep: SweepConfig | None) -> str:
    """What ``validate`` and the dry run print: the cells per method and in all; ``ConfigError`` if invalid.

    Example::

        sweep: 15 cells in 2 submissions (at most 4 running per method)
          full_sft: 3 seeds = 3 cells
          lora: 2 learning_rate x 2 r x 3 seeds = 12 cells
    """
    axes = _axes(cfg, sweep)
    seeds = {m.name: len(_seeds(cfg, sweep, m.name)) for m in cfg.methods}
    untrained = " (no training job: scored by the evaluation)"
    lines = [
        f"  {m.name}: {_count_text(axes, m.name, seeds[m.name])}"
        f"{'' if m.kind not in TRAINING_FREE_KINDS else untrained}"
        for m in cfg.methods
    ]
    total = sum(math.prod(len(a.values) for a in axes if a.method == m.name) * seeds[m.name] for m in cfg.methods)
    submissions = sum(m.kind not in TRAINING_FREE_KINDS for m in cfg.methods)
    limit = f" (at most {sweep.max_parallel} running per method)" if sweep is not None and sweep.max_parallel else ""
    head = (
        f"sweep: {total} cell{'s' if total != 1 else ''} in {submissions} submission"
        f"{'s' if submissions != 1 else ''}{limit}"
    )
    return "\n".join([head, *lines])
