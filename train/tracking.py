"""Experiment tracking for the compute-node jobs: a thin wrapper over one W&B run.

One :class:`Tracker` per job. ``Tracker.start`` returns a no-op tracker when
tracking is off, so training code calls ``log``/``summary``/``finish``
unconditionally. Which rank tracks is the caller's business (rank 0 only).

What is never logged
--------------------
* Config keys that name a credential (``api_key``, ``hf_token``, ``password``,
  ``client_secret``... at any depth), any string equal to (or containing)
  the live value of ``WANDB_API_KEY``, ``HF_TOKEN`` or
  ``HUGGING_FACE_HUB_TOKEN``, and any string shaped like a known token; both
  rules are :mod:`launch.spec.redact`'s, the launcher's one secret detector. Scrubbing happens *before* ``wandb.init``
  because W&B copies the config into ``logs/debug.log`` at once.
* Environment variables, command-line arguments, host metadata, git state,
  code and console output: ``x_disable_meta`` drops the run's environment
  record (which holds ``sys.argv`` and, on Slurm, ``SLURM_*`` variables),
  ``console="off"`` stops stdout/stderr capture, and git/code capture are off.

``wandb`` is imported inside :meth:`Tracker.start`, so importing this module
is cheap and works where wandb is not installed (with tracking off).
"""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

from launch.spec.redact import is_credential_name, token_kind

if tp.TYPE_CHECKING:  # pragma: no cover
    from launch.spec.config import TrackingConfig

SECRET_ENV_VARS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Environment variables whose values must never reach a log."""

REDACTED = "<redacted>"

_MIN_SECRET_LEN = 8  # shorter env values would redact ordinary strings by accident

# Where W&B stages table/media copies for a later `wandb sync` (default
# ~/.local/share/wandb). We move it next to the run unless the user chose.
_DATA_DIR_ENV = "WANDB_DATA_DIR"
_data_dir_we_set: str | None = None


# --------------------------------------------------------------------------- scrubbing


def is_secret_key(key: tp.Any) -> bool:
    """Whether a config key names a credential (:func:`launch.spec.redact.is_credential_name`: by its
    words, so ``max_new_tokens`` or ``train_tokens`` survive).

    Examples
    --------
    >>> [is_secret_key(k) for k in ("api_key", "HF_TOKEN", "apiKey", "max_new_tokens", "lr")]
    [True, True, True, False, False]
    """
    return is_credential_name(key)


def secret_values(env: tp.Mapping[str, str] | None = None) -> list[str]:
    """The live credential values to redact (only non-trivial ones)."""
    env = os.environ if env is None else env
    return [v for v in (env.get(name, "") for name in SECRET_ENV_VARS) if len(v) >= _MIN_SECRET_LEN]


def _is_secret_value(value: tp.Any, secrets: tp.Sequence[str]) -> bool:
    """A live credential's value, or anything shaped like a known token (:func:`launch.spec.redact.token_kind`)."""
    return isinstance(value, str) and (any(s in value for s in secrets) or token_kind(value) is not None)


_DROP = object()


def scrub(obj: tp.Any, secrets: tp.Sequence[str] | None = None) -> tp.Any:
    """A copy of ``obj`` without credentials.

    Parameters
    ----------
    obj:
        Config-like data: dicts, lists/tuples, scalars.
    secrets:
        Values to remove; default: :func:`secret_values` of the environment.

    Returns
    -------
    Any
        Dict keys naming a credential are dropped at any depth; strings equal to
        or containing a secret are dropped (from dicts and lists).
    """
    secrets = secret_values() if secrets is None else list(secrets)
    out = _scrub(obj, secrets)
    return None if out is _DROP else out


def _scrub(obj: tp.Any, secrets: list[str]) -> tp.Any:
    if isinstance(obj, dict):
        kept = {}
        for k, v in obj.items():
            if is_secret_key(k):
                continue
            v = _scrub(v, secrets)
            if v is not _DROP:
                kept[k] = v
        return kept
    if isinstance(obj, (list, tuple)):
        items = [_scrub(v, secrets) for v in obj]
        return type(obj)(v for v in items if v is not _DROP)
    if _is_secret_value(obj, secrets):
        return _DROP
    return obj


def _redact_cell(value: tp.Any, secrets: list[str]) -> tp.Any:
    # Table rows keep their shape, so a secret cell is replaced, not dropped.
    return REDACTED if _is_secret_value(value, secrets) else value


# --------------------------------------------------------------------------- tracker


def wandb_settings_kwargs() -> dict[str, tp.Any]:
    """The ``wandb.Settings`` fields we set (all verified against wandb 0.31)."""
    return {
        "console": "off",  # no stdout/stderr capture: output.log could hold anything
        "x_disable_meta": True,  # no environment record: argv, SLURM_* vars, host, user
        "x_disable_machine_info": True,
        "x_disable_stats": True,  # no system-metrics sampler: faster start, nothing probed
        "disable_git": True,
        "disable_code": True,
        "save_code": False,
        "disable_job_creation": True,
    }


def _point_data_dir(run_dir: Path) -> None:
    """Stage W&B's table/media copies under ``run_dir`` unless the user chose a place.

    Offline W&B copies every logged table into ``$WANDB_DATA_DIR/artifacts/
    staging`` (default ``~/.local/share/wandb``) and keeps it for a later
    ``wandb sync``; next to the run it travels with the experiment directory.
    """
    global _data_dir_we_set
    current = os.environ.get(_DATA_DIR_ENV)
    if current is None or current == _data_dir_we_set:
        _data_dir_we_set = str(Path(run_dir) / "wandb" / "data")
        os.environ[_DATA_DIR_ENV] = _data_dir_we_set


class Tracker:
    """One tracked run, or a no-op when tracking is off.

    Build with :meth:`start`; the constructor wraps an existing run (or None).

    Parameters
    ----------
    run:
        A ``wandb`` run, or None for a tracker that does nothing.
    """

    _active = 0
    """Trackers started and not yet finished in this process (see :meth:`finish`)."""

    def __init__(self, run: tp.Any = None) -> None:
        self._run = run
        if run is not None:
            Tracker._active += 1

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        tracking: TrackingConfig,
        *,
        run_dir: Path,
        name: str,
        group: str,
        job_type: str,
        config: dict | None,
        run_id: str | None = None,
        tags: tp.Sequence[str] | None = None,
    ) -> Tracker:
        """Start a W&B run, or return a disabled tracker.

        Parameters
        ----------
        tracking:
            Backend, project, entity and mode. ``backend: none`` or
            ``mode: disabled`` gives a no-op tracker (wandb is not imported).
        run_dir:
            Where W&B writes (``run_dir/wandb/offline-run-*`` offline).
        name, group, job_type:
            Run display name (the method), group (the experiment) and job type
            (``train`` / ``eval``).
        config:
            The run config; credentials are scrubbed before anything sees it. None:
            none given (a run reopened to add to its summary keeps its own).
        run_id:
            A stable id so that a requeued job resumes the same run
            (``resume="allow"``); None lets W&B pick one.
        tags:
            Run tags (``method:lora``, ``seed:1``, ``learning_rate:0.0001``).

        Returns
        -------
        Tracker
        """
        if tracking.backend == "none" or tracking.mode == "disabled":
            return cls(None)
        import wandb  # lazy: ~0.6 s, and only the tracking rank needs it

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        _point_data_dir(run_dir)
        run = wandb.init(
            project=tracking.project,
            entity=tracking.entity,
            name=name,
            group=group,
            job_type=job_type,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=tracking.mode,
            config=scrub(dict(config)) if config is not None else None,
            tags=list(tags) if tags else None,
            reinit="create_new",  # several trackers in one process stay independent
            settings=wandb.Settings(**wandb_settings_kwargs()),
        )
        return cls(run)

    @property
    def enabled(self) -> bool:
        """Whether anything is being recorded."""
        return self._run is not None

    @property
    def run_id(self) -> str | None:
        """The W&B run id, or None when disabled."""
        return self._run.id if self._run is not None else None

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (idempotent); a non-zero ``exit_code`` marks it failed.

        When this was the last open tracker in the process, the W&B service is
        shut down too (``wandb.teardown``). In wandb 0.31 offline mode
        ``run.finish()`` returns before the ``.wandb`` log is written (the file
        can still be just its 7-byte header), so without the teardown a reader
        (the launcher, a test) or a job killed right after would see a partial
        run. A later :meth:`start` starts a fresh service (~0.3 s).
        """
        if self._run is None:
            return
        run, self._run = self._run, None
        Tracker._active -= 1
        try:
            run.finish(exit_code=exit_code)
        finally:
            if Tracker._active == 0:
                import wandb

                wandb.teardown(exit_code=exit_code)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: tp.Any, exc: tp.Any, tb: tp.Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    # ------------------------------------------------------------------ logging

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Log one history row (``step`` None: W&B's next step)."""
        if self._run is None:
            return
        self._run.log(scrub(dict(metrics)), step=step)

    def summary(self, values: dict) -> None:
        """Set final values shown for the run (later calls win per key)."""
        if self._run is None:
            return
        self._run.summary.update(scrub(dict(values)))

    def log_table(self, key: str, rows: list[dict], columns: list[str]) -> None:
        """Log a table: one row per dict, cells taken by ``columns`` (missing -> None).

        The table joins the current history step (it does not add a step); a
        string cell holding a live credential becomes ``<redacted>``.
        """
        if self._run is None:
            return
        import wandb

        secrets = secret_values()
        data = [[_redact_cell(row.get(c), secrets) for c in columns] for row in rows]
        # commit=False: attach to the current step instead of adding a history row.
        self._run.log({key: wandb.Table(columns=list(columns), data=data)}, commit=False)

    def log_scatter(self, key: str, rows: list[dict], columns: list[str], x: str, title: str) -> None:
        """A W&B scatter chart of ``y = accuracy`` against ``x`` over a table of ``rows`` (a chart the UI
        draws from the table, so it stays interactive: hover shows each row's cells)."""
        if self._run is None or not rows:
            return
        import wandb

        secrets = secret_values()
        table = wandb.Table(
            columns=list(columns), data=[[_redact_cell(r.get(c), secrets) for c in columns] for r in rows]
        )
        self._run.log({key: wandb.plot.scatter(table, x, "accuracy", title=title)}, commit=False)

    def log_image(self, key: str, path: Path) -> None:
        """Log an image file (a chart PNG) at the current history step."""
        if self._run is None:
            return
        import wandb

        self._run.log({key: wandb.Image(str(path))}, commit=False)
