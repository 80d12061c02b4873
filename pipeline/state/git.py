"""The git CLI, for the versioned-state stage and the guard's view of the index."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import PipelineError


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    # --no-optional-locks: read-only queries must not rewrite .git/index behind the user's back.
    argv = ["git", "--no-optional-locks", *args]
    try:
        result = subprocess.run(argv, cwd=root, capture_output=True, check=False)
    except FileNotFoundError:
        raise PipelineError("git is not installed") from None
    if check and result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise PipelineError(f"git {args[0]} failed: {detail[-1] if detail else result.returncode}")
    return result


def is_repository(root: Path) -> bool:
    """Whether ``root`` is the top of a git work tree."""
    result = _git(root, "rev-parse", "--show-toplevel", check=False)
    if result.returncode != 0:
        return False
    return Path(result.stdout.decode().strip()).resolve() == root.resolve()


def index_files(root: Path) -> list[str]:
    """Every path in the index: tracked files and files staged for the next commit."""
    out = _git(root, "ls-files", "-z", "--cached").stdout.decode()
    return [path for path in out.split("\0") if path]


def changed_paths(root: Path, pathspec: str) -> list[str]:
    """Paths under ``pathspec`` that differ from the index (modified, new or deleted)."""
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", pathspec).stdout.decode()
    paths = []
    for entry in out.split("\0"):
        if len(entry) > 3 and entry[1] != " ":  # column 2: work tree differs from the index
            paths.append(entry[3:])
    return paths


def stage(root: Path, paths: Sequence[str]) -> None:
    """`git add -A` of exactly ``paths`` (a deletion is staged as a deletion)."""
    if paths:
        _git(root, "add", "-A", "--", *paths)


def ignored(root: Path, paths: Sequence[str]) -> set[str]:
    """Which of ``paths`` `.gitignore` covers."""
    if not paths:
        return set()
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"], cwd=root,
                            input="\0".join(paths).encode(), capture_output=True, check=False)
    return {path for path in result.stdout.decode().split("\0") if path}


def staged_blob(root: Path, path: str) -> bytes | None:
    """The staged content of ``path`` (what the next commit holds), or None if not in the index."""
    result = _git(root, "show", f":{path}", check=False)
    return result.stdout if result.returncode == 0 else None


def index_entries(root: Path) -> list[tuple[str, str, int]]:
    """`(path, blob sha, stage)` of every index entry; stage > 0 marks an unresolved merge conflict."""
    out = _git(root, "ls-files", "-z", "--stage").stdout.decode(errors="surrogateescape")
    entries = []
    for record in out.split("\0"):
        if record:
            meta, _, path = record.partition("\t")
            _mode, sha, stage = meta.split(" ")
            entries.append((path, sha, int(stage)))
    return entries


def read_blobs(root: Path, shas: Sequence[str]) -> dict[str, bytes]:
    """The content of many blobs in one `git cat-file --batch` process."""
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    result = subprocess.run(["git", "--no-optional-locks", "cat-file", "--batch"], cwd=root,
                            input="".join(f"{sha}\n" for sha in wanted).encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise PipelineError(f"git cat-file failed: {result.stderr.decode(errors='replace').strip()[:200]}")
    data, blobs, offset = result.stdout, {}, 0
    for sha in wanted:
        end = data.index(b"\n", offset)
        header = data[offset:end].split(b" ")
        offset = end + 1
        if len(header) == 3:  # "<sha> <type> <size>"; a missing object is "<sha> missing"
            size = int(header[2])
            blobs[sha] = data[offset:offset + size]
            offset += size + 1
    return blobs


def committed_blob(root: Path, path: str, rev: str = "HEAD") -> bytes | None:
    """The content of ``path`` at ``rev``, or None when it is not there (or there is no commit yet)."""
    result = _git(root, "show", f"{rev}:{path}", check=False)
    return result.stdout if result.returncode == 0 else None


def toplevel(cwd: Path) -> Path | None:
    """The top of the git work tree containing ``cwd``, or None outside one."""
    result = _git(cwd, "rev-parse", "--show-toplevel", check=False)
    return Path(result.stdout.decode().strip()) if result.returncode == 0 else None


def git_path(root: Path, name: str) -> Path:
    """Where git keeps ``name`` (e.g. hooks/pre-commit), honouring core.hooksPath and worktrees."""
    out = _git(root, "rev-parse", "--git-path", name).stdout.decode().strip()
    return (root / out) if not Path(out).is_absolute() else Path(out)


def last_revision_holding(root: Path, path: str) -> str | None:
    """A revision whose tree holds ``path`` (HEAD first, then the newest commit of any branch), or None.

    None also when ``root`` is not a git repository or git is missing: there is no history to ask.
    """
    try:
        if not is_repository(root):
            return None
    except PipelineError:
        return None
    if _git(root, "cat-file", "-e", f"HEAD:{path}", check=False).returncode == 0:
        return "HEAD"
    # The newest commit that touched it, on any branch: it either holds the file or deleted it.
    out = _git(root, "log", "--all", "--format=%H", "-n", "1", "--", path, check=False).stdout.decode().strip()
    if len(out) != 40 or not all(char in "0123456789abcdef" for char in out):
        return None  # git output is data too: only a commit id is put into a command for the user
    for rev in (out, f"{out}^"):
        if _git(root, "cat-file", "-e", f"{rev}:{path}", check=False).returncode == 0:
            return rev[:12] + rev[40:]
    return None
