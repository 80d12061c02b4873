"""doit's database as the promotion keeps it (pipeline/wiring/db.py): JSON, atomic, lenient, no leftovers."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from doit.dependency import JSONCodec

from pipeline.state import ledger
from pipeline.wiring.db import PromotionDB
from tests.conftest import Repo


def test_the_database_is_json_holding_only_what_tasks_returned(promoted: Repo) -> None:
    (promoted.path / "patches" / "w1.yaml").write_text(
        (promoted.path / "patches" / "w1.yaml").read_text() + "# edited\n")
    promoted.doit(check=True)
    data = json.loads((promoted.path / ".doit.db").read_text())
    assert "render:w1" in data and "encrypt:w1" in data
    # No dbm page files beside it (those carried leftover process memory on some Pythons).
    assert not [p.name for p in promoted.path.glob(".doit.db.*") if p.suffix in (".db", ".dat", ".dir", ".bak")]
    assert json.loads((promoted.path / ".doit.db").read_text())  # the database itself is JSON


def test_an_unreadable_database_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / ".doit.db"
    path.write_bytes(b"\x00\x01 not json {")
    db = PromotionDB(str(path), JSONCodec())
    db.set("render:a", "_values_:", {"intent": "x"})
    db.dump()
    assert json.loads(path.read_text()) == {"render:a": {"_values_:": {"intent": "x"}}}


def test_saving_replaces_the_file_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".doit.db"
    db = PromotionDB(str(path), JSONCodec())
    db.set("t", "k", "first")
    db.dump()
    before = path.read_bytes()

    def full_disk(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger, "write_all", full_disk)
    db.set("t", "k", "second")
    with pytest.raises(OSError):
        db.dump()
    assert path.read_bytes() == before  # the previous database, not half a document
    assert [p.name for p in tmp_path.iterdir()] == [".doit.db"]


def test_a_checkout_that_cannot_be_written_keeps_its_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ledger, "atomic_write", read_only)
    db = PromotionDB(str(tmp_path / ".doit.db"), JSONCodec())
    db.set("t", "k", "v")
    db.dump()  # no traceback: `doit list` on a read-only mount
    assert not (tmp_path / ".doit.db").exists()


def test_a_run_refuses_a_dbm_database(promoted: Repo) -> None:
    pyproject = promoted.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('backend = "promote"', 'backend = "dbm"'))
    result = promoted.doit()
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("pyproject.toml: ") and 'backend = "promote"' in lines[0]
    dbm_files = {".doit.db.db", ".doit.db.dat", ".doit.db.dir", ".doit.db.bak"}
    assert not [p for p in promoted.path.glob(".doit.db*") if p.name in dbm_files]
    for command in ("check", "verify"):  # verify holds plaintext in memory too
        refused = promoted.doit(command)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.startswith("pyproject.toml: doit's database backend 'dbm'")
