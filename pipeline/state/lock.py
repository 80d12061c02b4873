"""One promotion at a time per repository: an advisory file lock held for the whole run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

RUN_LOCK = ".promote.lock"
# Per process: flock belongs to the open file, so a second open in the same process would
# conflict with the first. The fd stays open (and the lock held) until release() or exit.
_held: dict[str, int] = {}


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip() or 0)
        if pid:
            return f" (pid {pid})"
    return ""


def acquire(root: Path, wait: float | None = None) -> None:
    """Take the repository's promotion lock, waiting up to ``wait`` seconds for another run.

    The default wait comes from PROMOTE_LOCK_WAIT (30 s). A run that cannot get the lock fails
    with one line and changes nothing.
    """
    key = str(root.resolve())
    if key in _held:
        return
    if wait is None:
        wait = float(os.environ.get("PROMOTE_LOCK_WAIT", "30"))
    path = root / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise PipelineError(f"another promotion is running in this repository{_holder(path)}; "
                                    "try again when it has finished", path=RUN_LOCK) from None
            if not told:
                print(f"waiting for another promotion in this repository{_holder(path)} ...", file=sys.stderr,
                      flush=True)
                told = True
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[key] = fd
    _remove_stale_temp_files(root)


def held(root: Path) -> bool:
    """Whether this process holds the lock for ``root``."""
    return str(root.resolve()) in _held


def release(root: Path) -> None:
    """Give the lock back (`doit watch` does so between rebuilds)."""
    fd = _held.pop(str(root.resolve()), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove_stale_temp_files(root: Path) -> None:
    # Holding the lock means no other promotion is writing: any temp file left is from a killed run.
    for folder in (root / "encrypted", root / "rendered"):
        if folder.is_dir() and not folder.is_symlink():
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def holding(root: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the repository's promotion lock for the ``with`` block (a no-op if this process holds it)."""
    if held(root):
        yield
        return
    acquire(root, wait)
    try:
        yield
    finally:
        release(root)
