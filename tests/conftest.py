"""Shared fixtures: real git repos in temp folders, real sops, real age keys in a temp HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
FIXTURES = PROJECT.parent / "shared" / "talos-fixtures"
# What a user's cluster repo holds: the wiring, the intent and the ignore rules.
EXAMPLE_FILES = ("dodo.py", "pyproject.toml", "cluster.yaml", "patches", ".gitignore")


def _clean_env(home: Path, log: Path) -> dict[str, str]:
    # PROMOTE_SOPS_ENGINE passes through: the suite runs with the engine and with the binary alone.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SOPS_", "PROMOTE_", "GIT_", "XDG_")) or key == "PROMOTE_SOPS_ENGINE"}
    env.update(HOME=str(home), PROMOTE_SOPS_LOG=str(log), CI="true",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    return env


@dataclass
class Repo:
    """A cluster repository in a temp folder, with its own HOME (and so its own age key)."""

    path: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def sops_log(self) -> Path:
        return Path(self.env["PROMOTE_SOPS_LOG"])

    def doit(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `doit` (the installed one, as a user would) in the repo."""
        self.sops_log.write_text("")
        result = subprocess.run([sys.executable, "-m", "doit", *args], cwd=self.path, env=env or self.env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def sops_runs(self) -> list[str]:
        """The sops invocations of the last doit run (`--encrypt ...`, `--decrypt ...`)."""
        return [line for line in self.sops_log.read_text().splitlines() if line]

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, env=self.env, capture_output=True, text=True,
                              check=True).stdout

    def sops(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The stock `sops` console script, as a user would call it."""
        binary = shutil.which("sops", path=os.path.dirname(sys.executable)) or "sops"
        return subprocess.run([binary, *args], cwd=self.path, env=env or self.env, capture_output=True,
                              text=True, check=False)

    def artefacts(self) -> dict[str, bytes]:
        """Every file under encrypted/ and its bytes."""
        return {p.relative_to(self.path).as_posix(): p.read_bytes()
                for p in sorted((self.path / "encrypted").rglob("*")) if p.is_file()}


def new_repo(base: Path) -> Repo:
    """A fresh clone of the shipped example cluster, committed, with an empty HOME."""
    path, home = base / "repo", base / "home"
    path.mkdir(parents=True)
    home.mkdir()
    for name in EXAMPLE_FILES:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, path / name)
        else:
            shutil.copy2(source, path / name)
    repo = Repo(path, home, _clean_env(home, base / "sops.log"))
    repo.git("init", "-q", "-b", "main")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "intent")
    return repo


@pytest.fixture(scope="session")
def promoted_template(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """One bootstrapped, promoted and committed example repo, copied by `promoted`."""
    repo = new_repo(tmp_path_factory.mktemp("template"))
    repo.doit(check=True)
    repo.git("add", "-A")
    repo.git("commit", "-qm", "promote")
    return repo


def copy_repo(template: Repo, base: Path) -> Repo:
    """A private copy of a repo and its HOME (key included), under ``base``."""
    shutil.copytree(template.path, base / "repo", symlinks=True)
    shutil.copytree(template.home, base / "home", symlinks=True)
    return Repo(base / "repo", base / "home", _clean_env(base / "home", base / "sops.log"))


@pytest.fixture
def promoted(promoted_template: Repo, tmp_path: Path) -> Repo:
    """A private copy of the promoted example repo and its HOME (key included)."""
    repo = copy_repo(promoted_template, tmp_path)
    # A copy has new timestamps: doit must still treat it as up to date (that is the ledger's job).
    return repo


@pytest.fixture
def fresh(tmp_path: Path) -> Repo:
    """A fresh clone of the example with an empty HOME: nothing bootstrapped yet."""
    return new_repo(tmp_path)


@pytest.fixture
def fixtures_dir() -> Path:
    """Talos's own test data (`../shared/talos-fixtures`); missing data fails, never skips."""
    assert FIXTURES.is_dir(), f"Talos fixtures not found at {FIXTURES}"
    return FIXTURES


Edit = Callable[[str], str]
