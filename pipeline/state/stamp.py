"""The promotion stamp: what makes a `doit` with nothing to promote cost almost nothing.

When a plain `doit` promotion succeeds, the stamp records the file-system identity (inode, size,
mtime, ctime) of everything its verdict was drawn from: cluster.yaml, .sops.yaml, .gitignore,
dodo.py, every file under patches/ and encrypted/ (and the folders themselves, so a new or deleted
file shows), any patch the inventory names elsewhere and the pipeline's own code; and a digest of
the git index's entries (path, blob, stage), which a commit leaves as they are. The next plain
`doit` that finds all of them the same, and no plaintext in rendered/, has nothing to promote and
nothing new to judge: it skips the inventory, the per-node checks, the guard and `git add`, the
way make skips a target whose inputs are unchanged. Anything else takes the full path: a change
(an editor save, a checkout, `git add`, even a `touch`), other tasks or options, or a missing or
unreadable stamp. ctime cannot be set back by a user, so equal identities mean untouched files.

The stamp lives beside doit's database (``.doit.db.promoted``, ignored with it by ``.doit.db*``):
deleting the database forgets it too. It holds paths and numbers, never file contents.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STAMP_FILE = ".doit.db.promoted"
_VERSION = 1
# Files at fixed places whose content the verdict depends on (missing ones are recorded as such).
_FIXED = ("cluster.yaml", ".sops.yaml", ".gitignore", "dodo.py", "pyproject.toml")
_WALKED = ("patches", "encrypted")
# The environment a plain `doit` reads besides its files.
_ENVIRONMENT = ("PROMOTE_KEEP", "PROMOTE_NO_STAGE", "PROMOTE_SOPS", "PROMOTE_RENDERER")
_CODE = Path(__file__).resolve().parent.parent  # the pipeline package


def _identity(path: Path) -> list[int] | None:
    try:
        stat = os.lstat(path)
    except OSError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_mode]


def _index_digest(root: Path) -> str | None:
    # What the guard reads of the index: every entry's path, blob and stage. Not the index file's
    # own identity: a commit or a `git status` rewrites that file without changing an entry.
    from pipeline.errors import PipelineError
    from pipeline.state import git

    try:
        entries = git.index_entries(root)
    except PipelineError:
        return None  # not a git repository (or git is missing): recorded as such
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def _walk(root: Path, folder: str, out: dict[str, list[int] | None]) -> None:
    for current, dirs, files in os.walk(root / folder):
        dirs.sort()
        rel = Path(current).relative_to(root).as_posix()
        out[rel + "/"] = _identity(Path(current))
        for name in sorted(files):
            out[f"{rel}/{name}"] = _identity(Path(current) / name)


def snapshot(root: Path, named: Iterable[str] = ()) -> dict[str, Any]:
    """The identities the stamp compares; ``named``: repo-relative files the inventory names."""
    files: dict[str, list[int] | None] = {}
    for rel in (*_FIXED, *named):
        files[rel] = _identity(root / rel)
    for folder in _WALKED:
        files[folder + "/"] = _identity(root / folder)
        _walk(root, folder, files)
    code = {path.relative_to(_CODE).as_posix(): _identity(path) for path in sorted(_CODE.rglob("*.py"))}
    return {"version": _VERSION, "files": files, "code": code, "index": _index_digest(root),
            "environment": {key: os.environ.get(key) for key in _ENVIRONMENT}}


def record(root: Path, nodes: list[str], named: Iterable[str]) -> None:
    """Remember that a plain `doit` just promoted ``nodes`` (inventory order) from today's files."""
    stamp = snapshot(root, named)
    stamp["nodes"] = nodes
    stamp["named"] = sorted(set(named))
    path = root / STAMP_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def forget(root: Path) -> None:
    """Drop the stamp (the next plain `doit` takes the full path)."""
    (root / STAMP_FILE).unlink(missing_ok=True)


def unchanged(root: Path) -> list[str] | None:
    """The nodes, if nothing a plain `doit` depends on changed since it last succeeded; else None."""
    if os.path.lexists(root / "rendered"):
        return None  # plaintext left behind (or kept): the full path purges or judges it
    try:
        stamp = json.loads((root / STAMP_FILE).read_text(encoding="utf-8"))
        nodes, named = stamp.pop("nodes"), stamp.pop("named")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(nodes, list) or not isinstance(named, list) or not all(isinstance(n, str) for n in named):
        return None
    return nodes if snapshot(root, named) == stamp else None
