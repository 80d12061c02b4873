"""`doit hooks` and `talos-promote-guard`: the keyless guard as a git pre-commit hook."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from pipeline.guard import hooks
from tests.conftest import PROJECT, Repo
from tests.guard.test_guard import keyless


def commit(repo: Repo, message: str) -> subprocess.CompletedProcess[str]:
    """`git commit` as a user runs it (hooks enabled), without a key in the environment."""
    return subprocess.run(["git", "commit", "-qm", message], cwd=repo.path, env=keyless(repo),
                          capture_output=True, text=True, check=False)


def install(repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    result = repo.doit("hooks", *args)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def hook_file(repo: Repo) -> Path:
    return repo.path / ".git" / "hooks" / "pre-commit"


def test_hook_refuses_a_staged_plaintext_and_passes_an_ordinary_commit(promoted: Repo) -> None:
    result = install(promoted)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installed the pre-commit guard" in result.stdout
    assert os.access(hook_file(promoted), os.X_OK)
    head = promoted.git("rev-parse", "HEAD")

    (promoted.path / "secrets.yaml").write_text("cluster:\n  secret: c2VjcmV0IHZhbHVl\n")
    promoted.git("add", "-f", "secrets.yaml")
    refused = commit(promoted, "oops")
    assert refused.returncode != 0
    assert "secrets.yaml: plaintext is tracked or staged" in refused.stderr, refused.stderr
    assert "commit refused" in refused.stderr
    assert promoted.git("rev-parse", "HEAD") == head

    promoted.git("rm", "-q", "--cached", "secrets.yaml")
    (promoted.path / "secrets.yaml").unlink()
    patch = promoted.path / "patches" / "w1.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    promoted.doit(check=True)  # promotes w1 and stages its artefact and the ledger
    promoted.git("add", "patches/w1.yaml")
    done = commit(promoted, "wipe w1 on install")
    assert done.returncode == 0, done.stderr
    assert promoted.git("rev-parse", "HEAD") != head
    assert promoted.git("status", "--porcelain") == ""


def test_hook_judges_what_is_staged_not_the_work_tree(promoted: Repo) -> None:
    install(promoted)
    artefact = promoted.path / "encrypted" / "talos-kube-w1.encrypted.yaml"
    good = artefact.read_text()
    artefact.write_text("machine:\n  token: abcdef.0123456789abcdef\n")
    promoted.git("add", "encrypted/talos-kube-w1.encrypted.yaml")
    artefact.write_text(good)  # what is on disk is fine; what would be committed is not
    refused = commit(promoted, "bad artefact")
    assert refused.returncode != 0
    assert "encrypted/talos-kube-w1.encrypted.yaml" in refused.stderr, refused.stderr


def test_commit_all_is_judged_on_what_it_commits(promoted: Repo) -> None:
    """`git commit -a` stages tracked changes into a temporary index: the hook must see that one."""
    install(promoted)
    artefact = promoted.path / "encrypted" / "talos-kube-w1.encrypted.yaml"
    artefact.write_text("not: sops\n")
    refused = subprocess.run(["git", "commit", "-qam", "all"], cwd=promoted.path, env=keyless(promoted),
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "encrypted/talos-kube-w1.encrypted.yaml: not a SOPS file" in refused.stderr, refused.stderr


def test_an_existing_hook_is_never_replaced_silently(promoted: Repo) -> None:
    mine = "#!/bin/sh\necho my own hook\n"
    hook_file(promoted).write_text(mine)
    refused = install(promoted)
    assert refused.returncode == 1
    assert "not ours" in refused.stdout and "--force" in refused.stdout, refused.stdout
    assert hook_file(promoted).read_text() == mine

    forced = install(promoted, "--force")
    assert forced.returncode == 0, forced.stdout
    assert "pre-commit.orig" in forced.stdout
    assert hooks.MARKER in hook_file(promoted).read_text()
    assert (promoted.path / ".git" / "hooks" / "pre-commit.orig").read_text() == mine

    again = install(promoted)
    assert again.returncode == 0 and "already installed" in again.stdout


def test_console_script_needs_no_dodo(promoted: Repo) -> None:
    (promoted.path / "dodo.py").unlink()
    promoted.git("add", "-A")
    guard = Path(sys.executable).with_name("talos-promote-guard")
    assert guard.exists(), "pip install -e . makes the console script"
    clean = subprocess.run([str(guard)], cwd=promoted.path / "patches", env=keyless(promoted),
                           capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stderr
    (promoted.path / "rendered").mkdir()
    (promoted.path / "rendered" / "talos-kube-w1.yaml").write_text("machine: {}\n")
    promoted.git("add", "-f", "rendered/talos-kube-w1.yaml")
    dirty = subprocess.run([str(guard)], cwd=promoted.path, env=keyless(promoted), capture_output=True, text=True,
                           check=False)
    assert dirty.returncode == 1
    assert "rendered/talos-kube-w1.yaml" in dirty.stderr


def test_pre_commit_framework_manifest() -> None:
    manifest = yaml.safe_load((PROJECT / ".pre-commit-hooks.yaml").read_text())
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    (hook,) = manifest
    assert hook["id"] == hook["entry"] == hooks.CONSOLE_SCRIPT
    assert scripts[hook["entry"]] == "pipeline.guard.hook:main"
    assert hook["language"] == "python" and hook["pass_filenames"] is False
