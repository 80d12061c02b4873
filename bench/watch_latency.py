"""How long `doit watch` takes from a saved patch to the updated artefact, for one node.

    python bench/watch_latency.py                # the example cluster as shipped (6 nodes)
    python bench/watch_latency.py --nodes 50     # a generated cluster: 3 control planes, 47 workers

Builds a throw-away repository (its own HOME, so its own age key), bootstraps and promotes it with
`doit`, commits, starts `python -m doit watch` in it, then saves patches/cp1.yaml ``--runs`` times
(each save a real change: the interface MTU) and measures, per save:

- save -> artefact: until encrypted/<cluster>-cp1.encrypted.yaml has been replaced (polled every 1 ms);
- save -> done: until the watcher printed its `rebuild N done` line.

Both include the debounce (150 ms by default, `--debounce`). Prints the medians; `--json` also
writes them to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
WIRING = ("dodo.py", "pyproject.toml", ".gitignore")


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user with only this HOME (and so only this age key)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SOPS_", "PROMOTE_", "GIT_", "XDG_"))}
    env.update(HOME=str(home), CI="true", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    return env


def make_repo(base: Path, nodes: int) -> Path:
    """The example cluster (nodes == 6) or a generated one with per-node patches like patches/cp1.yaml."""
    repo = base / "repo"
    (repo / "patches").mkdir(parents=True)
    for name in WIRING:
        shutil.copy2(PROJECT / name, repo / name)
    if nodes == 6:
        shutil.copy2(PROJECT / "cluster.yaml", repo / "cluster.yaml")
        for patch in (PROJECT / "patches").iterdir():
            shutil.copy2(patch, repo / "patches" / patch.name)
        return repo
    inventory = yaml.safe_load((PROJECT / "cluster.yaml").read_text())
    node_patch = (PROJECT / "patches" / "cp1.yaml").read_text()  # templated: hostname, address, gateway
    for shared in inventory.get("patches") or []:
        shutil.copy2(PROJECT / "patches" / shared, repo / "patches" / shared)
    controlplanes = min(3, nodes)
    inventory["nodes"] = {}
    for index in range(nodes):
        name = f"cp{index + 1}" if index < controlplanes else f"w{index - controlplanes + 1}"
        role = "controlplane" if index < controlplanes else "worker"
        inventory["nodes"][name] = {"role": role, "address": f"192.168.{1 + index // 200}.{10 + index % 200}"}
        (repo / "patches" / f"{name}.yaml").write_text(node_patch)
    (repo / "cluster.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return repo


def run(argv: list[str], repo: Path, env: dict[str, str]) -> None:
    """Run a command in the repo; stop the benchmark with its output if it fails."""
    result = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


class Watcher:
    """`python -m doit watch` with its output read line by line by a thread."""

    def __init__(self, repo: Path, env: dict[str, str], debounce: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "doit", "watch", f"--debounce={debounce}"], cwd=repo,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> tuple[float, str]:
        """When the ``count``-th line matching ``pattern`` was read, and that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [(at, line) for at, line in self.lines if re.search(pattern, line)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.002)
        with self.lock:
            output = "\n".join(line for _, line in self.lines)
        sys.exit(f"watcher: no {pattern!r} #{count} within {timeout} s:\n{output}")

    def stop(self) -> int:
        """SIGINT, as Ctrl-C would; the exit status."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=10)
        self.reader.join(timeout=2)
        return code


def with_mtu(text: str, mtu: int) -> str:
    """A node patch with an MTU on its interface."""
    return text.replace("\n        routes:", f"\n        mtu: {mtu}\n        routes:")


def measure(nodes: int, runs: int, debounce: int) -> dict[str, Any]:
    """Set up a repo, start the watcher, time ``runs`` saves of patches/cp1.yaml."""
    base = Path(tempfile.mkdtemp(prefix="watch-latency-"))
    try:
        home = base / "home"
        home.mkdir()
        env = clean_env(home)
        repo = make_repo(base, nodes)
        run(["git", "init", "-q", "-b", "main"], repo, env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", "intent"], repo, env)
        started = time.perf_counter()
        run([sys.executable, "-m", "doit"], repo, env)
        bootstrap = time.perf_counter() - started
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", "promote"], repo, env)

        cluster = yaml.safe_load((repo / "cluster.yaml").read_text())["cluster"]["name"]
        artefact = repo / "encrypted" / f"{cluster}-cp1.encrypted.yaml"
        patch = repo / "patches" / "cp1.yaml"
        original = patch.read_text()
        watcher = Watcher(repo, env, debounce)
        watcher.wait_for(r"^watch: watching ")
        to_artefact: list[float] = []
        to_done: list[float] = []
        builds: list[float] = []
        for index in range(runs):
            before = os.stat(artefact)
            patch.write_text(with_mtu(original, 1400 + index))
            saved = time.perf_counter()
            while True:
                now = os.stat(artefact)
                if (now.st_ino, now.st_mtime_ns) != (before.st_ino, before.st_mtime_ns):
                    to_artefact.append(time.perf_counter() - saved)
                    break
                if time.perf_counter() - saved > 30:
                    sys.exit(f"run {index}: artefact not updated within 30 s")
                time.sleep(0.001)
            at, line = watcher.wait_for(r"rebuild \d+ (done|failed)", count=index + 2)
            if "done" not in line:
                sys.exit(f"run {index}: {line}")
            to_done.append(at - saved)
            builds.append(float(re.search(r"done in ([\d.]+) s", line).group(1)))  # type: ignore[union-attr]
            time.sleep(0.3)
        code = watcher.stop()
        if code != 0:
            sys.exit(f"watcher exited {code} on SIGINT")
        return {
            "nodes": nodes,
            "runs": runs,
            "debounce_ms": debounce,
            "bootstrap_s": round(bootstrap, 3),
            "save_to_artefact_median_s": round(statistics.median(to_artefact), 3),
            "save_to_artefact_min_s": round(min(to_artefact), 3),
            "save_to_artefact_max_s": round(max(to_artefact), 3),
            "save_to_done_median_s": round(statistics.median(to_done), 3),
            "build_median_s": round(statistics.median(builds), 3),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    """Command line: measure, print, optionally save as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=6, help="6: the example cluster; other: generated")
    parser.add_argument("--runs", type=int, default=15, help="saves to time [default: 15]")
    parser.add_argument("--debounce", type=int, default=150, help="the watcher's --debounce in ms [150]")
    parser.add_argument("--json", action="store_true", help="also write bench/results/watch-<nodes>.json")
    args = parser.parse_args()
    result = measure(args.nodes, args.runs, args.debounce)
    print(f"{result['nodes']} nodes, {result['runs']} saves of patches/cp1.yaml, debounce {args.debounce} ms "
          f"(bootstrap + first promotion: {result['bootstrap_s']:.2f} s)")
    print(f"  save -> artefact replaced: median {result['save_to_artefact_median_s']:.3f} s "
          f"(min {result['save_to_artefact_min_s']:.3f}, max {result['save_to_artefact_max_s']:.3f})")
    print(f"  save -> 'rebuild N done':  median {result['save_to_done_median_s']:.3f} s")
    print(f"  rebuild itself:            median {result['build_median_s']:.3f} s")
    if args.json:
        out = PROJECT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"watch-{args.nodes}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
