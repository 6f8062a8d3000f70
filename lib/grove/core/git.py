"""Git, always as argument lists with ``-C`` and porcelain/-z output where it parses."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from . import proc
from .errors import GroveError, bad_input


MIN_VERSION = (2, 38)  # `git merge-tree --write-tree` (merge queue, dry runs, conflict forecasts)
_version_ok = False


def require_version() -> None:
    """Refuse to run on a git older than MIN_VERSION, once per process, with a clear message (exit 1).

    A git binary already seen to be new enough (same path, size and mtime) is not asked again:
    the answer is kept in the user's cache dir, one `git --version` less per start-up (issue 12).
    """
    global _version_ok
    if _version_ok:
        return
    seen = _version_stamp()
    if seen is not None and seen[0].is_file() and seen[0].read_text() == seen[1]:
        _version_ok = True
        return
    text = proc.run(["git", "--version"], what="git --version").stdout.strip()
    found = tuple(int(n) for n in re.findall(r"\d+", text)[:2])
    if found < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise GroveError(f"Grove needs git {wanted} or newer; this is {text}",
                         hint=f"install git >= {wanted} (merge-tree --write-tree) and put it first on PATH")
    _version_ok = True
    if seen is not None:
        try:
            seen[0].parent.mkdir(parents=True, exist_ok=True)
            seen[0].write_text(seen[1])
        except OSError:
            pass  # a read-only home only costs the next start-up one `git --version`


def _version_stamp() -> tuple[Path, str] | None:
    """(cache file, the key it must hold): the git on PATH by path, size and mtime."""
    import shutil

    found = shutil.which("git")
    if not found:
        return None
    try:
        st = os.stat(found)
    except OSError:
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grove" / "git-version-ok"
    return cache, f"{os.path.realpath(found)} {st.st_size} {st.st_mtime_ns} >= {MIN_VERSION}\n"


def git(repo: Path, *args: str | os.PathLike, check: bool = True, timeout: float = 120.0) -> str:
    """Run ``git -C repo args`` and return stdout (stripped of its final newline)."""
    out = proc.run(["git", "-C", repo, *args], check=check, timeout=timeout, what=f"git {args[0]}")
    return out.stdout.rstrip("\n")


def ok(repo: Path, *args: str) -> bool:
    """True when the git command exits 0 (for yes/no questions like ``merge-base --is-ancestor``)."""
    return proc.run(["git", "-C", repo, *args], check=False).returncode == 0


def rev(repo: Path, name: str) -> str | None:
    """The commit ``name`` points at, or None."""
    out = proc.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"],
                   check=False)
    return out.stdout.strip() or None


def base_ref(repo: Path, remote: str, base: str) -> str | None:
    """The ref of the base branch ``base``: the local branch, else the remote-tracking one; None
    when neither exists."""
    for ref in (f"refs/heads/{base}", f"refs/remotes/{remote}/{base}"):
        if rev(repo, ref):
            return ref
    return None


def branch_exists(repo: Path, branch: str) -> bool:
    return rev(repo, f"refs/heads/{branch}") is not None


def has_remote(repo: Path, remote: str) -> bool:
    # A `[remote "<name>"]` section in the repo's own config answers yes without a subprocess;
    # anything else (includes, global config) is git's to answer.
    if _config_names_remote(repo, remote):
        return True
    return remote in git(repo, "remote").split()


_REMOTE_SECTION = re.compile(r'^\s*\[\s*remote\s+"((?:[^"\\]|\\.)*)"\s*\]', re.M)
_REMOTE_SECTION_ANY_CASE = re.compile(_REMOTE_SECTION.pattern, re.I)  # section names are case-insensitive


def _config_names_remote(repo: Path, remote: str) -> bool:
    try:
        text = (Path(repo) / ".git" / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(re.sub(r"\\(.)", r"\1", m) == remote for m in _REMOTE_SECTION.findall(text))


def local_remote_ref(repo: Path, remote: str, ref: str) -> str | None:
    """The object ``ref`` names in ``remote`` when the remote is a repository on this machine whose
    files answer plainly, read from those files as git would read them; None: only a fetch knows.

    A fetch that brings nothing still runs three processes (fetch, upload-pack, a connectivity
    rev-list), ~8 ms of a pooled setup (issue 24 §2); a caller that already has this object needs
    none of them. Only one plain path or file:// URL counts, in configs with nothing that could make
    git fetch from elsewhere, see other refs or refuse (_GIT_MUST_READ), in an environment without
    such overrides either; everything else is git's to answer.
    """
    path = _local_remote_path(Path(repo), remote)
    if path is None:
        return None
    if (path / ".git").is_dir():
        path = path / ".git"
    elif not ((path / "HEAD").is_file() and (path / "objects").is_dir()):
        return None  # not a repository git would find at exactly this path
    if (path / "commondir").exists() or _configs_git_must_read([path / "config"]) is None:
        return None  # a linked worktree's admin dir (its refs live elsewhere), or refs it may hide
    return (_refs_from_files(path, [ref]) or {}).get(ref)


# Words in a config file that can make a fetch read another repository (insteadOf, an include this
# reader does not follow), other refs (a namespace, hidden refs, another upload-pack) or refuse
# (protocol.*.allow): a config holding any of them is left to git.
_GIT_MUST_READ = ("insteadof", "[include", "uploadpack", "namespace", "hiderefs", "allow")
_ENV_GIT_MUST_READ = ("GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_NAMESPACE", "GIT_ALLOW_PROTOCOL",
                      "GIT_PROTOCOL_FROM_USER")
# The keys of a [remote] section that change nothing about which refs a fetch sees, or where from.
_REMOTE_KEYS = {"url", "fetch", "pushurl", "push", "tagopt", "prune", "prunetags", "mirror", "skipdefaultupdate",
                "skipfetchall"}


def _local_remote_path(repo: Path, remote: str) -> Path | None:
    if any(os.environ.get(name) for name in _ENV_GIT_MUST_READ) or not (repo / ".git").is_dir():
        return None  # overrides, or a .git file (--separate-git-dir): its config is elsewhere
    texts = _configs_git_must_read([*_system_and_user_configs(), repo / ".git" / "config",
                                    repo / ".git" / "config.worktree"])
    urls = [] if texts is None else [_remote_urls(text, remote) for text in texts]
    if any(found is None for found in urls):
        return None
    every = [url for found in urls for url in found or []]  # git's order: system, global, local
    if len(every) != 1 or not every[0] or re.search(r'[\s"\\;#%]', every[0]):
        return None  # several (the first wins), or quoted, escaped, percent-encoded: git's to read
    url = every[0]
    if url.startswith("file://"):
        url = url[len("file://"):]
        if not url.startswith("/"):
            return None  # file://host/path
    elif ":" in url:
        return None  # a network URL, or host:path (scp-like)
    return repo / url  # relative: to the directory git runs in (-C repo)


def _configs_git_must_read(paths: list[Path]) -> list[str] | None:
    """The texts of the config files among ``paths`` that exist; None when one cannot be read or
    holds one of _GIT_MUST_READ."""
    texts = []
    for config in paths:
        try:
            text = config.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError):
            return None
        if any(word in text.lower() for word in _GIT_MUST_READ):
            return None
        texts.append(text)
    return texts


def _system_and_user_configs() -> list[Path]:
    """The config files git reads besides the repository's own, in its order (git-config(1), FILES).
    The system file's place is compiled into git: every likely one is read (/etc, and the prefix of
    the git on PATH as found and as resolved, e.g. Homebrew's)."""
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    found = []
    if os.environ.get("GIT_CONFIG_NOSYSTEM", "").strip().lower() not in ("1", "true", "yes", "on"):
        git_bin = shutil.which("git")
        prefixes = {Path(git_bin).parent.parent, Path(os.path.realpath(git_bin)).parent.parent} if git_bin else set()
        found += [Path(os.environ["GIT_CONFIG_SYSTEM"])] if os.environ.get("GIT_CONFIG_SYSTEM") \
            else [Path("/etc/gitconfig"), *(prefix / "etc" / "gitconfig" for prefix in sorted(prefixes))]
    found += [Path(os.environ["GIT_CONFIG_GLOBAL"])] if os.environ.get("GIT_CONFIG_GLOBAL") \
        else [xdg / "git" / "config", home / ".gitconfig"]
    return [f for f in found if str(f) != os.devnull]


def _remote_urls(config: str, remote: str) -> list[str] | None:
    """The ``url`` values of the ``[remote "<remote>"]`` sections of one config file's text; None
    when the section holds a key outside _REMOTE_KEYS, or is spelt the old way (`[remote.origin]`)."""
    urls, inside = [], False
    for line in config.splitlines():
        header = re.match(r"\s*\[([^\]]*)\]", line)
        if header:
            found = _REMOTE_SECTION_ANY_CASE.match(line)
            if not found and header.group(1).strip().lower().startswith("remote"):
                return None
            inside = found is not None and re.sub(r"\\(.)", r"\1", found.group(1)) == remote
            line = line[header.end():]
        key, eq, value = line.partition("=")
        key = key.strip().lower()
        if not inside or not key or key[0] in "#;":
            continue
        if key not in _REMOTE_KEYS:
            return None
        if key == "url":
            urls.append(value.strip() if eq else "")
    return urls


def refs(repo: Path, names: list[str]) -> dict[str, str]:
    """Which of the full ref ``names`` exist, and their objects: read from the ref files where they
    answer plainly (issue 24: every setup asks), else one `for-each-ref` for all of them (issue 12:
    validation asked git once per name)."""
    found = _refs_from_files(Path(repo) / ".git", names)
    if found is not None:
        return found
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "--", *names)
    wanted = set(names)
    found = {}
    for line in out.splitlines():
        name, _, sha = line.rpartition(" ")
        if name in wanted:  # for-each-ref also matches refs below a name (refs/heads/a/b for a)
            found[name] = sha
    return found


_OBJECT_ID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def _refs_from_files(common: Path, names: list[str]) -> dict[str, str] | None:
    """git's files backend, read as git reads it (gitrepository-layout(5)): a loose ref file holds
    the object id, else packed-refs has a "<id> <name>" line; a ref is in one place or the other,
    and git replaces each file whole (a lock file renamed over it). None when the files do not
    answer plainly, for git to answer: no .git directory, a reftable, a symbolic ref, anything
    unexpected in a file."""
    if not common.is_dir() or (common / "reftable").exists():
        return None
    found: dict[str, str] = {}
    unpacked = []
    for name in names:
        try:
            text = (common / name).read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            unpacked.append(name)  # a directory (refs/heads/a of refs/heads/a/b) is no ref of that name
            continue
        except (OSError, UnicodeDecodeError):
            return None
        if not _OBJECT_ID.fullmatch(text):
            return None  # a symbolic ref, or a file being written by hand
        found[name] = text
    if unpacked:
        try:
            packed = (common / "packed-refs").read_text(encoding="utf-8")
        except FileNotFoundError:
            packed = ""
        except (OSError, UnicodeDecodeError):
            return None
        wanted = set(unpacked)
        for line in packed.splitlines():
            if line[:1] in ("#", "^") or not line:
                continue
            sha, _, name = line.partition(" ")
            if name in wanted:
                if not _OBJECT_ID.fullmatch(sha):
                    return None
                found[name] = sha
    return found


def linked_worktree_paths(repo: Path) -> set[str] | None:
    """The real paths of every linked worktree git has an entry for, read from the admin dirs'
    gitdir files (no subprocess: `inv list` over 100 agents, issue 12); None when unreadable."""
    admin = Path(repo) / ".git" / "worktrees"
    if not (Path(repo) / ".git").is_dir():
        return None
    paths: set[str] = set()
    try:
        entries = list(admin.iterdir())
    except FileNotFoundError:
        return paths
    for entry in entries:
        try:
            paths.add(os.path.dirname(_gitdir_target(entry)))
        except OSError:
            return None  # one being written right now: let git answer
    return paths


def _gitdir_target(admin: Path) -> str:
    """The real path of the worktree's .git that an admin dir's gitdir file names; relative paths
    (git 2.48's worktree.useRelativePaths) are relative to the admin dir."""
    text = (admin / "gitdir").read_text().strip()
    return os.path.realpath(text if os.path.isabs(text) else os.path.join(admin, text))


def registered(repo: Path, path: Path) -> bool:
    """Whether git has a worktree entry for exactly ``path``, read from the admin dirs' gitdir files
    without running git; True when it cannot tell (then ask `worktree_for`)."""
    paths = linked_worktree_paths(repo)
    return paths is None or os.path.realpath(path) in paths


def check_branch_name(repo: Path, branch: str) -> None:
    """Refuse a name git would refuse, or one that reads as an option (exit 2, before any change)."""
    if not branch or branch.startswith("-") or any(c.isspace() or ord(c) < 32 for c in branch):
        raise bad_input(f"branch name {branch!r} is not allowed", "use letters, digits, '/', '-', '_' and '.'")
    if not branch_name_ok(branch):
        raise bad_input(f"git refuses the branch name {branch!r} (git check-ref-format --branch)")


_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_name_ok(branch: str) -> bool:
    """git check-ref-format --branch, in Python (one subprocess less per name; the rules are
    git-check-ref-format(1)'s, and tests/test_pool.py compares this with git on many names)."""
    if branch == "HEAD" or branch.startswith("-"):
        return False
    if (branch.startswith("/") or branch.endswith("/") or branch.endswith(".") or "//" in branch
            or ".." in branch or "@{" in branch or _BAD_REF_CHARS.search(branch)):
        return False
    return not any(part.startswith(".") or part.endswith(".lock") for part in branch.split("/"))


def worktrees(repo: Path) -> list[dict]:
    """Every worktree git knows, from one ``git worktree list --porcelain -z``.

    Paths are matched exactly, never by substring (DESIGN.md pitfalls).
    """
    raw = _worktree_list(repo)
    entries: list[dict] = []
    current: dict = {}
    for field in raw.split("\0"):
        if not field:
            if current:
                entries.append(current)
            current = {}
            continue
        key, _, value = field.partition(" ")
        if key == "worktree":
            current = {"path": value, "head": None, "branch": None, "detached": False,
                       "bare": False, "locked": None, "prunable": None}
        elif key == "HEAD":
            current["head"] = value
        elif key == "branch":
            current["branch"] = value.removeprefix("refs/heads/")
        elif key in ("detached", "bare"):
            current[key] = True
        elif key in ("locked", "prunable"):
            current[key] = value or True
    if current:
        entries.append(current)
    return entries


def _worktree_list(repo: Path, attempts: int = 20) -> str:
    """``git worktree list`` reads every entry's admin dir; one that a concurrent ``worktree add``
    is still writing fails with "failed to read .git/worktrees/<id>/commondir" (seen in `make bench`
    with 100 agents). Writers hold the repo lock, readers do not: a short retry is the cure."""
    import time

    for _ in range(attempts - 1):
        out = proc.run(["git", "-C", repo, "worktree", "list", "--porcelain", "-z"], check=False)
        if out.returncode == 0 or "worktrees/" not in out.stderr:
            break
        time.sleep(0.02)
    else:
        out = proc.run(["git", "-C", repo, "worktree", "list", "--porcelain", "-z"], check=False)
    if out.returncode != 0:
        raise GroveError(f"git worktree list failed (exit {out.returncode}): {proc.tail(out.stderr)}")
    return out.stdout


def worktree_for(repo: Path, path: Path) -> dict | None:
    """The entry git has for exactly ``path``, or None."""
    target = os.path.realpath(path)
    return next((w for w in worktrees(repo) if os.path.realpath(w["path"]) == target), None)


def admin_dir(repo: Path, path: Path) -> Path | None:
    """The .git/worktrees/<name> directory that belongs to the worktree at exactly ``path``."""
    want = os.path.realpath(Path(path) / ".git")
    for admin in (common_dir(repo) / "worktrees").glob("*"):
        try:
            if _gitdir_target(admin) == want:
                return admin
        except OSError:
            continue
    return None


def own_admin_dir(path: Path) -> Path:
    """The admin dir of the worktree at ``path``, from its `.git` file (`gitdir: <dir>`), without a
    subprocess; the worktree's directory must exist (``admin_dir`` finds it from the repo's side)."""
    text = (Path(path) / ".git").read_text(encoding="utf-8")
    return Path(path, text.partition("gitdir:")[2].strip())


def head_of(path: Path) -> str | None:
    """What HEAD of the linked worktree at ``path`` holds, read from its admin dir without a
    subprocess: ``ref: refs/heads/<b>`` on a branch, else the commit id it is detached at. None
    when the files do not answer plainly (then ask git): no .git file, an admin dir that does not
    name this worktree back, an empty or unexpected HEAD."""
    try:
        admin = own_admin_dir(path)
        if _gitdir_target(admin) != os.path.realpath(Path(path) / ".git") or (admin / "reftable").exists():
            return None  # not this worktree's, or refs in a reftable: the HEAD file is a placeholder there
        text = (admin / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "ref: refs/heads/.invalid" or not text.strip("0"):
        return None  # reftable's placeholder, or the zero id `worktree add` writes before its checkout
    if text.startswith("ref: ") or re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", text):
        return text
    return None


def point_head(path: Path, ref: str) -> None:
    """`git symbolic-ref HEAD <ref>` in the linked worktree at ``path``, written the way git does it
    (an exclusive HEAD.lock renamed over HEAD: a concurrent git sees the lock and waits or fails,
    and no reader sees half a file). Unlike git it adds no line to the HEAD reflog: the pool's take
    points HEAD at a branch made at the commit HEAD already holds, so that line would record no
    commit. git itself runs where head_of cannot read the worktree's HEAD plainly (a reftable, an
    admin dir of someone else's), or when the lock is held (issue 24: one process less per take)."""
    if head_of(path) is not None:
        head = own_admin_dir(path) / "HEAD"
        lock = head.with_name("HEAD.lock")
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            fd = -1
        if fd >= 0:
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(f"ref: {ref}\n")
                os.replace(lock, head)
                return
            except BaseException:
                lock.unlink(missing_ok=True)
                raise
    git(path, "symbolic-ref", "HEAD", ref)


def prune_entry(repo: Path, path: Path) -> bool:
    """Forget the stale worktree entry for exactly ``path`` (its directory is gone), and no other.

    ``git worktree prune`` would drop every stale entry, including ones another tool means to keep.
    """
    admin = admin_dir(repo, path)
    if admin is None or Path(path).exists() or (admin / "locked").exists():
        return False
    shutil.rmtree(admin)
    return True


def dirty_files(path: Path) -> list[str]:
    """Uncommitted changes and untracked (not ignored) files in a checkout."""
    raw = git(path, "status", "--porcelain", "-z", "--untracked-files=all")
    return [entry[3:] for entry in raw.split("\0") if len(entry) > 3 and entry[2] == " "]


def commits_between(repo: Path, base: str, branch: str) -> list[str]:
    """Commits on ``branch`` not on ``base``, oldest first."""
    out = git(repo, "rev-list", "--reverse", f"{base}..{branch}", "--")
    return out.split() if out else []


def is_merged(repo: Path, branch: str, base: str) -> bool:
    """True when ``branch``'s changes are already in ``base``: by ancestry, patch-id or tree.

    Ancestry misses rebase- and squash-merges. ``git cherry`` marks commits whose patch is
    already upstream with '-' (rebase-merged); a merge that would leave base's tree unchanged
    means the whole change is there (squash-merged), as worktrunk checks it.
    """
    if ok(repo, "merge-base", "--is-ancestor", branch, base):
        return True
    cherry = git(repo, "cherry", base, branch).split("\n")
    if cherry and all(line.startswith("-") for line in cherry if line):
        return True
    merged = proc.run(["git", "-C", repo, "merge-tree", "--write-tree", base, branch], check=False)
    if merged.returncode != 0:
        return False
    return merged.stdout.split("\n", 1)[0].strip() == git(repo, "rev-parse", f"{base}^{{tree}}")


def common_dir(repo: Path) -> Path:
    return Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))


def ignored_in_the_way(checkout: Path, old: str, new: str) -> list[str]:
    """Ignored files in ``checkout`` that going from ``old`` to ``new`` would overwrite: git refuses
    to overwrite untracked files, but treats ignored ones (a local.db, a .env) as expendable. The
    merge queue asks it of the user's checkout, sync of an agent's worktree (issue 20, item 2)."""
    changed = [p for p in git(checkout, "diff", "--name-only", "-z", old, new).split("\0") if p]
    if not changed:
        return []
    out = git(checkout, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--", *changed)
    return [p for p in out.split("\0") if p]
