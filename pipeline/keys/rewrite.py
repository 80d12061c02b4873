"""Shared machinery of rekey and rotate: scratch copies, checked atomic replacement, the ledger carried along.

Every artefact change follows the pipeline's rule: sops works on a copy in a private scratch folder, the
result is checked (keyless inspection, recipients, a decrypt), and only then does it replace the artefact
with a temp file and a rename in the same folder. The ledger is carried along so that the next ``doit``
is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.keys.recipients import _NO_IDENTITY, access_hint
from pipeline.layout import ENCRYPTED_DIR
from pipeline.sops import identities as keys
from pipeline.sops import metadata
from pipeline.state import ledger
from pipeline.state.ledger import LEDGER_FILE, Ledger, sha256_bytes, sha256_file
from pipeline.talos.yaml import load_documents

ARTEFACT_SUFFIX = ".encrypted.yaml"

Emit = Callable[[str], None]


def _quiet(_: str) -> None:
    """An ``emit`` that drops progress lines."""


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def artefacts(root: Path) -> list[str]:
    """Repo-relative paths of every SOPS artefact: each ``encrypted/*.encrypted.yaml``, sorted, then the
    encrypted patches (``patches/**/*.sops.yaml``): rekey, rotate and drill cover them too."""
    folder = root / ENCRYPTED_DIR
    found = sorted(f"{ENCRYPTED_DIR}/{path.name}" for path in folder.glob(f"*{ARTEFACT_SUFFIX}")
                   if path.is_file() and not path.name.startswith(".")) if folder.is_dir() else []
    patches = root / "patches"
    if patches.is_dir():
        found += sorted(path.relative_to(root).as_posix() for pattern in ("*.sops.yaml", "*.sops.yml")
                        for path in patches.rglob(pattern) if path.is_file() and not path.is_symlink()
                        and not path.name.startswith("."))
    return found


def _documents(text: str) -> list[Any]:
    return [doc for doc in load_documents(text, "artefact") if doc is not None]


# --- recipients -------------------------------------------------------------------------------
















SCRATCH_PREFIX = "talos-promote-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_scratch() -> None:
    """Scratch folders of killed runs (their pid is gone): ciphertext only, but never left around."""
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-")[1:2]
        if pid and pid[0].isdigit() and int(pid[0]) != os.getpid() and not _pid_alive(int(pid[0])) \
                and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _scratch(kind: str) -> Iterator[Path]:
    """A private temp folder (0700), ``talos-promote-<kind>-<pid>-*``, removed on every path out.

    Only a SIGKILL can leave one behind; the next rekey, rotate or drill removes it.
    """
    _remove_stale_scratch()
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _save(root: Path, record: Ledger) -> None:
    """Write the ledger (the caller holds ``ledger.locked``)."""
    path = root / LEDGER_FILE
    text = record.to_text()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        ledger.atomic_write(path, text.encode())


def carry_forward(record: Ledger, artefact: str, old: str, new: str) -> None:
    """Tell the ledger an artefact's bytes changed but its content did not (rekey, rotation).

    Node entries that recorded the old ciphertext digest take the new one; node intents that
    named the old digest as their base take the new one too (the base is an input of every node of
    its role), and so does any digest in ``bases``. Entries that did not match the old digest
    were stale before and stay stale: nothing is laundered.
    """
    base_before, base_after = f"base {old}", f"base {new}"
    for entry in record.nodes.values():
        if entry.get("artefact") == artefact and entry.get("artefact_sha256") == old:
            entry["artefact_sha256"] = new
        inputs = entry.get("inputs")
        if isinstance(inputs, list) and base_before in inputs:
            consistent = entry.get("intent") == sha256_bytes(ledger.canonical(inputs))
            entry["inputs"] = [base_after if item == base_before else item for item in inputs]
            if consistent:
                entry["intent"] = sha256_bytes(ledger.canonical(entry["inputs"]))
    for name, value in list(record.bases.items()):
        if value == old:
            record.bases[name] = new


def _replace(root: Path, artefact: str, snapshot_sha: str, data: bytes,
             before_write: Callable[[Ledger], None] | None = None) -> str:
    """Swap in a checked artefact under the ledger lock, only if nobody changed it meanwhile."""
    new_sha = sha256_bytes(data)
    with ledger.locked(root):
        if sha256_file(root / artefact) != snapshot_sha:
            raise PipelineError("changed by someone else while this ran; left as it is, run again",
                                path=artefact)
        record = ledger.load_ledger(root)
        if before_write is not None:
            before_write(record)  # a journal entry, written ahead of the artefact
            _save(root, record)
        ledger.atomic_write(root / artefact, data)
        carry_forward(record, artefact, snapshot_sha, new_sha)
        _save(root, record)
    return new_sha


def _check_result(artefact: str, after: str, recipients: tuple[str, ...]) -> None:
    """The keyless checks every sops output passes before it may replace an artefact."""
    findings = metadata.scan_artefact(after, artefact)
    if findings:
        raise PipelineError(f"sops output failed the guard, artefact left as it was: {findings[0]}", path=artefact)
    if metadata.artefact_recipients(after) != recipients:
        raise PipelineError("sops output names other recipients than expected, artefact left as it was",
                            path=artefact)


def _identities_or_fail(paths: list[tuple[str, tuple[str, ...]]], names: dict[str, str],
                        what: str) -> keys.KeySearch:
    """Refuse before touching anything when no identity here opens one of the files."""
    search = keys.find_identities()
    if search.external:
        return search  # SOPS_AGE_KEY_CMD or ssh keys: sops will tell
    for artefact, needed in paths:
        if not set(needed) & set(search.public_keys):
            raise PipelineError(f"cannot {what}: {_NO_IDENTITY}: {access_hint(needed, names, search)}",
                                path=artefact)
    return search


# --- rekey ------------------------------------------------------------------------------------
















# --- rotate -----------------------------------------------------------------------------------










# --- keygen -----------------------------------------------------------------------------------




# --- drill ------------------------------------------------------------------------------------
