"""The seed's models as typed stdlib dataclasses (no pydantic: start-up time matters).

Each converts to the documented JSON (``to_dict``) and back (``from_dict``); see docs/json.md.
Times in JSON are ISO 8601 UTC strings (``2026-11-22T10:00:00Z``); in Python, aware datetimes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

STATUSES = ("created", "assigned", "in_progress", "completed", "failed", "merged", "cleaned", "conflict")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(text: Optional[str]) -> Optional[datetime]:
    """An ISO 8601 UTC string as an aware datetime; None for None; ValueError for anything else."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"not an ISO 8601 UTC time: {text!r}")
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    try:  # fractional seconds, or an explicit offset, from other writers
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 UTC time: {text!r}") from None
    return as_utc(moment)


def as_utc(moment: datetime) -> datetime:
    """A naive datetime means UTC (the seed passes ``datetime.utcnow()``); an aware one is converted."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def format_time(moment: Optional[datetime]) -> Optional[str]:
    return None if moment is None else as_utc(moment).strftime(_TIME_FORMAT)


def _known(cls: type, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class WorktreeMetadata:
    """One agent's worktree: the seed's fields, plus its ports and its executions."""

    name: str
    epic_id: Optional[str]
    task_name: Optional[str]
    path: Path
    branch: str
    base_branch: str
    agent_id: Optional[str]
    status: str
    created_at: datetime
    assigned_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    merged_at: Optional[datetime] = None
    cleaned_at: Optional[datetime] = None
    commits: list[str] = field(default_factory=list)
    error_message: Optional[str] = None
    github_sub_issue: Optional[int] = None
    slot: Optional[int] = None
    backend_port: Optional[int] = None
    frontend_port: Optional[int] = None
    ports: dict[str, int] = field(default_factory=dict)
    from_pool: bool = False

    _TIMES = ("created_at", "assigned_at", "completed_at", "merged_at", "cleaned_at")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "state") -> "WorktreeMetadata":
        """From a state document (``adw_id``, ``worktree_path`` ...); a bad field names the file and field."""
        def need(key: str, kind: type) -> Any:
            if not isinstance(data.get(key), kind):
                raise ValueError(f"{source}: field {key!r} is missing or not a {kind.__name__}")
            return data[key]

        values: dict[str, Any] = _known(cls, data)
        values.update(name=need("adw_id", str), path=Path(need("worktree_path", str)), branch=need("branch", str),
                      base_branch=need("base_branch", str), status=need("status", str))
        if values["status"] not in STATUSES:
            raise ValueError(f"{source}: field 'status' has unknown value {values['status']!r}")
        for key in cls._TIMES:
            try:
                values[key] = parse_time(data.get(key))
            except ValueError as exc:
                raise ValueError(f"{source}: field {key!r}: {exc}") from None
        if values["created_at"] is None:
            raise ValueError(f"{source}: field 'created_at' is missing")
        values.setdefault("epic_id", None)
        values.setdefault("task_name", None)
        values.setdefault("agent_id", None)
        values["from_pool"] = bool(data.get("from_pool"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The state document's names: ``adw_id`` and ``worktree_path``, times as ISO strings."""
        out = asdict(self)
        out["adw_id"] = out.pop("name")
        out["worktree_path"] = str(out.pop("path"))
        for key in self._TIMES:
            out[key] = format_time(out[key])
        return out


@dataclass
class MergeResult:
    """What happened to one branch in a merge run."""

    adw_id: str
    branch: str
    outcome: str  # merged, conflict, validation_failed, skipped
    commits: list[str] = field(default_factory=list)
    conflict_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reason: Optional[str] = None
    merged_commit: Optional[str] = None
    exit_code: Optional[int] = None
    output_tail: Optional[str] = None
    cleanup: Optional[dict[str, Any]] = None
    status: Optional[str] = None  # the agent's status once the run recorded its outcome

    @property
    def success(self) -> bool:
        return self.outcome == "merged"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeResult":
        return cls(**_known(cls, data))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("exit_code", "output_tail", "cleanup", "status"):  # present only when they apply
            if out[key] is None:
                del out[key]
        return out


@dataclass
class MergeSummary:
    """A whole merge run: the base before and after, and one MergeResult per requested branch."""

    base: str
    strategy: str
    dry_run: bool
    base_before: Optional[str]
    base_after: Optional[str]
    pushed: bool
    attempts: int
    results: list[MergeResult] = field(default_factory=list)
    mode: str = "sequential"
    validations: int = 0
    errors: list[str] = field(default_factory=list)
    validation_logs: list[dict[str, Any]] = field(default_factory=list)  # issue 21: each run's whole output

    @property
    def merged(self) -> list[MergeResult]:
        return [r for r in self.results if r.success]

    @property
    def failed(self) -> list[MergeResult]:
        return [r for r in self.results if not r.success]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeSummary":
        values = _known(cls, data)
        values["results"] = [MergeResult.from_dict(r) for r in data.get("results", [])]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = [r.to_dict() for r in self.results]
        return out


@dataclass
class WorktreeExecutionResult:
    """One command run in one agent's worktree (`inv exec`, ``execute_in_worktrees``)."""

    adw_id: str
    command: list[str]
    exit_code: Optional[int]
    started_at: datetime
    finished_at: datetime
    seconds: float
    log: str
    timed_out: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorktreeExecutionResult":
        values = _known(cls, data)
        for key in ("started_at", "finished_at"):
            moment = parse_time(data.get(key))
            if moment is None:
                raise ValueError(f"execution result: field {key!r} is missing")
            values[key] = moment
        values["command"] = list(values.get("command") or [])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = format_time(self.started_at)
        out["finished_at"] = format_time(self.finished_at)
        return out


@dataclass
class SyncResult:
    """`inv sync` / ``sync_worktree``: the base's new commits brought into one agent's branch."""

    adw_id: str
    branch: str
    base: str
    base_commit: str
    strategy: str  # merge or rebase
    outcome: str  # up_to_date, merged, rebased, conflict
    head_before: str
    head_after: str
    incoming_commits: int = 0
    conflict_files: list[str] = field(default_factory=list)
    status: Optional[str] = None
    reapplied: list[str] = field(default_factory=list)
    source: Optional[str] = None  # "main" or "origin/main": where base_commit came from
    backup: Optional[str] = None  # with rebase over the agent's own commits: the ref keeping the old tip

    @property
    def success(self) -> bool:
        return self.outcome != "conflict"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyncResult":
        values = _known(cls, data)
        values["source"] = data.get("from")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["from"] = out.pop("source")
        return out


@dataclass
class ConflictPair:
    a: str
    b: str
    branch_a: str
    branch_b: str
    files: list[str] = field(default_factory=list)


@dataclass
class ConflictForecast:
    """`inv conflicts` / ``forecast_conflicts``: which completed branches conflict pairwise, and where."""

    base: str
    base_commit: str
    epic_id: Optional[str] = None
    branches: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[ConflictPair] = field(default_factory=list)
    checked: int = 0
    cached: int = 0
    skipped_disjoint: int = 0
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConflictForecast":
        values = _known(cls, data)
        values["pairs"] = [ConflictPair(**_known(ConflictPair, p)) for p in data.get("pairs", [])]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
