"""The real choices of ``cyberft profile detect``: partition, account and QoS, from the facts and the flags.

:func:`resolve` makes each choice that has one answer (the only GPU partition, the only account
allowed on it), says where it came from, and returns the others as :class:`Choice` (asked on a
terminal, otherwise required as a flag): detection never guesses silently. Pure functions.
"""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field

from launch.site.sitedetect import Assoc, Facts, Partition, default_partition, enforced, gpu_partitions


@dataclass
class Choice:
    """A real choice detection will not make alone: asked on a terminal, else given by ``flag``."""

    what: str
    flag: str
    options: list[str]
    default: str | None = None

    def describe(self) -> str:
        shown = [f"{o} (default)" if o == self.default else o for o in self.options]
        return f"{self.what}: several to choose from: {', '.join(shown)} -> {self.flag} <one of them>"


@dataclass
class Resolved:
    """The choices made (None: Slurm's default), those still open, and problems found on the way."""

    partition: str = ""
    account: str | None = None
    qos: str | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)
    pending: list[Choice] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- choices


def my_assoc(f: Facts, partition: str) -> list[Assoc]:
    cluster = f.config.get("ClusterName", "")
    return [
        a
        for a in f.assoc or []
        if a.user == f.user and a.partition in ("", partition) and (not cluster or a.cluster in ("", cluster))
    ]


def _allowed(names: tp.Iterable[str], allow: list[str] | None, deny: tp.Sequence[str] = ()) -> list[str]:
    return [n for n in dict.fromkeys(names) if (allow is None or n in allow) and n not in deny]


def resolve(f: Facts, partition: str | None = None, account: str | None = None, qos: str | None = None) -> Resolved:
    """Choose the partition, account and QoS from the facts and the flags (each None: not given)."""
    r = Resolved()
    gpu_parts = gpu_partitions(f.nodes)
    default = default_partition(f.nodes, f.partitions)
    if partition:
        known = list(dict.fromkeys(n.partition for n in f.nodes)) or list(f.partitions)
        if partition not in known:
            r.problems.append(
                f"--partition: {partition!r} is not a partition of this cluster -> one of {', '.join(known)}"
            )
            return r
        if partition not in gpu_parts:
            r.problems.append(
                f"--partition: {partition!r} has no node with GPUs (sinfo shows no gpu GRES) -> "
                f"{'one of ' + ', '.join(gpu_parts) if gpu_parts else 'this cluster has no GPU partition'}"
            )
            return r
        r.partition, why = partition, "chosen with --partition"
    elif not gpu_parts:
        r.problems.append(
            "partition: no partition has a node with GPUs (sinfo shows no gpu GRES) -> "
            "ask the site which partition has the GPUs, then --partition P"
        )
        return r
    elif len(gpu_parts) > 1:
        r.pending.append(Choice("partition", "--partition", gpu_parts, default if default in gpu_parts else None))
        return r
    else:
        r.partition, why = gpu_parts[0], "the only partition with GPU nodes"
    others = [p for p in dict.fromkeys(n.partition for n in f.nodes) if p != r.partition]
    r.notes["partition"] = [
        f"partition: {why} (sinfo -N GRES); default partition: {default or 'none'}"
        + (f"; others: {', '.join(others)}" if others else "")
    ]
    _resolve_account(f, r, account)
    if not r.pending and not r.problems:
        _resolve_qos(f, r, qos)
    return r


def _resolve_account(f: Facts, r: Resolved, account: str | None) -> None:
    part = f.partitions.get(r.partition, Partition(r.partition))
    enforce = enforced(f.config)
    required = "associations" in enforce
    how = f"AccountingStorageEnforce={f.config.get('AccountingStorageEnforce', 'none')}"
    if f.assoc is not None:
        mine = sorted({a.account for a in my_assoc(f, r.partition)})
        allowed = _allowed(mine, part.allow_accounts, part.deny_accounts)
        default = (f.default_accounts or {}).get(f.user)
        source = f"sacctmgr: {f.user}'s accounts {', '.join(mine) or 'none'}, default {default or 'none'}"
    else:
        allowed = part.allow_accounts
        default = None
        source = f"slurmdbd did not answer ({f.dbd_note}): accounts from the partition's AllowAccounts"
    limit = "ALL" if part.allow_accounts is None else ",".join(part.allow_accounts)
    source += f"; partition {r.partition} AllowAccounts={limit}; {how}"
    notes = r.notes.setdefault("account", [source])
    if account:
        if allowed is not None and account not in allowed:
            r.problems.append(
                f"--account: {account!r} may not use partition {r.partition} as {f.user} -> "
                f"{'one of ' + ', '.join(allowed) if allowed else 'ask the site for an account on it'} ({source})"
            )
        r.account = account
        notes.append(
            "chosen with --account"
            + (f"; others: {', '.join(a for a in allowed if a != account)}" if allowed and len(allowed) > 1 else "")
        )
    elif allowed is None:
        notes.append("null: no account list to choose from; set one if the site requires it")
    elif not allowed:
        if required or part.allow_accounts is not None:
            r.problems.append(
                f"account: {f.user} has no account that may use partition {r.partition} ({source}) -> ask the "
                "site for one, then --account A"
            )
    elif len(allowed) == 1:
        r.account = allowed[0]
        why = "required" if required or default not in allowed else "not required, written so the charge is explicit"
        notes.append(f"the only account of {f.user} allowed on {r.partition} ({why})")
    else:
        r.pending.append(Choice("account", "--account", allowed, default if default in allowed else None))


def _resolve_qos(f: Facts, r: Resolved, qos: str | None) -> None:
    part = f.partitions.get(r.partition, Partition(r.partition))
    rows = [a for a in my_assoc(f, r.partition) if r.account in (None, a.account)]
    if f.assoc is not None:
        options = _allowed([q for a in rows for q in a.qos], part.allow_qos)
        default = next((a.default_qos for a in rows if a.default_qos), "") or ("normal" if "normal" in options else "")
        source = f"sacctmgr: QoS of {f.user}/{r.account or 'default account'}: {', '.join(options) or 'none'}"
    else:
        options, default = part.allow_qos or [], ""
        source = f"partition AllowQos={'ALL' if part.allow_qos is None else ','.join(part.allow_qos)} (no slurmdbd)"
    notes = r.notes.setdefault("qos", [source])
    if qos:
        if options and qos not in options:
            r.problems.append(
                f"--qos: {qos!r} is not one {f.user} may use on {r.partition} -> one of {', '.join(options)}"
            )
        r.qos = qos
        notes.append(
            "chosen with --qos" + (f"; others: {', '.join(o for o in options if o != qos)}" if len(options) > 1 else "")
        )
    elif len(options) > 1:
        r.pending.append(Choice("qos", "--qos", options, default or None))
    elif len(options) == 1 and options[0] != default:
        r.qos = options[0]
        notes.append("the only QoS allowed")
    else:
        notes.append(f"null: the default QoS{' (' + default + ')' if default else ''}")
