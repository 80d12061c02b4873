"""doit tasks for the key lifecycle: `keygen`, `rekey`, `rotate` and the recovery `drill`.

They are called by name, never part of the default promotion. The logic is in ``pipeline.keys``;
here bad input becomes a one-line task failure (exit 1), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.promote import stage as staging
from pipeline.talos.inventory import Inventory, load_inventory
from pipeline.wiring import session as sessions
from pipeline.wiring.action import Lines, TaskDict, action
from pipeline.wiring.tasks import NO_ENTRY


def _root() -> Path:
    # doit runs from the folder of dodo.py: that is the repository.
    return sessions.current().root


def _writer_inventory() -> Inventory:
    """The inventory, for a task that rewrites artefacts (the run entry holds the run lock for it)."""
    if not sessions.current().entered:
        raise NO_ENTRY
    return load_inventory(_root())


def _stage(inventory: Inventory, emit: Lines) -> None:
    if staging.stage(inventory) is None:
        emit("stage: not a git repository, nothing staged")


def rekey_action(emit: Lines) -> dict[str, Any]:
    """The `rekey` action (``emit`` collects its report lines)."""
    from pipeline.keys import rekey
    from pipeline.sops import config as sops_config

    inventory = _writer_inventory()
    report = rekey.rekey(inventory, emit)
    emit.lines.extend(f"note: {note}" for note in report.notes)
    if report.config_written:
        emit(f"{sops_config.SOPS_CONFIG} was regenerated: review and commit it with the artefacts")
    if report.rekeyed:
        _stage(inventory, emit)
    emit(f"rekey: {len(report.rekeyed)} artefact(s) rekeyed" if report.rekeyed or report.config_written
          else "rekey: every artefact already has the recipients of its creation rule (nothing to do)")
    return {}


def rotate_action(emit: Lines) -> dict[str, Any]:
    """The `rotate` action (``emit`` collects its report lines)."""
    from pipeline.keys import rotate

    inventory = _writer_inventory()
    report = rotate.rotate(inventory, emit)
    _stage(inventory, emit)
    resumed = f", {len(report.resumed)} already done before an interruption" if report.resumed else ""
    emit(f"rotate: rotation {report.rotation} finished: {len(report.rotated)} artefact(s) got a new data key"
          f"{resumed}; recorded in the ledger")
    return {}


def keygen_action(emit: Lines, out: str = "") -> dict[str, Any]:
    """The `keygen` action (``emit`` collects its report lines)."""
    from pipeline.keys import recipients

    path, public = recipients.keygen(out, _root())
    emit(f"keygen: new age identity in {path} (mode 0600)")
    emit(f"public key: {public}")
    emit("next: back the file up, add the public key to recipients: in cluster.yaml, run doit rekey")
    return {"public_key": public}


def drill_action(emit: Lines, key: str = "") -> dict[str, Any]:
    """The `drill` action (``emit`` collects its report lines)."""
    from pipeline.keys import drill

    if not key:
        raise PipelineError("drill needs --key FILE: the (backup) age key file to recover with")
    report = drill.drill(_root(), Path(key), emit)
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
    emit(f"drill: {total} of {total} recovered from HEAD {report.commit} with {key} alone "
          f"({', '.join(report.public_keys)}) · {report.seconds:.2f} s")
    return {}


def task_keygen() -> TaskDict:
    """Make a new age identity: doit keygen --out FILE (mode 0600, never overwrites, prints the public key)."""
    return {
        "actions": [action(keygen_action)],
        "params": [{"name": "out", "long": "out", "type": str, "default": "",
                    "help": "where to write the new key file (outside the repository)"}],
        "doc": task_keygen.__doc__,
        "verbosity": 2,
    }


def task_rekey() -> TaskDict:
    """Re-wrap every artefact for the recipients of .sops.yaml (regenerated from cluster.yaml's recipients:)."""
    return {"actions": [action(rekey_action, writes=True)], "doc": task_rekey.__doc__, "verbosity": 2}


def task_rotate() -> TaskDict:
    """New data key for every artefact (sops rotate), verified, atomic per file, resumable; in the ledger."""
    return {"actions": [action(rotate_action, writes=True)], "doc": task_rotate.__doc__, "verbosity": 2}


def task_drill() -> TaskDict:
    """Recovery drill: doit drill --key FILE clones HEAD, empty HOME, only that key; decrypt, re-render, compare."""
    return {
        "actions": [action(drill_action, reveals=True)],  # its workers decrypt: a failure is redacted fully
        "params": [{"name": "key", "long": "key", "type": str, "default": "",
                    "help": "the age key file to recover with (e.g. your backup copy)"}],
        "doc": task_drill.__doc__,
        "verbosity": 2,
    }
