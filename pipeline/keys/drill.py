"""The recovery drill: clone HEAD into a scratch folder with an empty HOME and one key; decrypt, re-render, compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.keys.recipients import describe_keys, recipient_names
from pipeline.keys.rewrite import Emit, _quiet, _scratch, artefacts
from pipeline.layout import node_artefact
from pipeline.promote.render import render_node
from pipeline.sops import identities as keys
from pipeline.sops import metadata
from pipeline.sops import runner as sops
from pipeline.state import git
from pipeline.talos.inventory import INVENTORY_FILE, Inventory, load_inventory
from pipeline.talos.yaml import load_documents


@dataclass(frozen=True)
class DrillLine:
    """One artefact's outcome in a drill: ``ok``, ``cannot decrypt``, ``drifted``, ``cannot re-render``, ``missing``."""

    artefact: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether this artefact was recovered."""
        return self.status == "ok"

    def __str__(self) -> str:
        return f"{self.artefact}: {self.status}{f' ({self.detail})' if self.detail else ''}"


@dataclass
class DrillReport:
    """A drill's outcome: one line per artefact, the key's public key, the commit, the time it took."""

    lines: list[DrillLine]
    public_keys: tuple[str, ...]
    commit: str
    seconds: float

    @property
    def failures(self) -> list[DrillLine]:
        """Artefacts that could not be recovered."""
        return [line for line in self.lines if not line.ok]


def _key_file_identities(key_file: Path) -> tuple[str, ...]:
    try:
        text = key_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("key file does not exist", path=key_file) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineError(f"cannot read the key file ({error.__class__.__name__})", path=key_file) from None
    found = tuple(keys.public_keys_of(text))
    if not found:
        raise PipelineError("no age identity in this file (expected a key file made by age-keygen or doit keygen)",
                            path=key_file)
    return found


def _drill_env(home: Path, key_file: Path) -> dict[str, str]:
    """The environment of a clean machine: empty HOME, only the drilled key, no other sops settings."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SOPS_", "XDG_", "GIT_", "PYTHON"))}
    package_parent = Path(__file__).resolve().parents[2]
    env.update(HOME=str(home), SOPS_AGE_KEY_FILE=str(key_file), PYTHONPATH=str(package_parent),
               PYTHONDONTWRITEBYTECODE="1", GIT_CONFIG_NOSYSTEM="1")
    return env


def drill(root: Path, key_file: Path, emit: Emit = _quiet) -> DrillReport:
    """Recovery drill: clone HEAD into a temp folder, empty HOME, only ``key_file``; decrypt and re-render.

    One line per artefact (ok / cannot decrypt / drifted / cannot re-render / missing). Nothing is
    left behind: plaintext stays in the worker process's memory and the folder is removed on every
    path out, interruptions included.
    """
    started = time.monotonic()
    key_file = key_file.expanduser()
    key_file = (key_file if key_file.is_absolute() else Path.cwd() / key_file).resolve()
    public = _key_file_identities(key_file)
    if not git.is_repository(root):
        raise PipelineError("not a git repository: a drill recovers the committed state (HEAD)", path=root)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=False)
    if head.returncode != 0:
        raise PipelineError("nothing committed yet: a drill recovers HEAD", path=root)
    commit = head.stdout.strip()
    dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                           cwd=root, capture_output=True, text=True, check=False).stdout.strip()
    if dirty:
        emit(f"drill: note: uncommitted changes are not part of this drill (it recovers HEAD {commit})")
    lines: list[DrillLine] = []
    with _scratch("drill") as scratch:
        home, clone = scratch / "home", scratch / "repo"
        home.mkdir(mode=0o700)
        env = _drill_env(home, key_file)
        cloned = subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(root), str(clone)],
                                env=env, cwd=scratch, capture_output=True, text=True, check=False)
        if cloned.returncode != 0:
            detail = (cloned.stderr.strip().splitlines() or ["?"])[-1]
            raise PipelineError(f"git clone of HEAD failed: {detail}", path=root)
        worker = subprocess.Popen(
            [sys.executable, "-P", "-m", "pipeline.keys.drill", "drill-worker", str(clone)],
            env=env, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None
            for raw in worker.stdout:
                item = json.loads(raw)
                line = DrillLine(item["artefact"], item["status"], item.get("detail", ""))
                lines.append(line)
                emit(f"drill: {line}")
            stderr = worker.stderr.read() if worker.stderr else ""
            code = worker.wait()
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
        if code != 0:
            raise RuntimeError(f"the drill worker failed (exit {code}):\n{stderr}")
    return DrillReport(lines, public, commit, time.monotonic() - started)


def _documents(text: str, source: str) -> list[Any]:
    """A decrypted artefact's (or a render's) documents, read as Talos and sops read them (go-yaml v3)."""
    return [doc for doc in load_documents(text, source) if doc is not None]


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Dotted path of the first place two parsed documents differ (never their values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}.{key}".lstrip(".")
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path.lstrip('.') or '(top)'} (length)"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else (path.lstrip(".") or "(top)")


def _drill_worker(clone: Path) -> int:
    """Runs in the drill's clean environment: decrypt every artefact, re-render every node, compare.

    Prints one JSON line per artefact on stdout; plaintext never leaves this process's memory.
    """
    def out(line: DrillLine) -> None:
        print(json.dumps({"artefact": line.artefact, "status": line.status, "detail": line.detail}), flush=True)

    search = keys.find_identities()
    inventory: Inventory | None
    try:
        inventory = load_inventory(clone)
        inventory_error = ""
    except PipelineError as error:
        inventory, inventory_error = None, str(error)
    names = recipient_names(inventory)
    by_artefact = {node_artefact(inventory, node): node for node in inventory.nodes.values()} if inventory else {}
    for artefact in artefacts(clone):
        text = (clone / artefact).read_text(encoding="utf-8")
        try:
            documents = _documents(sops.decrypt(artefact, clone), artefact)
        except PipelineError as error:
            needed = metadata.artefact_recipients(text)
            if not set(needed) & set(search.public_keys):
                detail = (f"encrypted for {describe_keys(needed, names)}, not for this key "
                          f"({', '.join(search.public_keys)})")
            else:
                detail = error.message
            out(DrillLine(artefact, "cannot decrypt", detail))
            continue
        node = by_artefact.get(artefact)
        if node is None or inventory is None:
            out(DrillLine(artefact, "ok"))
            continue
        try:
            rendered = _documents(render_node(inventory, node).text, artefact)
        except PipelineError as error:
            out(DrillLine(artefact, "cannot re-render", str(error)))
            continue
        where = _first_difference(rendered, documents)
        if where is None:
            out(DrillLine(artefact, "ok"))
        else:
            out(DrillLine(artefact, "drifted", f"differs from what cluster.yaml and patches/ render, at {where}"))
    if inventory is None:
        out(DrillLine(INVENTORY_FILE, "cannot re-render", inventory_error))
    else:
        for artefact, node in by_artefact.items():
            if not (clone / artefact).is_file():
                out(DrillLine(artefact, "missing", f"node {node.name} has no artefact at HEAD"))
    return 0


if __name__ == "__main__":  # the drill's worker process
    if len(sys.argv) == 3 and sys.argv[1] == "drill-worker":
        sys.exit(_drill_worker(Path(sys.argv[2])))
    sys.exit("usage: python -m pipeline.keys.drill drill-worker CLONE")
