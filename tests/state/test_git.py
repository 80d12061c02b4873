"""The git adapter against real repositories: what the stage and the guard read and write."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.state import git


def sh(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "HOME": str(root),
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
                               "PATH": "/usr/bin:/bin"}).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("one\n")
    (root / "enc").mkdir()
    (root / "enc" / "x.yaml").write_text("x: 1\n")
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "first")
    return root


def test_is_repository_only_at_the_top(repo: Path) -> None:
    assert git.is_repository(repo)
    assert not git.is_repository(repo / "enc")
    assert git.toplevel(repo / "enc") == repo.resolve()
    assert git.toplevel(repo.parent) is None


def test_changed_paths_and_stage_include_new_and_deleted_files(repo: Path) -> None:
    (repo / "enc" / "x.yaml").write_text("x: 2\n")
    (repo / "enc" / "new file.yaml").write_text("y: 1\n")  # a space in the name
    (repo / "a.txt").unlink()
    assert sorted(git.changed_paths(repo, "enc/")) == ["enc/new file.yaml", "enc/x.yaml"]
    git.stage(repo, [*git.changed_paths(repo, "enc/"), "a.txt"])
    status = sh(repo, "status", "--porcelain")
    assert "D  a.txt" in status and "M  enc/x.yaml" in status and 'A  "enc/new file.yaml"' in status
    assert git.staged_blob(repo, "enc/x.yaml") == b"x: 2\n"
    assert git.staged_blob(repo, "a.txt") is None
    assert git.committed_blob(repo, "a.txt") == b"one\n"


def test_index_entries_and_blobs_read_in_one_batch(repo: Path) -> None:
    entries = {path: (sha, stage) for path, sha, stage in git.index_entries(repo)}
    assert set(entries) == {"a.txt", "enc/x.yaml"} and all(stage == 0 for _sha, stage in entries.values())
    blobs = git.read_blobs(repo, [entries["a.txt"][0], entries["enc/x.yaml"][0], entries["a.txt"][0]])
    assert blobs == {entries["a.txt"][0]: b"one\n", entries["enc/x.yaml"][0]: b"x: 1\n"}
    assert git.read_blobs(repo, []) == {}


def test_ignored_reads_gitignore(repo: Path) -> None:
    (repo / ".gitignore").write_text("rendered/\nsecrets.yaml\n")
    assert git.ignored(repo, ["rendered/x.yaml", "secrets.yaml", "patches/a.yaml"]) == {"rendered/x.yaml",
                                                                                          "secrets.yaml"}


def test_git_path_follows_core_hookspath(repo: Path) -> None:
    assert git.git_path(repo, "hooks/pre-commit") == repo / ".git" / "hooks" / "pre-commit"
    sh(repo, "config", "core.hooksPath", "githooks")
    assert git.git_path(repo, "hooks/pre-commit").name == "pre-commit"


def test_a_failing_git_command_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as caught:
        git.index_files(tmp_path)  # not a repository
    assert "\n" not in str(caught.value) and "git ls-files failed" in str(caught.value)
