"""What may be echoed: the one secret detector, and the one way values appear in messages.

A contract module: ``train/`` imports it too (the one secret detector: W&B tracking scrubs with it).

Configs, profiles and overrides are copied into the experiment directory, into every job script
and into the dry run, so a credential written into one of them leaks to every reader of those
files. This module decides what looks like one (standard library only: the login node imports it
and so do the compute-side trackers):

* :func:`is_credential_name`: a variable or key name that names a credential (``HF_TOKEN``,
  ``WANDB_API_KEY``, ``DB_PASSWD``, ``apiKey``), by its words, so ``max_new_tokens`` is not one;
* :func:`token_kind`: a value shaped like a known token (W&B API keys, ``hf_...``, ``ghp_...``,
  ``github_pat_...``, AWS ``AKIA...``, ``sk-...``, ``xoxb-...``, private keys, a password in a URL),
  found anywhere in the text (``export WANDB_API_KEY=<40 hex>``, a value with leading spaces);
* :func:`assigned_credentials`: the credential names a shell line assigns a literal to.

Every value a message echoes goes through :func:`short`: token-shaped text is replaced by what it
looks like, long values are cut, deep or huge structures are summarised, so no message prints a
secret or a megabyte. :func:`scrub` is the last line of defence for whole message lines.

The module is not called ``secrets``: that would shadow the standard library's module for any
script run from inside ``launch/``.
"""

from __future__ import annotations

import re
import reprlib
import typing as tp

SHORT_LIMIT = 80
"""Longest echoed value in a message, in characters."""
PATH_LIMIT = 240
"""... and of an echoed path (long paths are common and worth seeing whole)."""

CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "pass",
        "apikey",
        "credential",
        "credentials",
        "privatekey",
        "accesskey",
        "auth",
    }
)
"""Words of a name that make it name a credential (``HF_TOKEN`` has the words hf, token). ``key``
counts as the last word of a longer name (``WANDB_KEY``, ``api_key``), not alone."""

TOKEN_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(rx))
    for label, rx in (
        # 40 hex digits alone: a W&B key (a git commit looks the same, but sits in no config); next to a
        # slash it is a path component, e.g. a Hugging Face cache snapshot directory, and is not matched.
        ("W&B API key", r"(?<![0-9A-Za-z/])(?:local-)?[0-9a-f]{40}(?![0-9A-Za-z/])"),
        # Prefixed tokens are found even glued to other text ("Bearerhf_..."): the prefixes are rare in words.
        ("Hugging Face token", r"hf_[A-Za-z0-9]{30,}"),
        ("GitHub token", r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"),
        ("AWS access key id", r"(?<![0-9A-Z])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])"),
        ("private key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"),
        ("API key (sk-...)", r"(?<![0-9A-Za-z])sk-[A-Za-z0-9_-]{20,}"),  # not in "task-..." or "disk-..."
        ("Slack token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
        ("GitLab token", r"glpat-[A-Za-z0-9_-]{20,}"),
        # Bounded and anchored after a non-scheme character: linear time on a megabyte of letters.
        ("password in a URL", r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://[^/\s:@]{1,256}:[^/\s@]{1,256}@"),
    )
)
"""(what it looks like, pattern) of the token shapes refused in inputs and removed from messages."""

SHELL_FIX = (
    "export it in your shell before `cyberft submit` instead (sbatch passes the environment on, "
    "and the job reads it on the compute node)"
)
"""How to pass a credential to the jobs without writing it into a file."""

_ASSIGNMENT = re.compile(
    r"(?:^|(?<=[\s;&|(`]))(?:export\s+|declare\s+-x\s+|readonly\s+|local\s+)?"
    r"([A-Za-z_][A-Za-z0-9_]*)=([^\s;&|]*)"
)
_MAX_WALK = 2000  # values visited by short() before it stops looking inside a structure


def _words(name: str) -> list[str]:
    """``"hfToken"`` -> ``["hf", "token"]``; ``"WANDB_API_KEY"`` -> ``["wandb", "api", "key"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_credential_name(name: tp.Any) -> bool:
    """Whether a variable or key name names a credential.

    Examples
    --------
    >>> [is_credential_name(k) for k in ("HF_TOKEN", "apiKey", "DB_PASSWD", "max_new_tokens", "NCCL_DEBUG")]
    [True, True, True, False, False]
    """
    words = _words(str(name))
    return any(w in CREDENTIAL_WORDS for w in words) or (len(words) > 1 and words[-1] in ("key", "keys"))


def token_kind(text: tp.Any) -> str | None:
    """What token ``text`` holds somewhere (``"Hugging Face token"``), or None."""
    if not isinstance(text, str):
        return None
    return next((label for label, rx in TOKEN_SHAPES if rx.search(text)), None)


def assigned_credentials(line: str) -> list[str]:
    """Credential names that the shell line ``line`` assigns a literal value to.

    ``export WANDB_API_KEY=abc`` -> ``["WANDB_API_KEY"]``. A value taken from elsewhere when the
    job runs (``HF_TOKEN=$(cat ~/.hf_token)``, ``"$SAVED"``) stores nothing and is not counted.
    """
    out = []
    for name, value in _ASSIGNMENT.findall(line):
        literal = value.lstrip("\"'")
        if is_credential_name(name) and literal and not literal.startswith("$"):
            out.append(name)
    return out


def secret_problem(where: str, value: tp.Any, what: str = "the experiment") -> str | None:
    """A problem line when ``value`` (a string) looks like a token; it never contains the value."""
    kind = token_kind(value)
    if kind is None:
        return None
    return (
        f"{where}: holds what looks like a {kind} (not shown); {what} is copied into the experiment "
        f"directory and job scripts -> remove it; {SHELL_FIX}"
    )


def short_path(path: tp.Any) -> str:
    """A path as messages echo it: :func:`short` with room for a long path."""
    return short(str(path), PATH_LIMIT)


def scrub(text: str) -> str:
    """``text`` with every token-shaped part replaced by ``<redacted: what it looks like>``."""
    for label, rx in TOKEN_SHAPES:
        text = rx.sub(f"<redacted: {label}>", text)
    return text


class _Short(reprlib.Repr):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 6, 6, 6, 6
        self.maxstring = self.maxother = self.maxlong = limit


def _redacted(value: tp.Any, budget: list[int], limit: int) -> tp.Any:
    """``value`` with token-shaped strings scrubbed (keys too), strings cut to what a message can show.

    Only the head of a long string is scanned (tokens are short), so this takes time in proportion to
    what is shown, not to the value; at most ``budget[0]`` values are visited.
    """
    budget[0] -= 1
    if budget[0] < 0:
        return value
    if isinstance(value, str):
        head = value[: limit + 256]
        return scrub(head) if token_kind(head) else head
    if isinstance(value, dict):
        return {_redacted(k, budget, limit): _redacted(v, budget, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v, budget, limit) for v in value)
    return value


def short(value: tp.Any, limit: int = SHORT_LIMIT) -> str:
    """``repr(value)`` fit for a message: secrets replaced, at most about ``limit`` characters.

    Examples
    --------
    >>> short("x" * 1000, limit=10)
    "'xxxxxxxxxx'...(1000 chars)"
    >>> short("hf_" + "a" * 34)
    "'<redacted: Hugging Face token>'"
    """
    shown = _redacted(value, [_MAX_WALK], limit)
    if isinstance(value, str) and len(value) > limit:
        return repr(shown[:limit]) + f"...({len(value)} chars)"
    text = _Short(limit).repr(shown)
    if len(text) > limit + 20:  # reprlib bounds each element, not the whole
        text = text[:limit] + "..."
    return scrub(text)  # tokens split across a structure's repr
