"""The promotion steps for one node, and the repo-wide stage and purge; no doit in here."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.guard import scan as guard
from pipeline.promote import talosctl
from pipeline.promote.render import (
    ENCRYPTED_DIR,
    RENDERED_DIR,
    Rendered,
    intent_digest,
    node_artefact,
    render_node,
    rendered_path,
    source_digest,
    write_plaintext,
)
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, SopsConfig, parse_sops_config
from pipeline.state import git, ledger
from pipeline.state.ledger import LEDGER_FILE, Ledger, file_identity, sha256_file
from pipeline.talos.inventory import Inventory, Node

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# What encrypt must know about a rendered file travels with it from render: the intent it was
# rendered from (so the ledger records what was actually rendered even if a patch is saved again
# mid-promotion), its keyed digest and the rule shape. Within one process (doit -n 1, -P thread,
# watch) it is handed over in memory, tied to the file's identity; a `doit -n N` worker process
# also attaches it to the file (see _attach_facts), since the encrypt step may run in another
# worker. A file creation is the dearest step of a render on many file systems: neither makes one.
_HANDOFF: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _intent_sidecar(inventory: Inventory, node: Node) -> Path:
    return inventory.root / RENDERED_DIR / f".{inventory.artefact_name(node)}.intent"


def _in_worker_process() -> bool:
    # doit -n N runs tasks in multiprocessing workers; doit has imported multiprocessing by then.
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


# Across worker processes the facts ride on the rendered file itself, as an extended attribute of
# its inode (a re-render makes a new inode, so they can never describe other content); a file
# system without user attributes gets the sidecar file instead.
_FACTS_ATTRIBUTE = "user.talos-promote.render"


def _attach_facts(inventory: Inventory, node: Node, path: Path, facts: dict[str, Any]) -> None:
    data = json.dumps(facts, separators=(",", ":")).encode()
    try:
        os.setxattr(path, _FACTS_ATTRIBUTE, data, follow_symlinks=False)
    except OSError:  # ENOTSUP, or too large for this file system
        write_plaintext(_intent_sidecar(inventory, node), data.decode())


def _rendered_facts(inventory: Inventory, node: Node, plain: Path) -> dict[str, Any] | None:
    """What the render of ``plain`` recorded for encrypt (None: unknown here, render again)."""
    handed = _HANDOFF.pop(str(plain), None)
    if handed is not None and handed[0] == file_identity(plain):
        return handed[1]
    try:
        facts = json.loads(os.getxattr(plain, _FACTS_ATTRIBUTE, follow_symlinks=False))
    except (OSError, ValueError):
        try:
            facts = json.loads(_intent_sidecar(inventory, node).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return facts if isinstance(facts, dict) and "inputs" in facts else None


def is_current(inventory: Inventory, record: Ledger, node: Node,
               last_render: Mapping[str, Any] | None = None) -> bool:
    """Whether ``node``'s artefact is what its intent renders today, judged from the ledger alone.

    No decryption and no doit database: this is what makes a fresh clone a no-op.
    Bad input counts as "not current" so that the task runs and reports it.
    ``last_render``: what :func:`render_values` returned the last time this node was rendered
    here (doit keeps it): when the node's sources are still those, their intent is known without
    templating and parsing the patches again.
    """
    entry = record.nodes.get(node.name)
    if not entry or entry.get("artefact") != node_artefact(inventory, node):
        return False
    try:
        known = (bool(last_render) and last_render.get("intent") == entry.get("intent")
                 and last_render.get("source") == source_digest(inventory, node))
        if not known and entry.get("intent") != intent_digest(inventory, node):
            return False
    except PipelineError:
        return False
    return sha256_file(inventory.root / node_artefact(inventory, node)) == entry.get("artefact_sha256")


def render(inventory: Inventory, node: Node) -> Path:
    """Render ``node`` to rendered/<cluster>-<node>.yaml (0600 in a 0700 folder)."""
    return _render(inventory, node)[0]


def render_values(inventory: Inventory, node: Node) -> dict[str, Any]:
    """Render ``node`` like :func:`render`; returns the digests ``is_current(last_render=...)`` takes."""
    result = _render(inventory, node)[1]
    return {"source": result.source, "intent": result.intent}


def _render(inventory: Inventory, node: Node) -> tuple[Path, Rendered]:
    result = render_node(inventory, node)
    path = inventory.root / rendered_path(inventory, node)
    write_plaintext(path, result.text)
    if talosctl.binary() is not None:
        talosctl.validate(path, f"node {node.name}")  # Talos's own validator, when it is installed
    # The keyed digest is taken here, while the documents are in memory: encrypt need not parse
    # the rendered file again (a few ms a node, which adds up over a fleet).
    shape = _rule_shape(inventory.root, node_artefact(inventory, node))
    digest = ledger.keyed_digest(result.documents, ledger.canonical(shape)) if shape is not None else None
    facts = {"inputs": result.inputs, "rendered": digest, "shape": shape}
    identity = file_identity(path)
    if identity is not None:
        _HANDOFF[str(path)] = (identity, facts)
    if _in_worker_process():
        _attach_facts(inventory, node, path, facts)
    return path, result


def _rule_shape(root: Path, artefact: str) -> dict[str, Any] | None:
    """What the creation rule for ``artefact`` encrypts (None: no rule matches).

    It is part of what the artefact encodes (a new regex means re-encrypt); who it is encrypted
    for is compared on the artefact itself, and is `doit rekey`'s business.
    """
    config = _sops_config(root)
    rule = config.rule_for(artefact) if config else None
    if rule is None:
        return None
    return {key: rule.raw.get(key) for key in ("encrypted_regex", "unencrypted_regex", "encrypted_suffix",
                                               "unencrypted_suffix", "mac_only_encrypted")}


@dataclass(frozen=True)
class EncryptOutcome:
    """What encrypting one node did: rewrote its artefact, or found it already current."""

    node: str
    rewritten: bool
    trigger: str


def _named(inputs: Any) -> dict[str, str]:
    # Tolerant: a hand-resolved or older ledger must never crash a promotion.
    if not isinstance(inputs, list):
        return {}
    return dict(item.rsplit(" ", 1) for item in inputs if isinstance(item, str) and " " in item)


def describe_trigger(entry: dict[str, Any], inputs: list[str], artefact_known: bool) -> str:
    """Why a node was redone, in the user's terms: which intent file changed, new, base changed."""
    if not entry:
        return "new"
    before = _named(entry.get("inputs"))
    now = _named(inputs)
    if not before:
        return "first promotion recorded"
    changed = [name for name in now if before.get(name) != now[name]]
    changed += [f"{name} removed" for name in before if name not in now]
    labels = {"base": "base config changed", "code": "pipeline code changed", "node": "inventory entry changed"}
    if changed:
        return ", ".join(labels.get(name, f"{name} changed") for name in changed)
    return "intent unchanged" if artefact_known else "artefact changed outside the pipeline"


@lru_cache(maxsize=4)
def _parse_sops_config(text: str) -> SopsConfig:
    return parse_sops_config(text)


def _sops_config(root: Path) -> SopsConfig | None:
    """`.sops.yaml`, read and parsed once per process while the file stays the same (it is asked per node)."""
    identity = file_identity(root / SOPS_CONFIG)
    if identity is None:
        return None
    return _read_sops_config(str(root / SOPS_CONFIG), *identity)


@lru_cache(maxsize=4)
def _read_sops_config(path: str, inode: int, mtime_ns: int, size: int) -> SopsConfig:
    with open(path, encoding="utf-8") as handle:
        return _parse_sops_config(handle.read())


def _same_recipients(text: str, wanted: tuple[str, ...]) -> bool:
    return guard.artefact_recipients(text) == tuple(sorted(wanted))


# Each encrypt task appends its ledger entry to a journal of its process (rendered/.ledger-journal.<pid>,
# one JSON line per node); the next action that reads the ledger (promote, stage, check...), the end
# of the run, or the start of the next writing run merges them all in one locked read-modify-write.
# Rewriting the whole ledger per node made a fleet's promotion quadratic, `doit -n N` workers share
# nothing but files, and one file per process (not per node) keeps file creations off the per-node
# path. An entry is merged only while the artefact on disk is the one it describes, so a journal
# left by a killed run is merged later if still true and dropped otherwise (a torn last line is
# skipped); and an artefact the ledger does not know is decrypted and compared, never re-encrypted
# blindly. Appends and the merge hold the journal's flock; the merge unlinks a journal it has read,
# and a writer that finds its journal unlinked opens a new one, so no entry is lost in between.
_JOURNAL_PREFIX = ".ledger-journal."
_journal: dict[str, tuple[int, int]] = {}  # repo root -> (pid, fd) of this process's journal
_journaled: dict[str, dict[str, dict[str, Any]]] = {}  # repo root -> node -> entry not yet merged here


def _journal_fd(root: Path) -> int:
    key = str(root)
    held = _journal.get(key)
    if held is not None and held[0] == os.getpid():
        return held[1]
    # A forked worker must not share its parent's descriptor: flock belongs to the open file.
    folder = root / RENDERED_DIR
    if folder.is_symlink():
        raise PipelineError("refusing to write through a symlink: remove it", path=f"{RENDERED_DIR}/")
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / f"{_JOURNAL_PREFIX}{os.getpid()}",
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    _journal[key] = (os.getpid(), fd)
    return fd


def _forget_journal(root: Path) -> None:
    held = _journal.pop(str(root), None)
    if held is not None and held[0] == os.getpid():
        with contextlib.suppress(OSError):
            os.close(held[1])


def journal_entry(root: Path, name: str, entry: dict[str, Any]) -> None:
    """Append ``name``'s ledger entry to this process's journal (merged by :func:`flush_ledger`)."""
    line = (json.dumps({"node": name, "entry": entry}, separators=(",", ":")) + "\n").encode()
    for _attempt in range(3):
        fd = _journal_fd(root)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            merged = os.fstat(fd).st_nlink == 0  # merged (or purged) since it was opened
            if not merged:
                os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if not merged:
            break
        _forget_journal(root)  # and start a new one
    else:
        raise PipelineError("could not append to the ledger journal", path=f"{RENDERED_DIR}/")
    _journaled.setdefault(str(root), {})[name] = entry


def _read_journal(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The entries of one journal (locked, then unlinked so its writer starts a new one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    entries = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        for raw in data.splitlines():
            try:
                item = json.loads(raw)
                name, entry = item["node"], item["entry"]
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
            if isinstance(name, str) and isinstance(entry, dict):
                entries.append((name, entry))
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
    return entries


def flush_ledger(root: Path) -> None:
    """Merge the ledger entries that ``encrypt(..., defer_ledger=True)`` journaled into the ledger."""
    folder = root / RENDERED_DIR
    _journaled.pop(str(root), None)
    if not folder.is_dir() or folder.is_symlink():
        return
    journals = sorted(folder.glob(f"{_JOURNAL_PREFIX}*"))
    if not journals:
        return
    with ledger.updating(root) as record:
        merged: list[Path] = []
        for path in journals:
            for name, entry in _read_journal(path):
                artefact = entry.get("artefact")
                if isinstance(artefact, str) and artefact.startswith(f"{ENCRYPTED_DIR}/") \
                        and sha256_file(root / artefact) == entry.get("artefact_sha256"):
                    record.nodes[name] = entry
                    merged.append(root / artefact)
        # Encrypt writes artefacts without an fsync each (a kill never sees a partial file, and
        # one sync per node was a tenth of a fleet's promotion); the ledger never records an
        # artefact that a power cut could still take back.
        ledger.make_durable(merged)


def _record_entry(inventory: Inventory, node: Node, entry: dict[str, Any], defer: bool) -> None:
    if defer:
        journal_entry(inventory.root, node.name, entry)
        return
    ledger.make_durable([inventory.root / entry["artefact"]])
    with ledger.updating(inventory.root) as record:
        record.nodes[node.name] = entry


@lru_cache(maxsize=2)
def _parse_ledger_file(path: str, inode: int, mtime_ns: int, size: int) -> Ledger:
    with open(path, encoding="utf-8") as handle:
        return ledger.parse_ledger(handle.read())


def _ledger_entry(inventory: Inventory, node: Node) -> dict[str, Any]:
    """``node``'s ledger entry (journaled here or in the ledger); the ledger is parsed once while it stays the same."""
    journaled = _journaled.get(str(inventory.root), {}).get(node.name)
    if journaled is not None:
        return journaled
    path = inventory.root / LEDGER_FILE
    identity = file_identity(path)
    if identity is None:
        return {}
    record = _parse_ledger_file(str(path), *identity)
    return record.nodes.get(node.name) or {}


def encrypt(inventory: Inventory, node: Node, *, defer_ledger: bool = False) -> EncryptOutcome:
    """Encrypt ``node``'s rendered config into its artefact, unless the artefact already holds it.

    The artefact is replaced atomically and only after sops succeeded and the result passed the
    keyless guard; any failure leaves the previous artefact as it was. ``defer_ledger``: journal the
    ledger entry for :func:`flush_ledger` (the doit graph flushes before anything reads the ledger,
    and at the end of the run).
    """
    root = inventory.root
    artefact = node_artefact(inventory, node)
    plain = root / rendered_path(inventory, node)
    rendered = _rendered_facts(inventory, node, plain) if plain.is_file() else None
    if rendered is None:
        render(inventory, node)  # e.g. `doit encrypt:cp1` after a purge
        rendered = _rendered_facts(inventory, node, plain)
        if rendered is None:
            raise PipelineError("rendered config vanished before it could be encrypted",
                              path=rendered_path(inventory, node))
    inputs = rendered["inputs"]
    intent = ledger.sha256_bytes(ledger.canonical(inputs))

    config = _sops_config(root)
    rule = config.rule_for(artefact) if config else None
    if rule is None:
        raise PipelineError("no .sops.yaml creation rule matches this artefact path", path=artefact)
    shape = _rule_shape(root, artefact)
    parsed: list[Any] = []

    def documents() -> list[Any]:
        if not parsed:
            text = plain.read_text(encoding="utf-8")
            parsed.extend(doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None)
        return parsed

    if rendered.get("shape") == shape and "rendered" in rendered:
        digest = rendered["rendered"]
    else:  # .sops.yaml changed since the render, or an older sidecar
        digest = ledger.keyed_digest(documents(), ledger.canonical(shape))

    entry = _ledger_entry(inventory, node)
    current_sha = sha256_file(root / artefact)
    artefact_known = current_sha is not None and entry.get("artefact_sha256") == current_sha
    unchanged = False
    if current_sha is not None:
        current_text = (root / artefact).read_text(encoding="utf-8")
        if not _same_recipients(current_text, rule.recipients):
            unchanged = False
        elif entry.get("artefact_sha256") == current_sha and digest is not None:
            unchanged = entry.get("rendered") == digest
        else:
            # An artefact the ledger does not know (hand-made, checked out, rotated): only a
            # decrypt can tell whether it already holds these documents.
            try:
                old = [doc for doc in yaml.load_all(sops.decrypt(artefact, root), Loader=_LOADER)
                       if doc is not None]
                # Kept artefacts are recorded in the ledger, and the promotion's guard trusts what
                # the ledger records: judge this one now, as if sops had just written it.
                unchanged = old == documents() and not guard.scan_artefact(current_text, artefact)
            except PipelineError:
                unchanged = False

    trigger = describe_trigger(entry, inputs, artefact_known)
    if not unchanged:
        ciphertext = sops.encrypt(plain, artefact, root)
        findings = guard.scan_artefact(ciphertext.decode(errors="replace"), artefact)
        if findings:
            raise PipelineError(f"sops output failed the guard, artefact left as it was: {findings[0]}",
                                path=artefact)
        # Synced before the ledger records it (flush_ledger), in one batch at the end of the run; a
        # `doit -n N` worker syncs its own artefacts as it goes, in parallel, off that serial tail.
        ledger.atomic_write(root / artefact, ciphertext, durable=_in_worker_process())
        current_sha = ledger.sha256_bytes(ciphertext)

    _record_entry(inventory, node, {
        "artefact": artefact,
        "intent": intent,
        "inputs": inputs,
        "artefact_sha256": current_sha,
        "rendered": digest,
    }, defer_ledger)
    return EncryptOutcome(node.name, rewritten=not unchanged, trigger=trigger)


def prune_removed_nodes(inventory: Inventory) -> list[str]:
    """Delete the artefacts (and ledger entries) of nodes no longer in the inventory."""
    root = inventory.root
    removed: list[str] = []
    record = ledger.load_ledger(root)
    gone = [name for name in record.nodes if name not in inventory.nodes]
    if not gone:
        return removed
    with ledger.updating(root) as record:
        for name in gone:
            entry = record.nodes.pop(name, None) or {}
            artefact = entry.get("artefact")
            if artefact and artefact.startswith(f"{ENCRYPTED_DIR}/") and (root / artefact).is_file():
                (root / artefact).unlink()
                removed.append(artefact)
    return removed


def stage(inventory: Inventory) -> list[str] | None:
    """`git add` the artefacts that changed, and the ledger; None when not in a git repository."""
    root = inventory.root
    if not git.is_repository(root):
        return None
    changed = [
        path for path in git.changed_paths(root, f"{ENCRYPTED_DIR}/")
        if path == LEDGER_FILE or (path.startswith(f"{ENCRYPTED_DIR}/") and path.endswith(".encrypted.yaml"))
    ]
    git.stage(root, changed)
    return changed


def keep_rendered() -> bool:
    """Whether the user asked to keep plaintext after a promotion (`doit keep=1` or PROMOTE_KEEP=1)."""
    try:
        from doit import get_var

        value = get_var("keep", None)
    except Exception:  # outside a doit run
        value = None
    value = value if value is not None else os.environ.get("PROMOTE_KEEP", "")
    return str(value).lower() in ("1", "true", "yes", "on")


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
