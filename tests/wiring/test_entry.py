"""The run entry: the lock, journal merge and stamp happen in doit's `run` command, never at import."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.wiring.entry import writes
from tests.conftest import Repo


def test_which_runs_may_write() -> None:
    assert writes([])  # the default task: the promotion
    assert writes(["encrypt:cp1"]) and writes(["render"]) and writes(["rekey"]) and writes(["stage"])
    assert not writes(["check"]) and not writes(["verify"]) and not writes(["plan", "--format", "markdown"])
    # A read-only task's option value is not mistaken for a task (no argv parser of our own).
    assert not writes(["keygen", "--out", "/tmp/key.txt"]) and not writes(["graph", "--out", "x.dot"])
    assert writes(["check", "promote"])


def test_importing_dodo_takes_no_lock_and_writes_nothing(promoted: Repo) -> None:
    journal = promoted.path / "rendered" / ".ledger-journal.999999"
    journal.parent.mkdir(mode=0o700)
    journal.write_text(json.dumps({"node": "cp1", "entry": {"artefact": "encrypted/x"}}) + "\n")
    before = {p: p.stat().st_mtime_ns for p in promoted.path.rglob("*") if ".git" not in p.parts}
    probe = ("import fcntl, os, sys; sys.argv = ['doit']; import dodo; "
             "fd = os.open('.promote.lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); "
             "print('free')")
    result = subprocess.run([sys.executable, "-c", probe], cwd=promoted.path, env=promoted.env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "free", result.stderr
    assert journal.exists()  # not merged by an import
    after = {p: p.stat().st_mtime_ns for p in promoted.path.rglob("*") if ".git" not in p.parts and p.exists()}
    assert {p: t for p, t in after.items() if p in before} == {p: t for p, t in before.items() if p in after}


def test_check_is_read_only_even_with_a_leftover_journal(promoted: Repo) -> None:
    # A killed promotion left a journal: `doit check` (no lock) reports, it does not merge.
    ledger = promoted.path / "encrypted" / "ledger.json"
    before = ledger.read_bytes()
    record = json.loads(before)
    entry = dict(record["nodes"]["cp1"], intent="sha256:" + "0" * 64)
    journal = promoted.path / "rendered" / ".ledger-journal.424242"
    journal.parent.mkdir(mode=0o700)
    journal.write_text(json.dumps({"node": "cp1", "entry": entry}) + "\n")
    promoted.doit("check")
    assert ledger.read_bytes() == before
    assert journal.exists()


def test_the_lock_is_taken_before_doit_opens_its_database(promoted: Repo) -> None:
    # Hold the lock as another promotion would: the waiting run gives up with one line, and never
    # opened (so never created) the dependency database.
    for path in promoted.path.glob(".doit.db*"):
        path.unlink()
    fd = os.open(promoted.path / ".promote.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = promoted.doit(env=dict(promoted.env, PROMOTE_LOCK_WAIT="0"))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert result.returncode == 1
    assert "another promotion is running" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(promoted.path.glob(".doit.db*"))
    # A read-only task does not wait for the lock at all.
    os.close(os.open(promoted.path / ".promote.lock", os.O_RDWR))


def test_keygen_into_an_impossible_place_is_one_line(promoted: Repo) -> None:
    result = promoted.doit("keygen", "--out", "/proc/x")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "/proc/x" in result.stdout + result.stderr


def test_an_unparsable_sops_config_stops_doit_before_any_render(promoted: Repo) -> None:
    (promoted.path / ".sops.yaml").write_text("creation_rules: [\n")
    (promoted.path / "patches" / "cp1.yaml").write_text(
        (promoted.path / "patches" / "cp1.yaml").read_text().replace("cp1", "cp1-renamed"))
    before = promoted.artefacts()
    result = promoted.doit()
    assert result.returncode == 1, result.stdout + result.stderr
    assert ".sops.yaml" in result.stdout + result.stderr
    assert promoted.artefacts() == before
    assert "--encrypt" not in " ".join(promoted.sops_runs())
    check = promoted.doit("check")
    assert check.returncode == 1 and ".sops.yaml" in check.stdout + check.stderr


def test_check_refuses_an_untracked_sops_config(promoted: Repo) -> None:
    promoted.git("rm", "-q", "--cached", ".sops.yaml")
    result = promoted.doit("check")
    assert result.returncode == 1
    assert ".sops.yaml: not committed yet" in result.stdout + result.stderr
    # `doit` says the same, without refusing the promotion it was asked for.
    promote = promoted.doit()
    assert promote.returncode == 0
    assert ".sops.yaml: not committed yet" in promote.stdout + promote.stderr


def test_a_swapped_secrets_bundle_stops_the_run_before_any_node_is_rendered(promoted: Repo, tmp_path: Path) -> None:
    # Another cluster's bundle (a real one, made by a bootstrap elsewhere) replaces ours.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("dodo.py", "pyproject.toml", "cluster.yaml", "patches", ".gitignore"):
        source = promoted.path / name
        if source.is_dir():
            shutil.copytree(source, other / name)
        else:
            (other / name).write_bytes(source.read_bytes())
    (other / ".sops.yaml").write_bytes((promoted.path / ".sops.yaml").read_bytes())
    boot = subprocess.run([sys.executable, "-m", "doit", "bootstrap"], cwd=other, env=promoted.env,
                          capture_output=True, text=True, check=False)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    bundle = promoted.path / "encrypted" / "secrets.encrypted.yaml"
    bundle.write_bytes((other / "encrypted" / "secrets.encrypted.yaml").read_bytes())
    shared = promoted.path / "patches" / "resolvers.yaml"  # every node would be re-rendered
    shared.write_text(shared.read_text().replace("9.9.9.9", "149.112.112.112"))
    result = promoted.doit()
    assert result.returncode == 1
    assert "secrets bundle changed" in result.stdout + result.stderr
    assert not (promoted.path / "rendered").exists() or not list((promoted.path / "rendered").glob("*.yaml"))
    assert not any(run.startswith("--encrypt") for run in promoted.sops_runs())
    check = promoted.doit("check")
    assert check.returncode == 1 and "secrets bundle changed" in check.stdout + check.stderr


@pytest.mark.parametrize("task", ["check", "verify", "plan", "graph", "list"])
def test_read_only_tasks_do_not_take_the_lock(promoted: Repo, task: str) -> None:
    fd = os.open(promoted.path / ".promote.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = promoted.doit(task, env=dict(promoted.env, PROMOTE_LOCK_WAIT="0"))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert "another promotion is running" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_repository_without_the_run_entry_refuses_to_promote_unguarded(promoted: Repo) -> None:
    # A pyproject.toml from an earlier version: doit's stock `run`, so no run lock. Writing refuses.
    pyproject = promoted.path / "pyproject.toml"
    pyproject.write_text("\n".join(line for line in pyproject.read_text().splitlines()
                                   if not line.startswith("run = ")) + "\n")
    before = promoted.artefacts()
    for args in ((), ("rekey",)):
        result = promoted.doit(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "run entry" in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr
    assert promoted.artefacts() == before
    assert promoted.doit("check").returncode == 0  # reading needs no lock
