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
