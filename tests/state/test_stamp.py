"""The promotion stamp: a plain `doit` with nothing changed skips everything, and any change is seen."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.state import stamp
from tests.conftest import Repo

NODES = ["cp1", "w1"]


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=root,
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small promoted-looking repository (real git) whose stamp was just recorded."""
    root = tmp_path / "repo"
    (root / "patches").mkdir(parents=True)
    (root / "encrypted").mkdir()
    (root / "cluster.yaml").write_text("cluster: {name: c}\n")
    (root / ".sops.yaml").write_text("creation_rules: []\n")
    (root / ".gitignore").write_text("rendered/\n.doit.db*\n")
    (root / "dodo.py").write_text("")
    (root / "patches" / "cp1.yaml").write_text("machine: {network: {hostname: cp1}}\n")
    (root / "encrypted" / "c-cp1.encrypted.yaml").write_text("sops: {mac: ENC[x]}\n")
    (root / "encrypted" / "ledger.json").write_text("{}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "promote")
    stamp.record(root, NODES, ["patches/cp1.yaml"])
    return root


def test_an_untouched_repository_is_unchanged(repo: Path) -> None:
    assert stamp.unchanged(repo) == NODES


def _same_size_edit(root: Path) -> None:
    path = root / "patches" / "cp1.yaml"
    path.write_text(path.read_text().replace("cp1", "cpX"))  # same size, same second


def _restore_mtime(root: Path) -> None:
    # Content changed but mtime put back as it was: only ctime tells.
    path = root / "patches" / "cp1.yaml"
    before = path.stat()
    path.write_text(path.read_text().replace("cp1", "cpY"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


CHANGES: dict[str, Callable[[Path], object]] = {
    "same-size edit of a patch": _same_size_edit,
    "edit with mtime restored": _restore_mtime,
    "touch of a patch": lambda root: os.utime(root / "patches" / "cp1.yaml"),
    "new patch file": lambda root: (root / "patches" / "w1.yaml").write_text("{}\n"),
    "patch in a new subfolder": lambda root: (root / "patches" / "roles").mkdir(),
    "deleted patch": lambda root: (root / "patches" / "cp1.yaml").unlink(),
    "edited inventory": lambda root: (root / "cluster.yaml").write_text("cluster: {name: d}\n"),
    "edited .sops.yaml": lambda root: (root / ".sops.yaml").write_text("creation_rules: [{}]\n"),
    "edited .gitignore": lambda root: (root / ".gitignore").write_text("\n"),
    "artefact rewritten": lambda root: (root / "encrypted" / "c-cp1.encrypted.yaml").write_text("x\n"),
    "artefact deleted": lambda root: (root / "encrypted" / "c-cp1.encrypted.yaml").unlink(),
    "stray file in encrypted/": lambda root: (root / "encrypted" / "notes.txt").write_text("plain\n"),
    "ledger edited": lambda root: (root / "encrypted" / "ledger.json").write_text("{ }\n"),
    "plaintext left in rendered/": lambda root: (root / "rendered").mkdir(),
    "something staged": lambda root: ((root / "x.yaml").write_text("a: 1\n"), git(root, "add", "x.yaml")),
    "a file unstaged": lambda root: git(root, "rm", "-q", "--cached", "encrypted/ledger.json"),
    "stamp corrupted": lambda root: (root / stamp.STAMP_FILE).write_text("{not json"),
    "stamp deleted": lambda root: stamp.forget(root),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_takes_the_full_path(repo: Path, change: str) -> None:
    CHANGES[change](repo)
    assert stamp.unchanged(repo) is None


def test_a_commit_of_what_was_promoted_changes_nothing(repo: Path) -> None:
    (repo / "notes.md").write_text("release notes\n")
    git(repo, "status")  # refreshes (rewrites) the index file: its entries stay the same
    git(repo, "commit", "-q", "--allow-empty", "-m", "release")
    assert stamp.unchanged(repo) == NODES


def test_the_environment_a_promotion_reads_counts(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTE_KEEP", "1")
    assert stamp.unchanged(repo) is None


def test_the_stamp_holds_no_file_content(repo: Path) -> None:
    text = (repo / stamp.STAMP_FILE).read_text()
    assert "hostname" not in text and "creation_rules" not in text and "ENC[" not in text


# --- through doit ---------------------------------------------------------------------------------


def test_plain_doit_records_the_stamp_and_the_next_one_reports_every_node_up_to_date(promoted: Repo) -> None:
    first = promoted.doit()
    assert first.returncode == 0, first.stderr
    assert stamp.unchanged(promoted.path) == ["cp1", "cp2", "cp3", "w1", "w2", "w3"]

    again = promoted.doit()
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().startswith("promoted 0 of 6 nodes · 6 up to date · 0 sops runs · ")
    assert promoted.sops_runs() == []


def test_other_invocations_leave_the_stamp_alone(promoted: Repo) -> None:
    assert promoted.doit("promote").returncode == 0
    assert stamp.unchanged(promoted.path) is None  # only a plain `doit` records one


def test_a_save_right_after_a_promotion_is_promoted(promoted: Repo) -> None:
    assert promoted.doit().returncode == 0
    patch = promoted.path / "patches" / "cp1.yaml"
    text = patch.read_text()
    assert "0.0.0.0/0" in text
    patch.write_text(text.replace("0.0.0.0/0", "0.0.0.0/1", 1))  # same size, same clock tick
    result = promoted.doit()
    assert result.returncode == 0, result.stderr
    assert "promoted 1 of 6 nodes (cp1)" in result.stdout


def test_plaintext_staged_after_a_promotion_still_fails_the_promotion(promoted: Repo) -> None:
    assert promoted.doit().returncode == 0
    (promoted.path / "secrets.yaml").write_text("cluster:\n  secret: c2VjcmV0\n")
    promoted.git("add", "-f", "secrets.yaml")
    result = promoted.doit()
    assert result.returncode == 1
    assert "secrets.yaml: plaintext is tracked or staged" in result.stdout
