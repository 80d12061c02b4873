"""Measuring one command: wall time, peak RSS, sops processes, files written."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Local state that is not part of the repository's content: git's own folder, doit's database,
# the run and ledger locks, and Python's bytecode cache of dodo.py (written by the first run).
EXCLUDED_TOP = (".git",)
EXCLUDED_DIRS = ("__pycache__",)
EXCLUDED_PREFIXES = (".doit.db", ".promote.lock", ".promote-ledger.lock")


def clean_env(home: Path, sops_log: Path) -> dict[str, str]:
    """The environment of a user with an empty HOME (so a fresh age key), logging sops runs."""
    # PROMOTE_SOPS_ENGINE passes (PROMOTE_SOPS_ENGINE=binary measures the sops binary alone).
    # PYTHONDONTWRITEBYTECODE too: a user's installed pipeline has its bytecode cached; without it
    # every run would compile the pipeline's modules from source (~70 ms here).
    env = {key: value for key, value in os.environ.items()
           if (not key.startswith(("SOPS_", "PROMOTE_", "GIT_", "XDG_")) or key == "PROMOTE_SOPS_ENGINE")
           and key != "PYTHONDONTWRITEBYTECODE"}
    env.update(HOME=str(home), PROMOTE_SOPS_LOG=str(sops_log), CI="true",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    return env


def git(path: Path, env: dict[str, str], *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, env=env, capture_output=True, text=True, check=True).stdout


def copy_repo(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


Snapshot = dict[str, tuple[int, int, str]]


def snapshot(root: Path) -> Snapshot:
    """Every file of the work tree (not .git, not local state): mtime, size, content digest."""
    out: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS and (rel_folder != "." or d not in EXCLUDED_TOP)]
        if rel_folder == ".":
            files = [f for f in files if not f.startswith(EXCLUDED_PREFIXES)]
        for name in files:
            path = os.path.join(folder, name)
            try:
                stat = os.lstat(path)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            except OSError:
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            out[rel] = (stat.st_mtime_ns, stat.st_size, digest)
    return out


@dataclass
class FileChanges:
    written: list[str] = field(default_factory=list)  # new, or mtime/size changed
    removed: list[str] = field(default_factory=list)
    artefacts_changed: list[str] = field(default_factory=list)  # encrypted/*.encrypted.yaml bytes differ


def diff(before: Snapshot, after: Snapshot) -> FileChanges:
    changes = FileChanges()
    for rel, (mtime, size, digest) in after.items():
        old = before.get(rel)
        if old is None or old[0] != mtime or old[1] != size or old[2] != digest:
            changes.written.append(rel)
        if rel.startswith("encrypted/") and rel.endswith(".encrypted.yaml") and (old is None or old[2] != digest):
            changes.artefacts_changed.append(rel)
    changes.removed = sorted(set(before) - set(after))
    for rel in changes.removed:
        if rel.startswith("encrypted/") and rel.endswith(".encrypted.yaml"):
            changes.artefacts_changed.append(rel)
    return changes


@dataclass
class Run:
    """One measured command."""

    argv: list[str]
    wall: float
    returncode: int
    peak_rss_kb: int
    cpu: float = 0.0  # user + system seconds of the run and every process it waited for (sops, workers)
    sops_encrypt: int = 0
    sops_decrypt: int = 0
    sops_other: int = 0
    files: FileChanges = field(default_factory=FileChanges)
    # git diff --numstat of the changed node's artefact (one_node only): lines in, lines out.
    artefact_lines: tuple[int, int] | None = None
    stdout: str = ""
    stderr: str = ""

    def summary(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall, 4),
            "returncode": self.returncode,
            "cpu_s": round(self.cpu, 4),
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "sops_encrypt": self.sops_encrypt,
            "sops_decrypt": self.sops_decrypt,
            "sops_other": self.sops_other,
            "files_written": len(self.files.written),
            "files_removed": len(self.files.removed),
            "artefacts_changed": len(self.files.artefacts_changed),
            "sops_processes": self.sops_encrypt + self.sops_decrypt + self.sops_other,
            "artefact_lines": list(self.artefact_lines) if self.artefact_lines else None,
        }


def artefact_numstat(repo: Path, env: dict[str, str], node: str) -> tuple[int, int] | None:
    """Lines added and deleted in ``node``'s artefact since the last commit (git diff --numstat)."""
    out = git(repo, env, "diff", "HEAD", "--no-textconv", "--numstat", "--", "encrypted/")
    for line in out.splitlines():
        added, deleted, path = line.split("\t", 2)
        if path.endswith(f"-{node}.encrypted.yaml") and added != "-":
            return int(added), int(deleted)
    return None


def run(argv: list[str], cwd: Path, env: dict[str, str], track: Path | None = None) -> Run:
    """Run ``argv`` and measure it; ``track`` is the tree whose files are compared before/after."""
    log = Path(env["PROMOTE_SOPS_LOG"])
    log.write_text("")
    before = snapshot(track) if track else {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        # wait4 gives this child's own rusage: peak RSS of the run (its largest process).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    result = Run(argv=argv, wall=wall, returncode=process.returncode, peak_rss_kb=usage.ru_maxrss,
                 cpu=usage.ru_utime + usage.ru_stime, stdout=stdout, stderr=stderr)
    for line in log.read_text().splitlines():
        if line.startswith("--encrypt"):
            result.sops_encrypt += 1
        elif line.startswith("--decrypt"):
            result.sops_decrypt += 1
        elif line:
            result.sops_other += 1
    if track:
        result.files = diff(before, snapshot(track))
    return result


def doit(path: Path, env: dict[str, str], *args: str) -> Run:
    """`python -m doit ARGS` in the repo, as a user (and the test suite) runs it."""
    return run([sys.executable, "-m", "doit", *args], path, env, track=path)


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    count = len(ordered)
    if not count:
        return {}
    mid = count // 2
    median = ordered[mid] if count % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    def quantile(q: float) -> float:
        pos = (count - 1) * q
        low = int(pos)
        high = min(low + 1, count - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    return {"median": median, "min": ordered[0], "max": ordered[-1],
            "q1": quantile(0.25), "q3": quantile(0.75), "n": count}
