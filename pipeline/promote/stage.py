"""The versioned-state stage: git add what changed, drop removed nodes' artefacts, purge plaintext."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from pipeline.layout import (
    ENCRYPTED_DIR,
    RENDERED_DIR,
    SECRETS_ARTEFACT,
    TALOSCONFIG_ARTEFACT,
    base_artefact,
    node_artefact,
)
from pipeline.state import git, ledger
from pipeline.state.journal import JOURNAL_PREFIX as _JOURNAL_PREFIX
from pipeline.state.ledger import LEDGER_FILE
from pipeline.talos.inventory import ROLES, Inventory


def prune_removed_nodes(inventory: Inventory) -> list[str]:
    """Delete the artefacts (and ledger entries) of nodes no longer in the inventory.

    The ledger is committed data, so the path it names is trusted only as far as
    :func:`ledger.confined_artefact` allows: a regular file with an artefact's name directly inside
    the repository's own encrypted/ (no `..`, no symlink, no other folder). A base config, the
    bundle or talosconfig is never a removed node's artefact, whatever the ledger says.
    """
    root = inventory.root
    removed: list[str] = []
    record = ledger.load_ledger(root)
    gone = [name for name in record.nodes if name not in inventory.nodes]
    if not gone:
        return removed
    protected = {SECRETS_ARTEFACT, TALOSCONFIG_ARTEFACT, *(base_artefact(role) for role in ROLES),
                  *(node_artefact(inventory, node) for node in inventory.nodes.values())}
    with ledger.updating(root) as record:
        for name in gone:
            entry = record.nodes.pop(name, None) or {}
            artefact = entry.get("artefact")
            if artefact in protected:
                continue
            path = ledger.confined_artefact(root, artefact)
            if path is not None:
                path.unlink()
                removed.append(artefact)
    return removed


def stage(inventory: Inventory) -> list[str] | None:
    """`git add` the artefacts that changed, and the ledger; None when not in a git repository."""
    root = inventory.root
    if not git.is_repository(root):
        return None
    changed = [
        path for path in git.changed_paths(root, f"{ENCRYPTED_DIR}/")
        # git output is data: only the ledger and artefact names directly inside encrypted/ are staged.
        if path == LEDGER_FILE or ledger.is_artefact_path(path)
    ]
    git.stage(root, changed)
    return changed




def purge_plaintext(root: Path) -> None:
    """Remove every file under rendered/ except the ledger journals (digests only, merged by the next run).

    For a run stopped by a signal: a journal may be locked by the very thread the signal
    interrupted, so it is left for the next run to merge rather than merged here.
    """
    folder = root / RENDERED_DIR
    if not folder.is_dir() or folder.is_symlink():
        return
    for path in folder.iterdir():
        if path.name.startswith(_JOURNAL_PREFIX) and path.is_file() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty


def purge_rendered(root: Path, names: list[str] | None = None) -> None:
    """Remove plaintext under rendered/: the given stems, or everything (and the folder)."""
    folder = root / RENDERED_DIR
    if not folder.is_dir() or folder.is_symlink():
        return
    if names is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for stem in names:
        for path in (folder / f"{stem}.yaml", folder / f".{stem}.intent"):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty
