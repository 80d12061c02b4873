"""A serial promotion keeps each rendered config in memory: no plaintext file is ever created.

Watched with real filesystem events (watchdog's inotify observer), on a real promotion of every node.
"""

from __future__ import annotations

import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from tests.conftest import Repo
from tests.promote.test_faults import _change_every_node


class _Created(FileSystemEventHandler):
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved", "modified"):
            with self.lock:
                self.paths.append(str(getattr(event, "dest_path", "") or event.src_path))


def _with_engine(repo: Repo) -> dict[str, str]:
    # The in-process engine is what takes the config from memory; the sops binary needs a file
    # (PROMOTE_SOPS_ENGINE=binary, which the suite is also run with, writes one on purpose).
    return {k: v for k, v in repo.env.items() if k != "PROMOTE_SOPS_ENGINE"}


def _files_made_under_rendered(repo: Repo, *args: str) -> tuple[list[str], str]:
    folder = repo.path / "rendered"
    folder.mkdir(mode=0o700, exist_ok=True)  # watched from the start (a new folder's first file can be missed)
    seen = _Created()
    observer = Observer()
    observer.schedule(seen, str(folder), recursive=True)
    observer.start()
    try:
        result = repo.doit(*args, env=_with_engine(repo))
    finally:
        observer.stop()
        observer.join(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    made = sorted({Path(p).name for p in seen.paths if p != str(folder)})
    return [name for name in made if not name.startswith(".ledger-journal.")], result.stdout


def test_a_serial_promotion_creates_no_plaintext_file(promoted: Repo) -> None:
    before = promoted.artefacts()
    _change_every_node(promoted)
    made, out = _files_made_under_rendered(promoted)
    assert made == [], made
    changed = [p for p, data in promoted.artefacts().items() if data != before.get(p) and p.endswith(".yaml")]
    assert len(changed) >= 3, out  # every node was rendered and re-encrypted


def test_keep_and_worker_processes_still_write_the_files(promoted: Repo) -> None:
    _change_every_node(promoted)
    made, _ = _files_made_under_rendered(promoted, "keep=1")
    assert any(name.endswith(".yaml") for name in made), made
    assert list((promoted.path / "rendered").glob("*.yaml"))  # kept after the run
    _change_every_node(promoted, "8.8.8.8")
    made, _ = _files_made_under_rendered(promoted, "-n", "2", "-P", "process")
    assert any(name.endswith(".yaml") for name in made), made  # another worker may encrypt it
    assert not list((promoted.path / "rendered").glob("*.yaml"))  # and the run removed them


def test_the_sops_binary_encrypts_this_run_s_config_not_a_kept_older_file(promoted: Repo) -> None:
    # keep=1 leaves rendered files behind; a later run that keeps its configs in memory and falls back
    # to the sops binary must write the file again before sops reads it.
    _change_every_node(promoted)
    assert promoted.doit("keep=1").returncode == 0
    assert list((promoted.path / "rendered").glob("*.yaml"))
    _change_every_node(promoted, "8.8.8.8")
    binary = dict(promoted.env, PROMOTE_SOPS_ENGINE="binary")
    result = promoted.doit(env=binary)
    assert result.returncode == 0, result.stdout + result.stderr
    verify = promoted.doit("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not list((promoted.path / "rendered").glob("*.yaml"))
