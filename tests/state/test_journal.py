"""The ledger journal: per-process appends, merged in one locked write, never losing an entry."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from pipeline.state import journal
from pipeline.state.ledger import load_ledger, sha256_bytes


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "encrypted").mkdir()
    return tmp_path


def artefact(repo: Path, name: str, content: bytes) -> dict[str, str]:
    """Write an artefact for node ``name``; returns the ledger entry describing it."""
    rel = f"encrypted/c-{name}.encrypted.yaml"
    (repo / rel).write_bytes(content)
    return {"artefact": rel, "artefact_sha256": sha256_bytes(content), "intent": f"sha256:{name}"}


def journals(repo: Path) -> list[Path]:
    folder = repo / "rendered"
    return sorted(folder.glob(".ledger-journal.*")) if folder.is_dir() else []


def test_entries_reach_the_ledger_only_at_the_flush(repo: Path) -> None:
    entries = {name: artefact(repo, name, f"ciphertext {name}".encode()) for name in ("a", "b", "c")}
    for name, entry in entries.items():
        journal.journal_entry(repo, name, entry)
    assert load_ledger(repo).nodes == {}
    assert len(journals(repo)) == 1  # one file for the whole process, not one per node
    assert os.stat(journals(repo)[0]).st_mode & 0o777 == 0o600

    journal.flush_ledger(repo)
    assert load_ledger(repo).nodes == entries
    assert journals(repo) == []


def test_an_entry_whose_artefact_changed_since_is_dropped(repo: Path) -> None:
    entry = artefact(repo, "a", b"first")
    journal.journal_entry(repo, "a", entry)
    (repo / entry["artefact"]).write_bytes(b"changed by someone else")
    journal.flush_ledger(repo)
    assert load_ledger(repo).nodes == {}


def test_appending_after_a_flush_starts_a_new_journal(repo: Path) -> None:
    journal.journal_entry(repo, "a", artefact(repo, "a", b"one"))
    journal.flush_ledger(repo)  # unlinks the journal this process still holds open
    second = artefact(repo, "b", b"two")
    journal.journal_entry(repo, "b", second)
    assert len(journals(repo)) == 1
    journal.flush_ledger(repo)
    assert set(load_ledger(repo).nodes) == {"a", "b"}


def test_a_torn_last_line_from_a_killed_run_is_skipped(repo: Path) -> None:
    entry = artefact(repo, "a", b"kept")
    journal.journal_entry(repo, "a", entry)
    journal.journal_entry(repo, "b", artefact(repo, "b", b"torn"))
    path = journals(repo)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # the kill cut the last append short
    journal.flush_ledger(repo)
    assert load_ledger(repo).nodes == {"a": entry}


def _worker(repo: str, names: list[str]) -> None:
    for name in names:
        journal.journal_entry(Path(repo), name, artefact(Path(repo), name, name.encode()))


def test_worker_processes_each_keep_their_own_journal(repo: Path) -> None:
    # Like `doit -n 2`: forked workers (after the parent journaled too) append, the parent merges.
    journal.journal_entry(repo, "parent", artefact(repo, "parent", b"p"))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(str(repo), [f"w{i}-{n}" for n in range(20)]))
               for i in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    assert len(journals(repo)) == 3
    journal.flush_ledger(repo)
    assert len(load_ledger(repo).nodes) == 41
    assert journals(repo) == []
