"""Dependency installs: uv for Python projects, bun, npm, pnpm or yarn for JS projects, auto-detected.

Without ADW_INSTALL_DIRS (issue 21), the projects are found in the tracked tree: every uv project
(``pyproject.toml`` with ``uv.lock`` or a ``[tool.uv]`` table) and every ``package.json``, installed
once at a workspace's root, never inside node_modules, a venv or a vendored directory.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import threading
from pathlib import Path, PurePosixPath

from ..core import locks, proc
from ..core.config import GROVE_DIR, Settings
from ..core.errors import GroveError
from ..core.hints import install_tool
from .shape import DONE, Agent, Outcome, Resource

# A JS project's lock file decides its installer; without one, bun (else npm) as before.
JS_LOCKS = (("bun.lock", "bun"), ("bun.lockb", "bun"), ("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"),
            ("package-lock.json", "npm"))
JS_TOOLS = ("bun", "npm", "pnpm", "yarn")
# Directories whose package.json / pyproject.toml are someone else's project, not one to install.
NOT_PROJECTS = {"node_modules", ".venv", "venv", "vendor", "vendored", "third_party", "site-packages",
                "__pypackages__", ".git"}


def find_tool(name: str) -> str | None:
    """PATH first, then Grove's own .venv/bin and its local tools directory."""
    candidates: list[str | Path | None] = [shutil.which(name)]
    if GROVE_DIR:
        candidates += [GROVE_DIR / ".venv" / "bin" / name, GROVE_DIR / ".tools" / "node_modules" / ".bin" / name]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    return None


def require_tool(name: str, where: Path) -> str:
    tool = find_tool(name)
    if tool is None:
        raise GroveError(f"{name} is needed for {where} but was not found", hint=install_tool(name))
    return tool


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def is_uv_project(directory: Path) -> bool:
    return (directory / "pyproject.toml").is_file() and (
        (directory / "uv.lock").is_file() or "[tool.uv" in _read(directory / "pyproject.toml"))


def js_tool(directory: Path) -> str:
    """The installer a JS project's lock file names; no lock file: bun when found, else npm."""
    for lock, tool in JS_LOCKS:
        if (directory / lock).is_file():
            return tool
    return "bun" if find_tool("bun") or not find_tool("npm") else "npm"


def plan(directory: Path) -> list[str]:
    """What to run in ``directory``: [] when it holds no project Grove knows."""
    commands = []
    if is_uv_project(directory):
        commands.append("uv")
    if (directory / "package.json").is_file():
        commands.append(js_tool(directory))
    return commands


def install_dirs(settings: Settings, root: Path) -> tuple[str, ...]:
    """The directories to install in ``root`` (a worktree, or the main checkout): ADW_INSTALL_DIRS
    when set, else the projects detected in the tracked tree."""
    if not settings.detect_installs:
        return settings.install_dirs
    listed = _manifests_of_main(settings) if Path(root) == settings.repo else None
    return tuple(p for p, _ in detect(root, skip=(settings.trees_dir, settings.agents_dir), listed=listed))


MANIFESTS = ("*pyproject.toml", "*package.json")


def _manifests(root: Path) -> list[str]:
    out = proc.run(["git", "-C", root, "ls-files", "-z", "--", *MANIFESTS], check=False)
    return out.stdout.split("\0") if out.returncode == 0 else []


_UNSAVED: dict[Path, str] = {}  # cache file -> what to write there once validation has passed


def _manifests_of_main(settings: Settings) -> list[str]:
    """The main checkout's tracked manifests. Every setup asks (validation names a missing tool
    before anything is made, issue 21), so the answer is kept in agents/.grove/manifests with the
    index file's identity: git replaces the index (a new inode) whenever it changes it, and what
    ls-files lists is read from the index alone (issue 24: one git process less per setup). A new
    answer is written by ``remember_projects``, after validation: bad input changes nothing."""
    index = settings.repo / ".git" / "index"
    try:
        st = index.stat()
    except OSError:
        return _manifests(settings.repo)
    key = f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {' '.join(MANIFESTS)}"
    cache = settings.grove_path / "manifests"
    try:
        first, _, rest = cache.read_text(encoding="utf-8").partition("\n")
        if first == key:
            return rest.split("\0")
    except (OSError, UnicodeDecodeError):
        pass
    listed = _manifests(settings.repo)
    _UNSAVED[cache] = key + "\n" + "\0".join(listed)
    return listed


def remember_projects(settings: Settings) -> None:
    """Keep the answer validation had to ask git for (``_manifests_of_main``) for the next setup."""
    cache = settings.grove_path / "manifests"
    text = _UNSAVED.pop(cache, None)
    if text is not None:
        try:
            locks.atomic_write_text(cache, text, durable=False)
        except OSError:
            pass


def detect(root: Path, skip: tuple[str, ...] = (), listed: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """Every project in ``root``'s tracked tree as (relative dir, tools), workspace members left to
    their workspace root; "." is the root itself. ``listed``: the tracked manifests, when known."""
    dirs = set()
    for name in (_manifests(root) if listed is None else listed):
        path = PurePosixPath(name)
        if path.name not in ("pyproject.toml", "package.json") or NOT_PROJECTS & set(path.parts[:-1]):
            continue
        if any(path.parts[0] == PurePosixPath(s).parts[0] for s in skip if s):
            continue
        dirs.add(str(path.parent))
    found = []
    for rel in sorted(dirs, key=lambda d: (d.count("/"), d)):
        tools = plan(root / rel)
        if "uv" in tools and _member(rel, dirs, root, _uv_workspace):
            tools.remove("uv")
        if any(t in JS_TOOLS for t in tools) and _member(rel, dirs, root, _js_workspace):
            tools = [t for t in tools if t not in JS_TOOLS]
        if tools:
            found.append((rel, tools))
    return found


def _member(rel: str, dirs: set[str], root: Path, globs_of) -> bool:
    """Whether ``rel`` is a member of a workspace rooted in one of its ancestors among ``dirs``."""
    here = PurePosixPath(rel)
    for parent in here.parents:
        ancestor = str(parent)
        if ancestor == rel or ancestor not in dirs:
            continue
        members, excluded = globs_of(root / ancestor)
        inside = str(here.relative_to(parent))
        if any(fnmatch.fnmatch(inside, g.rstrip("/")) for g in members) and \
                not any(fnmatch.fnmatch(inside, g.rstrip("/")) for g in excluded):
            return True
    return False


def _toml_list(text: str, table: str, key: str) -> list[str]:
    """``key = [..]`` inside ``[table]``: tomllib where Python has it (3.11+), else a plain reading."""
    try:
        import tomllib

        data = tomllib.loads(text)
        for part in table.split("."):
            data = data.get(part, {}) if isinstance(data, dict) else {}
        value = data.get(key, []) if isinstance(data, dict) else []
        return [v for v in value if isinstance(v, str)]
    except ImportError:
        section = text.partition(f"[{table}]")[2].split("\n[", 1)[0]
        match = re.search(rf"^{key}\s*=\s*\[(.*?)\]", section, re.S | re.M)
        return re.findall(r"[\"']([^\"']+)[\"']", match.group(1)) if match else []
    except ValueError:
        return []


def _uv_workspace(directory: Path) -> tuple[list[str], list[str]]:
    text = _read(directory / "pyproject.toml")
    if "[tool.uv.workspace]" not in text:
        return [], []
    return (_toml_list(text, "tool.uv.workspace", "members"), _toml_list(text, "tool.uv.workspace", "exclude"))


def _js_workspace(directory: Path) -> tuple[list[str], list[str]]:
    """npm/yarn/bun ``workspaces`` (a list, or {"packages": [...]}), or pnpm-workspace.yaml's packages."""
    try:
        data = json.loads(_read(directory / "package.json") or "{}")
    except ValueError:
        data = {}
    spaces = data.get("workspaces", []) if isinstance(data, dict) else []
    if isinstance(spaces, dict):
        spaces = spaces.get("packages", [])
    globs = [g for g in spaces if isinstance(g, str)] if isinstance(spaces, list) else []
    pnpm = _read(directory / "pnpm-workspace.yaml")
    globs += re.findall(r"^\s*-\s*[\"']?([^\"'\n#]+?)[\"']?\s*$", pnpm, re.M)
    return [g for g in globs if not g.startswith("!")], [g[1:] for g in globs if g.startswith("!")]


def needed_tools(settings: Settings, root: Path) -> dict[str, list[str]]:
    """Each tool the projects to install need, with the directories that need it."""
    needs: dict[str, list[str]] = {}
    for rel in install_dirs(settings, root):
        for tool in plan(root / rel):
            needs.setdefault(tool, []).append(rel)
    return needs


def missing_tools(settings: Settings, root: Path) -> list[str]:
    """One line per tool the detected projects need that this machine lacks (issue 21: reported at
    validation, before anything is created)."""
    return [f"{tool} (for {', '.join(dirs)}): {install_tool(tool)}"
            for tool, dirs in sorted(needed_tools(settings, root).items()) if find_tool(tool) is None]


# How each JS tool installs: from the lock file when there is one, never rewriting it.
JS_INSTALL = {
    "bun": lambda d: ["install"],
    "npm": lambda d: ["ci", "--no-audit", "--no-fund"] if (d / "package-lock.json").is_file()
    else ["install", "--no-audit", "--no-fund"],
    "pnpm": lambda d: ["install", "--frozen-lockfile"],
    "yarn": lambda d: ["install", "--frozen-lockfile"],
}


def install_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # Grove's own venv is not the project's
    # Hardlink from uv's cache so each extra worktree costs almost no disk (issue 6).
    env.setdefault("UV_LINK_MODE", "hardlink")
    return env


# What uv reads to pick a project's interpreter, in the project's directory and each parent.
DISCOVERY_FILES = (".python-version", ".python-versions", "pyproject.toml", "uv.toml", "uv.lock")


class SharedInterpreter:
    """One interpreter discovery for many worktrees of the same commit set up in one call.

    uv discovers the interpreter at every `uv sync`; behind pyenv's shims that is most of a warm
    sync (~0.1 s of CPU of 0.13 s, measured). The first sync of a project runs as usual; every other
    one whose discovery inputs are byte-identical and which has no .venv yet is given
    ``--python`` = the interpreter the first one chose (its ``.venv/bin/python``): the same venv,
    without asking again (issue 12). Threads of one setup_many share one instance.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[tuple, tuple[threading.Event, list[str | None]]] = {}

    def sync(self, directory: Path, root: Path, run_sync) -> None:
        """Run ``run_sync(python)`` for ``directory`` (a project inside the worktree ``root``)."""
        key = discovery_key(directory, root) if not (directory / ".venv").exists() else None
        if key is None:
            run_sync(None)
            return
        with self._lock:
            leader = key not in self._found
            if leader:
                self._found[key] = (threading.Event(), [None])
            done, found = self._found[key]
        if not leader:
            done.wait()
            run_sync(found[0])
            return
        try:
            run_sync(None)
            found[0] = _venv_interpreter(directory / ".venv")
        finally:
            done.set()


def discovery_key(directory: Path, root: Path) -> tuple | None:
    """The bytes of every file uv's interpreter discovery reads, from ``directory`` up to ``root``;
    None when ``directory`` is not inside ``root``."""
    try:
        rel = directory.relative_to(root)
    except ValueError:
        return None
    parts: list = [str(rel)]
    for level in [directory, *directory.parents]:
        for name in DISCOVERY_FILES:
            try:
                parts.append((str(level.relative_to(root)), name, (level / name).read_bytes()))
            except FileNotFoundError:
                pass
        if level == root:
            return tuple(parts)
    return None


def _venv_interpreter(venv: Path) -> str | None:
    """The base interpreter a venv was made with: what its bin/python links to (uv links it)."""
    try:
        target = os.readlink(venv / "bin" / "python")
    except OSError:
        return None
    return target if os.path.isabs(target) and os.access(target, os.X_OK) else None


def install(directory: Path, timeout: float, shared: SharedInterpreter | None = None,
            root: Path | None = None) -> list[str]:
    """Install what ``directory`` declares; returns the tools run.

    ``shared`` (with ``root``, the worktree): one interpreter discovery for the uv projects of many
    worktrees set up together.
    """
    def run(argv: list[str], kind: str) -> None:
        proc.run(argv, cwd=directory, env=install_env(), timeout=timeout, what=f"{kind} install in {directory}")

    ran = []
    for kind in plan(directory):
        if kind == "uv":
            uv = require_tool("uv", directory)

            # A uv workspace's root installs every member into its one venv (issue 21).
            members = ["--all-packages"] if _uv_workspace(directory)[0] else []

            def sync(python: str | None = None) -> None:
                run([uv, "sync", "--all-extras", *members, *(["--python", python] if python else [])], "uv")

            if shared is not None and root is not None:
                shared.sync(directory, root, sync)
            else:
                sync()
        else:
            run([require_tool(kind, directory), *JS_INSTALL[kind](directory)], kind)
        ran.append(kind)
    return ran


# -- the resource: every install dir of a worktree, the way the setup chain runs it ----------------

def install_worktree(settings: Settings, path: Path, enabled: bool = True, only: tuple[str, ...] | None = None,
                     shared: SharedInterpreter | None = None) -> tuple[str, str]:
    """Install every install dir; ``only`` limits it to those dirs (a pooled worktree's changed ones).
    ``shared``: the interpreter discovery shared by the agents of one setup_many (above).

    The dirs are independent projects (the uv server, the bun client), so they install at the same
    time (issue 12); the db step runs after all of them. The first failure is raised once all ended.
    """
    if not enabled:
        return "skipped", "--no-install"
    # A pooled worktree with nothing to install again is told so before any detection (a git process).
    names = [] if only == () else [n for n in install_dirs(settings, path) if only is None or n in only]
    if only is not None and not names:
        return "kept", "installed by the pool; no lock file changed since"
    if not names:
        return "done", "no project detected (ADW_INSTALL_DIRS chooses)" if settings.detect_installs else ""
    results = proc.in_parallel([lambda d=path / n: _install_dir(d, settings.install_timeout, shared, path) for n in names])
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    detail = "; ".join(f"{n}: {r}" for n, r in zip(names, results))
    return "done", f"detected {detail}" if settings.detect_installs else detail


def _install_dir(directory: Path, timeout: float, shared: SharedInterpreter | None = None,
                 root: Path | None = None) -> str:
    if not directory.is_dir():
        return "missing, skipped"
    ran = install(directory, timeout, shared, root)
    return "+".join(ran) if ran else "no project"


def prepare(agent: Agent) -> Outcome:
    """Setup's install step. A re-run keeps an install an earlier run did in this same worktree
    (`inv deps.install` runs it again); a pooled worktree installs only the dirs whose lock files
    changed since the pool filled it."""
    if agent.earlier in DONE:
        return "kept", "installed by an earlier run", []
    outcome, detail = install_worktree(agent.settings, agent.path, only=agent.pooled.get("install_only"),
                                       shared=agent.shared)
    return outcome, detail, []


RESOURCE = Resource("install", prepare, switch="install", long=True)
