"""doit tasks for the key lifecycle: `keygen`, `rekey`, `rotate` and the recovery `drill`.

They are called by name, never part of the default promotion. The logic is in ``keyring.py``;
here bad input becomes a one-line task failure (exit 1), never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from pipeline.errors import PipelineError
from pipeline.promote import encrypt as promotion
from pipeline.sops import runner as sops
from pipeline.state import lock as runlock
from pipeline.talos.inventory import Inventory, load_inventory

TaskDict = dict[str, Any]


def _root() -> Path:
    # doit runs from the folder of dodo.py: that is the repository.
    return Path.cwd()


def _writer_inventory() -> Inventory:
    """The inventory, for a task that rewrites artefacts: it holds the repository's run lock first."""
    runlock.acquire(_root())  # a no-op when dodo.py's import already took it
    return load_inventory(_root())


class _Lines:
    """Collects an action's report lines; printed by the reporter on success, to stderr on failure."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def flush_to_stderr(self) -> None:
        for line in self.lines:
            print(f"  {line}", file=sys.stderr, flush=True)


def _run(func: Callable[..., dict[str, Any]], **params: Any) -> Any:
    """Run ``func(lines, **params)``: bad input and Ctrl-C become a task failure (exit 1, one line)."""
    runs = sops.runs_in_this_thread()
    lines = _Lines()
    try:
        values = func(lines, **params)
    except PipelineError as error:
        lines.flush_to_stderr()
        return TaskFailed(str(error))
    except KeyboardInterrupt:
        lines.flush_to_stderr()
        return TaskFailed(f"interrupted: every artefact is whole; run doit {func.__name__} again")
    values["lines"] = [*lines.lines, *values.get("lines", [])]
    values["sops_runs"] = sops.runs_in_this_thread() - runs
    return values


def _stage(inventory: Inventory, lines: _Lines) -> None:
    if promotion.stage(inventory) is None:
        lines("stage: not a git repository, nothing staged")


def rekey(lines: _Lines) -> dict[str, Any]:
    """The `rekey` action."""
    from pipeline import keyring  # imported when a key task runs, not on every `doit`

    inventory = _writer_inventory()
    report = keyring.rekey(inventory, lines)
    lines.lines.extend(f"note: {note}" for note in report.notes)
    if report.config_written:
        lines(f"{keyring.SOPS_CONFIG} was regenerated: review and commit it with the artefacts")
    if report.rekeyed:
        _stage(inventory, lines)
    lines(f"rekey: {len(report.rekeyed)} artefact(s) rekeyed" if report.rekeyed or report.config_written
          else "rekey: every artefact already has the recipients of its creation rule (nothing to do)")
    return {}


def rotate(lines: _Lines) -> dict[str, Any]:
    """The `rotate` action."""
    from pipeline import keyring  # imported when a key task runs, not on every `doit`

    inventory = _writer_inventory()
    report = keyring.rotate(inventory, lines)
    _stage(inventory, lines)
    resumed = f", {len(report.resumed)} already done before an interruption" if report.resumed else ""
    lines(f"rotate: rotation {report.rotation} finished: {len(report.rotated)} artefact(s) got a new data key"
          f"{resumed}; recorded in the ledger")
    return {}


def keygen(lines: _Lines, out: str = "") -> dict[str, Any]:
    """The `keygen` action."""
    from pipeline import keyring  # imported when a key task runs, not on every `doit`

    path, public = keyring.keygen(out, _root())
    lines(f"keygen: new age identity in {path} (mode 0600)")
    lines(f"public key: {public}")
    lines("next: back the file up, add the public key to recipients: in cluster.yaml, run doit rekey")
    return {"public_key": public}


def drill(lines: _Lines, key: str = "") -> dict[str, Any]:
    """The `drill` action."""
    from pipeline import keyring  # imported when a key task runs, not on every `doit`

    if not key:
        raise PipelineError("drill needs --key FILE: the (backup) age key file to recover with")
    report = keyring.drill(_root(), Path(key), lines)
    failures = report.failures
    total = len(report.lines)
    if not total:
        raise PipelineError(f"drill failed: nothing to recover at HEAD {report.commit} (no artefacts committed)")
    if failures and all(line.status == "cannot decrypt" for line in report.lines):
        raise PipelineError(f"drill failed: the key in {key} ({', '.join(report.public_keys)}) opens none of the "
                            f"{total} artefacts at HEAD {report.commit}: {failures[0].detail} · {report.seconds:.2f} s")
    if failures:
        named = ", ".join(f"{line.artefact} ({line.status})" for line in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        raise PipelineError(f"drill failed: {len(failures)} of {total} not recoverable with {key} "
                            f"({', '.join(report.public_keys)}): {named}{more} · {report.seconds:.2f} s")
    lines(f"drill: {total} of {total} recovered from HEAD {report.commit} with {key} alone "
          f"({', '.join(report.public_keys)}) · {report.seconds:.2f} s")
    return {}


def task_keygen() -> TaskDict:
    """Make a new age identity: doit keygen --out FILE (mode 0600, never overwrites, prints the public key)."""
    return {
        "actions": [lambda out: _run(keygen, out=out)],
        "params": [{"name": "out", "long": "out", "type": str, "default": "",
                    "help": "where to write the new key file (outside the repository)"}],
        "doc": task_keygen.__doc__,
        "verbosity": 2,
    }


def task_rekey() -> TaskDict:
    """Re-wrap every artefact for the recipients of .sops.yaml (regenerated from cluster.yaml's recipients:)."""
    return {"actions": [lambda: _run(rekey)], "doc": task_rekey.__doc__, "verbosity": 2}


def task_rotate() -> TaskDict:
    """New data key for every artefact (sops rotate), verified, atomic per file, resumable; in the ledger."""
    return {"actions": [lambda: _run(rotate)], "doc": task_rotate.__doc__, "verbosity": 2}


def task_drill() -> TaskDict:
    """Recovery drill: doit drill --key FILE clones HEAD, empty HOME, only that key; decrypt, re-render, compare."""
    return {
        "actions": [lambda key: _run(drill, key=key)],
        "params": [{"name": "key", "long": "key", "type": str, "default": "",
                    "help": "the age key file to recover with (e.g. your backup copy)"}],
        "doc": task_drill.__doc__,
        "verbosity": 2,
    }
