"""Port slots: a stable preferred slot per id, claimed in a registry under a file lock.

Probing a port by binding to it is not a reservation (servers start later), so every hand-out
is recorded in ``agents/.grove/ports.json`` and checked under the same lock that writes it.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from ..core import liveness, locks
from ..core.config import Settings
from ..core.errors import GroveError
from ..core.state import now


@dataclass(frozen=True)
class Claim:
    slot: int
    ports: dict[str, int]
    reused: bool  # this id already held the slot


def preferred_slot(adw_id: str, slots: int) -> int:
    """sha256 of the id modulo the slot count: the same on every machine and every run
    (Python's ``hash()`` is salted per process). The whole digest as one big-endian integer, so
    ``int(sha256(id).hexdigest(), 16) % slots`` outside Grove predicts it (DESIGN.md's contract)."""
    return int.from_bytes(_sha256(adw_id.encode()).digest(), "big") % slots


try:  # CPython's own sha256: the same digest, without loading OpenSSL through hashlib (1 ms, issue 12)
    from _sha256 import sha256 as _sha256  # 3.10, 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256


def ports_for(settings: Settings, slot: int) -> dict[str, int]:
    return {name: base + slot for name, base in settings.port_bases}


def env_lines(ports: dict[str, int]) -> dict[str, str]:
    """The variables of ``.ports.env``: every port, then the URL the client uses for the backend."""
    values = {name: str(port) for name, port in ports.items()}
    values["VITE_BACKEND_URL"] = f"http://localhost:{ports['BACKEND_PORT']}"
    return values


def registry_path(settings: Settings):
    return settings.grove_path / "ports.json"


def _registry_lock(settings: Settings):
    return locks.locked(settings.lock_path("ports"), settings.lock_timeout, "port registry is busy")


def read_registry(settings: Settings) -> dict[str, dict]:
    data = locks.read_json(registry_path(settings), "port registry")
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("claims"), dict):
        raise GroveError(f"port registry {registry_path(settings)} is not a Grove registry",
                         hint="fix or move it aside; `inv doctor` lists what it held")
    return data["claims"]


def _write_registry(settings: Settings, claims: dict[str, dict]) -> None:
    ordered = dict(sorted(claims.items(), key=lambda item: int(item[0])))
    locks.atomic_write_json(registry_path(settings), {"version": 1, "claims": ordered})


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




def claim_is_dead(settings: Settings, claim: dict) -> bool:
    """A setup's claim whose process died before its agent existed: no live owner, no worktree, no state.

    An explicit claim (`inv ports.claim`) is never dead: it holds until released (issue 10, defect 8).
    """
    adw_id = str(claim.get("adw_id", ""))
    return (
        not claim.get("explicit")
        and not liveness.holder_alive(claim)  # pid and start time: a reused pid is no owner (issue 20)
        and not (adw_id and settings.worktree_path(adw_id).exists())
        and not (adw_id and settings.state_path(adw_id).exists())
    )


def claim(settings: Settings, adw_id: str, explicit: bool = False) -> Claim:
    """Claim a slot for ``adw_id``: its own if it has one, else the preferred one, else the next free.

    ``explicit`` marks a claim made on its own (not by a setup): it holds until released.
    """
    with _registry_lock(settings):
        claims = read_registry(settings)
        held: dict | None  # a slot's claim; None below for a slot nobody holds
        for slot_text, held in claims.items():
            if held.get("adw_id") == adw_id and int(slot_text) < settings.port_slots:
                if explicit and not held.get("explicit"):
                    claims[slot_text] = dict(held, explicit=True)
                    _write_registry(settings, claims)
                return Claim(int(slot_text), ports_for(settings, int(slot_text)), True)
        start = preferred_slot(adw_id, settings.port_slots)
        busy = []
        for step in range(settings.port_slots):
            slot = (start + step) % settings.port_slots
            held = claims.get(str(slot))
            if held and not claim_is_dead(settings, held):
                continue
            ports = ports_for(settings, slot)
            in_use = [port for port in ports.values() if port_busy(port)]
            if in_use:
                busy.append(f"slot {slot} (port {in_use[0]} in use)")
                continue
            claims[str(slot)] = {"adw_id": adw_id, **liveness.stamp(), "claimed_at": now(),
                                 **({"explicit": True} if explicit else {})}
            _write_registry(settings, claims)
            return Claim(slot, ports, False)
    holders = [f"slot {s}: {c.get('adw_id')}" for s, c in sorted(claims.items(), key=lambda i: int(i[0]))]
    raise GroveError(
        f"no free slot: all {settings.port_slots} port slots are taken ({'; '.join(holders + busy)})",
        hint="tear down a finished agent (`inv teardown --adw-id ID`) or raise ADW_PORT_SLOTS",
    )


def release(settings: Settings, adw_id: str) -> list[int]:
    """Drop every claim ``adw_id`` holds; returns the freed slots."""
    with _registry_lock(settings):
        claims = read_registry(settings)
        freed = [int(s) for s, c in claims.items() if c.get("adw_id") == adw_id]
        if freed:
            _write_registry(settings, {s: c for s, c in claims.items() if c.get("adw_id") != adw_id})
        return freed


def release_dead(settings: Settings) -> list[dict]:
    """Drop claims whose owner died and left no worktree and no state (crash leftovers)."""
    with _registry_lock(settings):
        claims = read_registry(settings)
        dead = {s: c for s, c in claims.items() if claim_is_dead(settings, c)}
        if dead:
            _write_registry(settings, {s: c for s, c in claims.items() if s not in dead})
        return [dict(c, slot=int(s)) for s, c in dead.items()]
