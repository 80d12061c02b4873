"""Encrypt: a node's rendered config into its SOPS artefact, only when its content changed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import node_artefact, rendered_path
from pipeline.promote.intent import describe_trigger
from pipeline.promote.render import _in_worker_process, _rendered_facts, _rule_shape, _sops_config, render
from pipeline.sops import metadata
from pipeline.sops import runner as sops
from pipeline.state import ledger
from pipeline.state.integrity import verify_ciphertext
from pipeline.state.journal import journal_entry, journaled_entry
from pipeline.state.ledger import LEDGER_FILE, Ledger, file_identity, sha256_file
from pipeline.talos.inventory import Inventory, Node
from pipeline.talos.yaml import load_documents


@dataclass(frozen=True)
class EncryptOutcome:
    """What encrypting one node did: rewrote its artefact, or found it already current."""

    node: str
    rewritten: bool
    trigger: str












def _same_recipients(text: str, wanted: tuple[str, ...]) -> bool:
    return metadata.artefact_recipients(text) == tuple(sorted(wanted))














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
    journaled = journaled_entry(inventory.root, node.name)
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
            parsed.extend(doc for doc in load_documents(text, plain) if doc is not None)
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
                old = [doc for doc in load_documents(sops.decrypt(artefact, root), artefact)
                       if doc is not None]
                # Kept artefacts are recorded in the ledger, and the promotion's guard trusts what
                # the ledger records: judge this one now, as if sops had just written it.
                unchanged = old == documents() and not metadata.scan_artefact(current_text, artefact)
            except PipelineError:
                unchanged = False

    trigger = describe_trigger(entry, inputs, artefact_known)
    if not unchanged:
        ciphertext = sops.encrypt(plain, artefact, root)
        findings = metadata.scan_artefact(ciphertext.decode(errors="replace"), artefact)
        if findings:
            raise PipelineError(f"sops output failed the guard, artefact left as it was: {findings[0]}",
                                path=artefact)
        verify_ciphertext(ciphertext, artefact, plain, rendered_path(inventory, node), digest, shape, scanned=True)
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








