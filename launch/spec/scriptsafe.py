"""The one place that checks every string that can reach a generated sbatch script.

submitit 1.5.4 writes the script (``submitit.slurm.slurm._make_sbatch_string``) as::

    #!/bin/bash
    #SBATCH --<key>=<shlex.quote(value)>      one per option, keys as given (additional_parameters too)
    <setup lines, verbatim>                   the profile's setup, then our exports
    export SUBMITIT_EXECUTOR=slurm
    srun --unbuffered --output <quoted path> ... <python> -u -m submitit.core._submit <quoted folder>

Bash reads the setup lines and the command; ``sbatch`` reads the ``#SBATCH`` lines with its own
parser (quotes, backslash escapes, ``#`` comments, ``%`` patterns in log paths) and stops at the
first line that is not a comment. So a newline in any value adds a line bash runs and hides the
options after it; a key is never quoted; a value with a backslash or quote is read differently by
sbatch than by bash. What reaches the script, and the rule each follows:

* ``#SBATCH`` values: the profile's ``partition``, ``account``, ``qos``, ``constraint``,
  ``gpu_type`` (typed GPU requests) are names (:data:`NAME_RULES`); ``additional_parameters``
  keys are option names, their values text without quotes, backslashes or control characters.
* Paths (the experiment directory under ``output_dir``): no control characters, and none of
  ``% : \\ ' "``: sbatch expands ``%j``-style patterns in log paths, and the code snapshot goes
  into ``PYTHONPATH``, whose separator is ``:``.
* Shell lines: ``setup`` lines are the profile author's own shell, one line each (no control
  characters but tab); ``env`` names are identifiers and values are quoted with ``shlex.quote``
  by :mod:`launch.run.submit`; ``python`` is a command whose words use no shell syntax.
* Job names (``<experiment>.<method>``) follow :data:`launch.spec.schema.NAME_RE` already.

The config and profile loaders call :func:`output_dir_problems` and :func:`profile_problems`, so
``validate``, ``run``, ``submit`` and the dry run all refuse the same values, each problem naming
its field and never printing the value raw. ``tests/test_scriptsafe.py`` renders scripts from
hostile values that pass and parses them back: every line is one the launcher meant.
"""

from __future__ import annotations

import os
import re
import shlex
import typing as tp
import unicodedata

from launch.spec.redact import short, short_path


class ScriptedProfile(tp.Protocol):
    """The fields of a site profile (:class:`launch.site.profiles.SlurmProfile`) that reach a job script.

    A protocol rather than the class itself: the profile module imports this one, and this one
    needs only the fields.
    """

    partition: str
    account: str | None
    qos: str | None
    constraint: str | None
    gpu_type: str
    typed_gpus: bool
    setup: list[str]
    env: dict[str, str]
    python: str | None
    additional_parameters: dict[str, tp.Any]


NAME_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "partition": (re.compile(r"[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*"), "letters, digits, _ . + - (several: a,b)"),
    "account": (re.compile(r"[A-Za-z0-9_.+-]+"), "letters, digits, _ . + -"),
    "qos": (re.compile(r"[A-Za-z0-9_.+-]+"), "letters, digits, _ . + -"),
    "constraint": (re.compile(r"[A-Za-z0-9_.:+&|*!()\[\],-]+"), "feature names joined by & | , ( ) [ ] * !"),
    "gpu_type": (re.compile(r"[A-Za-z0-9_.-]+"), "the GRES type as `sinfo -o %G` shows it, e.g. a100"),
}
"""Profile fields sent as ``#SBATCH`` values: (pattern, what it allows)."""

OPTION_RE = re.compile(r"[a-z][a-z0-9]*([_-][a-z0-9]+)*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SHELL_MANAGED = frozenset(
    {
        "_",
        "IFS",
        "PS4",
        "PWD",
        "OLDPWD",
        "UID",
        "EUID",
        "PPID",
        "GROUPS",
        "RANDOM",
        "SECONDS",
        "LINENO",
        "FUNCNAME",
        "SHELLOPTS",
        "SUBMITIT_EXECUTOR",
    }
)
"""Variables bash (or the job script) sets itself: a profile value for them would not hold, or would
change how the script is read (IFS)."""
PYTHON_WORD_RE = re.compile(r"(?:[A-Za-z0-9_./:=+@%,~-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
"""A word of the ``python`` command: paths, options, ``$VAR``/``${VAR}``; no quotes, ``;&|<>()#`` or backticks.

``$`` only starts a variable and braces only enclose its name: a lone ``${`` or ``${:}`` stops bash reading
the script, and ``{a,b}`` or ``{1..2}`` would make bash expand one word into several."""

_PATH_UNSAFE = set("%:\\'\"")
_VALUE_UNSAFE = set("\\'\"")


def control_problem(where: str, text: str, allow_tab: bool = False) -> str | None:
    """A problem when ``text`` holds a control, format or line-separator character."""
    for i, ch in enumerate(text):
        if ch == "\t" and allow_tab:
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            name = unicodedata.name(ch, "") or {"\n": "LINE FEED", "\r": "CARRIAGE RETURN"}.get(ch, "control")
            return (
                f"{where}: holds a control character (U+{ord(ch):04X} {name}, at position {i}) that would "
                "start a new line or hide text in the job script -> remove it"
            )
    return None


def sbatch_value_problem(where: str, value: tp.Any) -> str | None:
    """Why ``value`` cannot be an ``#SBATCH`` option value (None when it can)."""
    if value is True:
        return None  # a flag: ``#SBATCH --exclusive``
    if value is False or value is None:
        return f"{where}: {value} is not an sbatch value -> remove the option to leave it off"
    if isinstance(value, (int, float)):
        return None if value == value and abs(value) != float("inf") else f"{where}: {value} -> a finite number"
    text = str(value)
    problem = control_problem(where, text)
    if problem:
        return problem
    if not text.strip() or text != text.strip():
        return f"{where}: {short(text)} is empty or has spaces at either end -> write the value alone"
    bad = sorted(set(text) & _VALUE_UNSAFE)
    if bad:
        return (
            f"{where}: {short(text)} holds {' '.join(bad)}, which sbatch reads differently from the shell "
            "-> write the value without quotes or backslashes"
        )
    return None


def path_problem(where: str, path: str) -> str | None:
    """Why a path that lands in the script (log files, the code snapshot) cannot (None when it can)."""
    problem = control_problem(where, path)
    if problem:
        return problem
    bad = sorted(set(path) & _PATH_UNSAFE)
    if bad:
        return (
            f"{where}: {short_path(path)} holds {' '.join(bad)}; sbatch reads % as a log-file pattern and quotes "
            "and backslashes its own way, and : separates PYTHONPATH entries -> use a directory without them"
        )
    return None


def _name_problem(field: str, value: str) -> str | None:
    problem = control_problem(field, value)
    if problem:
        return problem
    pattern, allowed = NAME_RULES[field]
    if not pattern.fullmatch(value):
        return f"{field}: {short(value)} is not a Slurm name -> {allowed}"
    return None


def python_problem(where: str, command: str) -> str | None:
    """Why ``command`` cannot start the jobs' Python (None when it can)."""
    problem = control_problem(where, command)
    if problem:
        return problem
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    if not words or any(not PYTHON_WORD_RE.fullmatch(w) for w in words) or " ".join(words) != " ".join(command.split()):
        return (
            f"{where}: {short(command)} is not a plain command -> an interpreter path and its arguments, "
            "e.g. /scratch/venvs/cyberft/bin/python or `apptainer exec img.sif python` (no quotes, ; & | < > # "
            "or backticks; $ and braces only as $VAR or ${VAR})"
        )
    return None


def output_dir_problems(output_dir: str) -> list[str]:
    """The config's value that reaches job scripts: the output directory (job names follow NAME_RE)."""
    if not output_dir:
        return []
    problem = path_problem("output_dir", output_dir)
    if problem is None:  # the script holds the absolute path: the current directory counts too
        resolved = os.path.abspath(os.path.expanduser(output_dir))
        problem = path_problem(f"output_dir (absolute: {short_path(resolved)})", resolved)
    return [problem] if problem else []


def profile_problems(p: ScriptedProfile) -> list[str]:
    """Every profile value that reaches a job script, checked by its rule."""
    problems = []
    for field in ("partition", "account", "qos", "constraint"):
        value = getattr(p, field)
        if value:
            problems.append(_name_problem(field, value))
    if p.gpu_type:
        typed = p.typed_gpus  # then it is sent as a GRES type; otherwise it only labels reports
        problems.append(_name_problem("gpu_type", p.gpu_type) if typed else control_problem("gpu_type", p.gpu_type))
    for i, line in enumerate(p.setup):
        problems.append(control_problem(f"setup[{i}]", line, allow_tab=True))
        if line.lstrip().startswith("#"):  # sbatch would read a leading "#SBATCH ..." line as an option
            problems.append(
                f"setup[{i}]: a comment line -> remove it (a setup line is a command; sbatch reads "
                "#SBATCH lines anywhere before the first command)"
            )
    for name, value in p.env.items():
        if not ENV_NAME_RE.fullmatch(name):
            problems.append(
                f"env.{short(name, 40)}: not a valid variable name -> letters, digits and '_', "
                "not starting with a digit"
            )
        elif name in SHELL_MANAGED or name.startswith("BASH"):
            problems.append(f"env.{name}: bash or the job script sets this variable itself -> remove it")
        else:
            problems.append(control_problem(f"env.{name}", value))
    if p.python is not None:
        problems.append(python_problem("python", p.python))
    for key, value in p.additional_parameters.items():
        if not OPTION_RE.fullmatch(key):
            problems.append(
                f"additional_parameters.{short(key, 40)}: not an sbatch option name -> e.g. mail_type "
                "(without the leading --)"
            )
        else:
            problems.append(sbatch_value_problem(f"additional_parameters.{key}", value))
    return [x for x in problems if x]


def interpreter_problem(executable: str) -> str | None:
    """Why the interpreter running cyberft cannot be written into the jobs' command (``python: null``)."""
    problem = control_problem("python", executable)
    if problem:
        return problem.replace("python:", "python: null means this interpreter, whose path", 1)
    return None
