"""The ledger journal: per-process append-only ledger entries, merged into encrypted/ledger.json in one write."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import RENDERED_DIR
from pipeline.state import ledger
from pipeline.state.ledger import sha256_file

# Each encrypt task appends its ledger entry to a journal of its process (rendered/.ledger-journal.<pid>,
# one JSON line per node); the next action that reads the ledger (promote, stage, check...), the end
# of the run, or the start of the next writing run merges them all in one locked read-modify-write.
# Rewriting the whole ledger per node made a fleet's promotion quadratic, `doit -n N` workers share
# nothing but files, and one file per process (not per node) keeps file creations off the per-node
# path. An entry is merged only while the artefact on disk is the one it describes, so a journal
# left by a killed run is merged later if still true and dropped otherwise (a torn last line is
# skipped); and an artefact the ledger does not know is decrypted and compared, never re-encrypted
# blindly. Appends and the merge hold the journal's flock; the merge unlinks a journal it has read,
# and a writer that finds its journal unlinked opens a new one, so no entry is lost in between.
JOURNAL_PREFIX = ".ledger-journal."
_JOURNAL_PREFIX = JOURNAL_PREFIX


_journal: dict[str, tuple[int, int]] = {}  # repo root -> (pid, fd) of this process's journal


_journaled: dict[str, dict[str, dict[str, Any]]] = {}  # repo root -> node -> entry not yet merged here


def _journal_fd(root: Path) -> int:
    key = str(root)
    held = _journal.get(key)
    if held is not None and held[0] == os.getpid():
        return held[1]
    # A forked worker must not share its parent's descriptor: flock belongs to the open file.
    folder = root / RENDERED_DIR
    if folder.is_symlink():
        raise PipelineError("refusing to write through a symlink: remove it", path=f"{RENDERED_DIR}/")
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / f"{_JOURNAL_PREFIX}{os.getpid()}",
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    _journal[key] = (os.getpid(), fd)
    return fd


def _forget_journal(root: Path) -> None:
    held = _journal.pop(str(root), None)
    if held is not None and held[0] == os.getpid():
        with contextlib.suppress(OSError):
            os.close(held[1])


def journal_entry(root: Path, name: str, entry: dict[str, Any]) -> None:
    """Append ``name``'s ledger entry to this process's journal (merged by :func:`flush_ledger`)."""
    line = (json.dumps({"node": name, "entry": entry}, separators=(",", ":")) + "\n").encode()
    for _attempt in range(3):
        fd = _journal_fd(root)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            merged = os.fstat(fd).st_nlink == 0  # merged (or purged) since it was opened
            if not merged:
                os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if not merged:
            break
        _forget_journal(root)  # and start a new one
    else:
        raise PipelineError("could not append to the ledger journal", path=f"{RENDERED_DIR}/")
    _journaled.setdefault(str(root), {})[name] = entry


def journaled_entry(root: Path, name: str) -> dict[str, Any] | None:
    """``name``'s entry as this process journaled it, not yet merged into the ledger (None: none)."""
    return _journaled.get(str(root), {}).get(name)


def _read_journal(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The entries of one journal (locked, then unlinked so its writer starts a new one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    entries = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        for raw in data.splitlines():
            try:
                item = json.loads(raw)
                name, entry = item["node"], item["entry"]
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
            if isinstance(name, str) and isinstance(entry, dict):
                entries.append((name, entry))
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
    return entries


def flush_ledger(root: Path) -> None:
    """Merge the ledger entries that ``encrypt(..., defer_ledger=True)`` journaled into the ledger."""
    folder = root / RENDERED_DIR
    _journaled.pop(str(root), None)
    if not folder.is_dir() or folder.is_symlink():
        return
    journals = sorted(folder.glob(f"{_JOURNAL_PREFIX}*"))
    if not journals:
        return
    with ledger.updating(root) as record:
        merged: list[Path] = []
        entries = [item for path in journals for item in _read_journal(path)]
        # A journal is a file under rendered/: its paths get the ledger's confinement too (the folder
        # is judged once for the whole batch, each file on its own).
        folder_ok = bool(entries) and ledger.confined_folder(root)
        for name, entry in entries:
            artefact = entry.get("artefact")
            if folder_ok and ledger.confined_artefact(root, artefact, folder_checked=True) is not None \
                    and sha256_file(root / artefact) == entry.get("artefact_sha256"):
                record.nodes[name] = entry
                merged.append(root / artefact)
        # Encrypt writes artefacts without an fsync each (a kill never sees a partial file, and
        # one sync per node was a tenth of a fleet's promotion); the ledger never records an
        # artefact that a power cut could still take back.
        ledger.make_durable(merged)
