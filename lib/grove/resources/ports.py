"""Port leases, unique across the machine: a stable preferred slot per id, leased in one registry.

Probing a port by binding to it is not a reservation (servers start later), so every hand-out is
recorded in a registry and checked under the same lock that writes it. Issue 23: the registry is
one per user for the whole machine (``ADW_PORT_REGISTRY``, default ``ports.json`` in the user's
state directory), shared by every repository and clone, so two clones of one repo never hand the
same id the same ports. A lease records the ports, the repository (its git common dir), the agent
and the process that took it (pid + start time: pids are reused). Past the ``ADW_PORT_SLOTS``
slots, leases come from the overflow range ``ADW_PORT_OVERFLOW`` (docs/ports-and-services.md).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Iterator, NamedTuple

from ..core import liveness, locks, portable
from ..core.files import sha256
from ..core.config import Settings
from ..core.errors import GroveError, bad_input
from ..core.state import now
from .shape import Found, Resource, problem

VERSION = 1  # of the machine-wide lease registry; a newer one is refused (exit 2), never rewritten
LEGACY = "ports.json"  # the per-repository registry of Grove before issue 23, under agents/.grove/


class Claim(NamedTuple):
    slot: int  # slots from ADW_PORT_SLOTS up are overflow slots (ports from ADW_PORT_OVERFLOW)
    ports: dict[str, int]
    reused: bool  # this id already held the slot


def preferred_slot(adw_id: str, slots: int) -> int:
    """sha256 of the id modulo the slot count: the same on every machine and every run
    (Python's ``hash()`` is salted per process). The whole digest as one big-endian integer, so
    ``int(sha256(id).hexdigest(), 16) % slots`` outside Grove predicts it (DESIGN.md's contract)."""
    return int.from_bytes(sha256(adw_id.encode()).digest(), "big") % slots



def ports_for(settings: Settings, slot: int) -> dict[str, int]:
    """A slot's ports: base + slot within the slots; past them, the overflow slot's block."""
    if slot < settings.port_slots or settings.port_overflow is None:
        return {name: base + slot for name, base in settings.port_bases}
    low = settings.port_overflow[0] + (slot - settings.port_slots) * len(settings.port_bases)
    return {name: low + i for i, (name, _) in enumerate(settings.port_bases)}


def overflow_slots(settings: Settings) -> int:
    """How many whole port sets the overflow range holds (0 when it is off)."""
    if settings.port_overflow is None:
        return 0
    low, high = settings.port_overflow
    return (high - low + 1) // len(settings.port_bases)


def env_lines(ports: dict[str, int]) -> dict[str, str]:
    """The variables of ``.ports.env``: every port, then the URL the client uses for the backend."""
    values = {name: str(port) for name, port in ports.items()}
    values["VITE_BACKEND_URL"] = f"http://localhost:{ports['BACKEND_PORT']}"
    return values


# ---------------------------------------------------------------------------------------------
# The registry file


def registry_path(settings: Settings) -> Path:
    return settings.port_registry


def legacy_path(settings: Settings) -> Path:
    return settings.grove_path / LEGACY


def _lock(settings: Settings):
    # A sidecar lock beside the registry (never the data file), shared by every repository.
    path = _usable(settings)
    return locks.locked(path, settings.lock_timeout, "the machine's port lease registry is busy")


def _usable(settings: Settings) -> Path:
    """The registry's lock path, once its directory exists and is writable; else bad input (exit 2)."""
    path = settings.port_registry.with_name(settings.port_registry.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise bad_input(f"cannot use the port lease registry {settings.port_registry}: {exc.strerror or exc}",
                        "point ADW_PORT_REGISTRY at a file in a directory you can write") from None
    if not os.access(path.parent, os.W_OK):
        raise bad_input(f"cannot use the port lease registry {settings.port_registry}: {path.parent} is not writable",
                        "point ADW_PORT_REGISTRY at a file in a directory you can write")
    return path


@lru_cache(maxsize=64)
def _common_dir(repo: Path) -> str:
    dotgit = repo / ".git"
    if dotgit.is_dir():
        return str(dotgit.resolve())
    from ..core import git

    return str(Path(git.git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")).resolve())


def repo_key(settings: Settings) -> str:
    """A repository on this machine: its absolute git common dir (one for all its worktrees)."""
    return _common_dir(settings.repo)


def _bad(path: Path, what: str) -> GroveError:
    return bad_input(f"port lease registry {path} {what}",
                     "fix it or move it aside (Grove will not overwrite it); or point ADW_PORT_REGISTRY elsewhere")


def read_leases(path: Path) -> list[dict]:
    """Every lease in the registry at ``path``; bad input (exit 2) when it is corrupt or newer."""
    try:
        data = locks.read_json(path, "port lease registry")
    except GroveError as exc:  # not JSON, or JSON null: bad input, never overwritten
        raise bad_input(exc.message, "fix it or move it aside (Grove will not overwrite it); "
                                     "or point ADW_PORT_REGISTRY elsewhere") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("version"), int) or isinstance(data["version"], bool):
        raise _bad(path, "is not a Grove port lease registry")
    if data["version"] > VERSION:
        raise bad_input(f"port lease registry {path} was written by a newer Grove (version {data['version']}; "
                        f"this one reads version {VERSION})", "upgrade Grove, or point ADW_PORT_REGISTRY elsewhere")
    leases = data.get("leases")
    if not isinstance(leases, list) or not all(_well_formed(lease) for lease in leases):
        raise _bad(path, "is not a Grove port lease registry (bad 'leases')")
    return leases


def _well_formed(lease: object) -> bool:
    return (isinstance(lease, dict) and isinstance(lease.get("repo"), str) and isinstance(lease.get("adw_id"), str)
            and isinstance(lease.get("slot"), int) and isinstance(lease.get("ports"), dict)
            and all(isinstance(p, int) and not isinstance(p, bool) for p in lease["ports"].values()))


def _write(settings: Settings, leases: list[dict]) -> None:
    """One lease a line: json's C encoder does each, where indent=2 would send the whole file
    through the pure-Python one (a third of a claim's time with 50 leases)."""
    ordered = sorted(leases, key=lambda lease: (lease["repo"], lease["slot"], lease["adw_id"]))
    rows = "".join(f"\n  {json.dumps(lease)}," for lease in ordered).rstrip(",")
    locks.atomic_write_text(settings.port_registry, f'{{"version": {VERSION}, "leases": [{rows}\n]}}\n')


def check(settings: Settings) -> None:
    """Bad input (exit 2) now, before a setup changes anything, when a registry cannot be used."""
    _usable(settings)
    read_leases(settings.port_registry)
    _legacy_claims(settings)


# ---------------------------------------------------------------------------------------------
# The per-repository registry of older Groves: migrated on first use, ports unchanged


def _legacy_claims(settings: Settings) -> dict[str, dict]:
    path = legacy_path(settings)
    try:
        data = locks.read_json(path, "port registry")
    except GroveError as exc:
        raise bad_input(exc.message, exc.hint) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("claims"), dict) \
            or not all(s.isdigit() and isinstance(c, dict) for s, c in data["claims"].items()):
        raise bad_input(f"port registry {path} is not a Grove registry",
                        "fix or move it aside; `inv doctor` lists what it held")
    return data["claims"]


def _from_legacy(settings: Settings, slot_text: str, old: dict) -> dict:
    """A per-repo claim as a lease, with the ports the agent has now (its state), so no live
    agent's ports change (issue 23)."""
    from ..core import state

    adw_id = str(old.get("adw_id", ""))
    ports = None
    try:
        current = state.load(settings, adw_id) if adw_id else None
        ports = (current or {}).get("ports")
    except GroveError:
        pass
    if not isinstance(ports, dict) or not ports:
        ports = ports_for(settings, int(slot_text))
    return {"repo": repo_key(settings), "checkout": str(settings.repo), "adw_id": adw_id, "slot": int(slot_text),
            "ports": ports, "worktree": str(settings.worktree_path(adw_id)),
            "state": str(settings.state_path(adw_id)), "pid": old.get("pid"), liveness.KEY: old.get(liveness.KEY),
            "leased_at": old.get("claimed_at") or now(), "migrated": True,
            **({"explicit": True} if old.get("explicit") else {})}


def _migrate(settings: Settings, leases: list[dict]) -> bool:
    """Bring this repository's per-repo claims into ``leases`` and the registry, then move the old
    file aside as ports.json.migrated. True when it did (the registry is written already)."""
    claims = _legacy_claims(settings)
    if not claims and not legacy_path(settings).exists():
        return False
    key = repo_key(settings)
    have = {lease["adw_id"] for lease in leases if lease["repo"] == key}
    added = [_from_legacy(settings, s, c) for s, c in claims.items() if c.get("adw_id") and c["adw_id"] not in have]
    leases.extend(added)
    _write(settings, leases)  # first the leases, then the old file goes: a crash between re-migrates nothing twice
    os.replace(legacy_path(settings), legacy_path(settings).with_name(LEGACY + ".migrated"))
    return True


# ---------------------------------------------------------------------------------------------
# Liveness and staleness


def holder_alive(lease: dict) -> bool:
    """The process that took the lease still runs: its pid *and* its start time (core/liveness.py,
    issue 20); a claim migrated from an older per-repo registry with a pid only is judged as
    liveness judges such records."""
    return liveness.holder_alive(lease)


def stale_reason(lease: dict) -> str | None:
    """Why a lease holds nothing any more: its repository is gone, or (not taken on its own by
    `ports.claim`) its holder died and its worktree is gone. None: it is live."""
    if not os.path.isdir(lease["repo"]):
        return "repository gone"
    # The worktree first: a path check is cheaper than reading a process (every claim asks this of every lease).
    if lease.get("explicit") or os.path.lexists(str(lease.get("worktree") or "")) or holder_alive(lease):
        return None
    return "worktree gone"


def _free_to_take(lease: dict) -> bool:
    """What a setup may take over on its own: a stale lease whose agent left no state either
    (a setup that died early); the rest waits for `doctor --fix`."""
    reason = stale_reason(lease)
    return reason == "repository gone" or (reason is not None and not os.path.exists(str(lease.get("state") or "")))


# ---------------------------------------------------------------------------------------------
# Claiming and releasing


def port_busy(port: int) -> bool:
    """True when something listens on (or holds) ``port`` on 127.0.0.1 or ::1."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this machine
        try:
            # SO_REUSEADDR: a port in TIME_WAIT from a stopped server is free to use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or exc.errno == errno.EACCES:
                return True
        finally:
            sock.close()
    return False




def _candidates(settings: Settings, adw_id: str) -> Iterator[int]:
    """The preferred slot, the other slots in turn, then the overflow slots whose block stays clear
    of this repository's slot ranges (an ADW_EXTRA_PORTS base may lie inside the overflow range)."""
    start = preferred_slot(adw_id, settings.port_slots)
    for step in range(settings.port_slots):
        yield (start + step) % settings.port_slots
    ranges = [(base, base + settings.port_slots - 1) for _, base in settings.port_bases]
    for k in range(overflow_slots(settings)):
        slot = settings.port_slots + k
        if not any(lo <= port <= hi for port in ports_for(settings, slot).values() for lo, hi in ranges):
            yield slot


def claim(settings: Settings, adw_id: str, explicit: bool = False) -> Claim:
    """Lease ports for ``adw_id``: its own lease if it has one, else the preferred slot, else the
    next slot whose ports nobody on the machine leases or listens on, else an overflow slot.

    ``explicit`` marks a claim made on its own (not by a setup): it holds until released.
    """
    key, names = repo_key(settings), [name for name, _ in settings.port_bases]
    with _lock(settings):
        leases = read_leases(settings.port_registry)
        _migrate(settings, leases)
        mine = next((lease for lease in leases if lease["repo"] == key and lease["adw_id"] == adw_id), None)
        if mine is not None and list(mine["ports"]) == names:
            if explicit and not mine.get("explicit"):
                mine["explicit"] = True
                _write(settings, leases)
            return Claim(mine["slot"], dict(mine["ports"]), True)
        # Its ports' variables changed (ADW_EXTRA_PORTS): a lease anew. Stale leases are dropped.
        live = [lease for lease in leases if lease is not mine and not _free_to_take(lease)]
        changed = len(live) != len(leases)
        taken = {port for lease in live for port in lease["ports"].values()}
        busy: list[str] = []
        for slot in _candidates(settings, adw_id):
            ports = ports_for(settings, slot)
            if taken.intersection(ports.values()):
                continue
            in_use = [port for port in ports.values() if port_busy(port)]
            if in_use:
                busy.append(f"slot {slot} (port {in_use[0]} in use)")
                continue
            _write(settings, live + [_lease(settings, key, adw_id, slot, ports, explicit)])
            return Claim(slot, ports, False)
        if changed:
            _write(settings, live)
    holders = [f"slot {lease['slot']}: {lease['adw_id']}" for lease in live if lease["repo"] == key]
    raise GroveError(
        f"no free slot: all {settings.port_slots} port slots and {overflow_slots(settings)} overflow slots are "
        f"leased on this machine or in use ({'; '.join(holders + busy[:5])})",
        hint="tear down a finished agent (`inv teardown --adw-id ID`), `inv doctor --fix`, "
             "or widen ADW_PORT_SLOTS / ADW_PORT_OVERFLOW",
    )


def _lease(settings: Settings, key: str, adw_id: str, slot: int, ports: dict[str, int], explicit: bool) -> dict:
    return {"repo": key, "checkout": str(settings.repo), "adw_id": adw_id, "slot": slot, "ports": ports,
            "worktree": str(settings.worktree_path(adw_id)), "state": str(settings.state_path(adw_id)),
            **liveness.stamp(), "leased_at": now(),
            **({"explicit": True} if explicit else {})}


def release(settings: Settings, adw_id: str) -> list[int]:
    """Drop the lease ``adw_id`` holds in this repository; returns the freed slots."""
    key = repo_key(settings)
    with _lock(settings):
        leases = read_leases(settings.port_registry)
        _migrate(settings, leases)
        freed = [lease["slot"] for lease in leases if lease["repo"] == key and lease["adw_id"] == adw_id]
        if freed:
            _write(settings, [lease for lease in leases if not (lease["repo"] == key and lease["adw_id"] == adw_id)])
        return freed


def leases(settings: Settings, everywhere: bool = False) -> list[dict]:
    """This repository's leases (``everywhere``: the machine's), read-only: claims of a per-repo
    registry not migrated yet count too."""
    key = repo_key(settings)
    found = read_leases(settings.port_registry)
    have = {lease["adw_id"] for lease in found if lease["repo"] == key}
    found += [_from_legacy(settings, s, c) for s, c in _legacy_claims(settings).items()
              if c.get("adw_id") and c["adw_id"] not in have]
    return sorted((lease for lease in found if everywhere or lease["repo"] == key),
                  key=lambda lease: (lease["repo"], lease["slot"]))


def _doctor_stale(settings: Settings, lease: dict) -> str | None:
    """Why doctor releases ``lease``, if it does. A lease of this repository's agent that still has
    a state is left to that agent's own checks (directory_gone, orphaned_state), whose repair
    releases it: one problem for one agent, not two."""
    reason = stale_reason(lease)
    if reason and lease["repo"] == repo_key(settings) and reason != "repository gone" \
            and settings.state_path(lease["adw_id"]).exists():
        return None
    return reason


def stale(settings: Settings) -> list[dict]:
    """Every stale lease on the machine, each with its ``reason`` (doctor, in any repository)."""
    return [dict(lease, reason=reason) for lease in leases(settings, everywhere=True)
            if (reason := _doctor_stale(settings, lease))]


def release_stale(settings: Settings) -> list[dict]:
    """Drop every stale lease on the machine (checked again under the lock); returns them."""
    with _lock(settings):
        found = read_leases(settings.port_registry)
        _migrate(settings, found)
        gone = [lease for lease in found if _doctor_stale(settings, lease)]
        if gone:
            _write(settings, [lease for lease in found if not any(lease is g for g in gone)])
        return gone


def doctor_check(settings: Settings, found: Found) -> list[dict]:
    """Stale port leases anywhere on the machine: their repository or worktree is gone (issue 23)."""
    try:
        gone = stale(settings)
    except GroveError as exc:
        return [problem("corrupt_registry", exc.message, None, path=str(registry_path(settings)))]
    return [problem("dead_claim", f"slot {lease['slot']} ({', '.join(map(str, lease['ports'].values()))}) is leased "
                    f"to {lease['adw_id']} of {lease.get('checkout') or lease['repo']}: {lease['reason']}, "
                    "its process ended", "release the lease", slot=lease["slot"], adw_id=lease["adw_id"],
                    repo=lease["repo"], reason=lease["reason"])
            for lease in gone]


def doctor_repair(settings: Settings, p: dict) -> None:
    release_stale(settings)
    p["fixed"] = True


# Claimed in the setup chain's head, before any git work, so an agent that cannot get a slot fails
# fast and leaves nothing behind (ops/chain.py); hence no ``prepare`` here.
RESOURCE = Resource("ports", release=lambda settings, adw_id, plan: release(settings, adw_id),
                    released_as="freed_slots", check=doctor_check, problems=("dead_claim", "corrupt_registry"),
                    repair=doctor_repair)


# ---------------------------------------------------------------------------------------------
# Running agents (`grove up`, issue 23): a lease also says which processes keep its agent running,
# so ADW_MAX_RUNNING holds across every repository on the machine.


def _running(lease: dict) -> list[dict]:
    """The lease's processes that still run: pid + start time, and not a zombie (an exited service
    whose parent never reaps it keeps its /proc entry, start time included)."""
    return [p for p in lease.get("running") or [] if isinstance(p, dict) and p.get(liveness.KEY)
            and liveness.holder_alive(p) and portable.alive(p["pid"])]


def _mine(settings: Settings, leases: list[dict], adw_id: str) -> dict:
    key = repo_key(settings)
    for lease in leases:
        if lease["repo"] == key and lease["adw_id"] == adw_id:
            return lease
    raise GroveError(f"{adw_id} has no port lease", hint=f"run `grove setup --adw-id {adw_id}` again (it re-leases)")


def reserve_running(settings: Settings, adw_id: str, cap: int) -> list[str]:
    """Count ``adw_id`` as running (held by this process until :func:`set_running`) unless ``cap``
    other agents on the machine run already; returns those agents then (and reserves nothing)."""
    with _lock(settings):
        leases = read_leases(settings.port_registry)
        _migrate(settings, leases)
        mine = _mine(settings, leases, adw_id)
        if _running(mine):
            return []
        others = [f"{lease['adw_id']} ({lease.get('checkout') or lease['repo']})" for lease in leases
                  if lease is not mine and _running(lease)]
        if len(others) >= cap:
            return others
        mine["running"] = [liveness.stamp()]
        _write(settings, leases)
        return []


def set_running(settings: Settings, adw_id: str, procs: list[dict]) -> None:
    """Record the processes that keep ``adw_id`` running (``[]``: it runs nothing)."""
    with _lock(settings):
        leases = read_leases(settings.port_registry)
        try:
            mine = _mine(settings, leases, adw_id)
        except GroveError:
            return  # released meanwhile (teardown): nothing to record
        if procs:
            mine["running"] = procs
        else:
            mine.pop("running", None)
        _write(settings, leases)
