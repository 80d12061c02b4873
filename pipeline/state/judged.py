"""The guard's memory of the tracked files it judged clean, so a promotion does not read them again.

A fleet's repository tracks a patch per node; the guard's text scan of every tracked file cost most of a
one-node promotion. A file is named here by its path and git blob id (its content), with the digest of
the scanner's code that judged it: the same bytes at the same path judged by the same code get the same
verdict, so only new or changed files are read. Only a promotion's safety check uses it; `doit check`
and the pre-commit hook judge every file every time.

It lives beside doit's database (``.doit.db.judged``, ignored with it by ``.doit.db*``), holds paths and
blob ids, never contents, and is only a shortcut: unreadable, stale or unwritable means "judge again".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

JUDGED_FILE = ".doit.db.judged"
_VERSION = 1


def load(root: Path, scanner: str) -> set[str]:
    """``"<blob> <path>"`` of the files judged clean by the scanner whose code digest is ``scanner``."""
    try:
        data = json.loads((root / JUDGED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(data, dict) or data.get("version") != _VERSION or data.get("scanner") != scanner:
        return set()
    clean = data.get("clean")
    return {item for item in clean if isinstance(item, str)} if isinstance(clean, list) else set()


def save(root: Path, scanner: str, clean: Iterable[str]) -> None:
    """Record the files judged clean (replacing the previous record); a failure to write is ignored."""
    from pipeline.state import ledger  # the one checked, atomic writer

    data = json.dumps({"version": _VERSION, "scanner": scanner, "clean": sorted(set(clean))}, indent=0)
    with contextlib.suppress(OSError):
        ledger.atomic_write(root / JUDGED_FILE, data.encode(), 0o600)
