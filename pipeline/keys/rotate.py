"""Data-key rotation: a new data key for every artefact, verified per file, journaled in the ledger, resumable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.keys.recipients import _explained, recipient_names
from pipeline.keys.rekey import _scratch_copy
from pipeline.keys.rewrite import (
    Emit,
    _check_result,
    _documents,
    _identities_or_fail,
    _now,
    _quiet,
    _replace,
    _save,
    _scratch,
    artefacts,
    carry_forward,
)
from pipeline.layout import ENCRYPTED_DIR
from pipeline.sops import metadata
from pipeline.sops import runner as sops
from pipeline.state import ledger
from pipeline.state.ledger import Ledger, sha256_bytes, sha256_file
from pipeline.talos.inventory import Inventory


@dataclass
class RotateReport:
    """What `doit rotate` did: rotation number, artefacts rotated now, skipped as already done."""

    rotation: int
    rotated: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


def open_rotation(record: Ledger) -> tuple[int, dict[str, dict[str, Any]]] | None:
    """The unfinished rotation in the ledger (number, artefact -> journal entry), if any."""
    numbers = [entry["rotation"] for entry in record.rotations
               if isinstance(entry, dict) and isinstance(entry.get("rotation"), int)]
    if not numbers:
        return None
    last = max(numbers)
    mine = [entry for entry in record.rotations if isinstance(entry, dict) and entry.get("rotation") == last]
    if any("finished" in entry for entry in mine):
        return None
    return last, {entry["artefact"]: entry for entry in mine if "artefact" in entry}


def rotate(inventory: Inventory, emit: Emit = _quiet,
           after_each: Callable[[str], None] | None = None) -> RotateReport:
    """New data key for every artefact (sops rotate), verified and atomic per file, resumable.

    The ledger's ``rotations`` journal gets one entry per artefact (``from``/``to`` ciphertext
    digests) written before the artefact is replaced, then a ``finished`` entry. A rerun after an
    interruption continues the same rotation and skips every artefact already rotated in it.
    """
    root = inventory.root
    names = recipient_names(inventory)
    paths = artefacts(root)
    if not paths:
        raise PipelineError("no artefacts to rotate: run doit first", path=ENCRYPTED_DIR)
    texts = {artefact: (root / artefact).read_text(encoding="utf-8") for artefact in paths}
    _identities_or_fail([(a, metadata.artefact_recipients(texts[a])) for a in paths], names, "rotate")

    record = ledger.load_ledger(root)
    current = open_rotation(record)
    number, journal = current if current else (
        1 + max([e["rotation"] for e in record.rotations
                 if isinstance(e, dict) and isinstance(e.get("rotation"), int)] or [0]), {})
    report = RotateReport(number)
    if current:
        emit(f"rotate: resuming rotation {number}")
    with _scratch("rotate") as scratch:
        for artefact in paths:
            sha = sha256_file(root / artefact)
            done = journal.get(artefact)
            if done and done.get("to") == sha:
                with ledger.locked(root):  # the kill may have come between artefact and ledger
                    record = ledger.load_ledger(root)
                    carry_forward(record, artefact, done["from"], done["to"])
                    _save(root, record)
                report.resumed.append(artefact)
                emit(f"rotate: {artefact}: already rotated in rotation {number}")
                continue
            _rotate_one(root, scratch, artefact, number, names)
            report.rotated.append(artefact)
            emit(f"rotate: {artefact}: new data key, same documents")
            if after_each is not None:
                after_each(artefact)
    with ledger.locked(root):
        record = ledger.load_ledger(root)
        record.rotations.append({"rotation": number, "finished": _now(), "deliberate": "doit rotate",
                                 "artefacts": len(report.rotated) + len(report.resumed)})
        _save(root, record)
    return report


def _rotate_one(root: Path, scratch: Path, artefact: str, number: int, names: dict[str, str]) -> None:
    data, copy = _scratch_copy(root, scratch, artefact)
    before = data.decode()
    try:
        old = _documents(sops.decrypt(artefact, scratch))
        rotated = sops.rotate(artefact, scratch)  # to stdout: the copy is untouched
        copy.write_bytes(rotated)
        new = _documents(sops.decrypt(artefact, scratch))
    except PipelineError as error:
        raise _explained(error, before, names) from None
    after = rotated.decode()
    _check_result(artefact, after, metadata.artefact_recipients(before))
    if new != old:
        raise PipelineError("the rotated artefact decrypts to other documents, left as it was", path=artefact)
    if rotated == data:
        raise PipelineError("sops rotate returned the same bytes, left as it was", path=artefact)
    old_sha, new_sha = sha256_bytes(data), sha256_bytes(rotated)

    def journal(record: Ledger) -> None:
        record.rotations[:] = [e for e in record.rotations if not (
            isinstance(e, dict) and e.get("rotation") == number and e.get("artefact") == artefact)]
        record.rotations.append({"rotation": number, "artefact": artefact, "from": old_sha, "to": new_sha,
                                 "at": _now()})

    _replace(root, artefact, old_sha, rotated, before_write=journal)
