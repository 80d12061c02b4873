"""Encrypt: a node's rendered config into its SOPS artefact, only when its content changed."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.layout import RENDERED_DIR, node_artefact, rendered_path
from pipeline.promote.intent import describe_trigger
from pipeline.promote.render import (
    DOCUMENTS,
    _in_worker_process,
    _rendered_facts,
    _rule_shape,
    _sops_config,
    materialise,
    render,
)
from pipeline.sops import engine, metadata
from pipeline.sops import runner as sops
from pipeline.sops.config import CreationRule
from pipeline.state import ledger
from pipeline.state.integrity import verify_ciphertext
from pipeline.state.journal import journal_entry, journaled_entry
from pipeline.state.ledger import LEDGER_FILE, Ledger, file_identity
from pipeline.talos.inventory import Inventory, Node
from pipeline.talos.yaml import load_documents

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the sops metadata only: keys and regexes


@dataclass(frozen=True)
class EncryptOutcome:
    """What encrypting one node did: rewrote its artefact, or found it already current."""

    node: str
    rewritten: bool
    trigger: str
    case: str = ""  # how the artefact got its data key (see Written); "" when it was kept
    fallback: str = ""  # why the sops binary wrote it instead of the engine ("" when it did not)




@dataclass(frozen=True)
class Written:
    """What :func:`write_artefact` produced: the new bytes (None: the previous file already holds
    these documents), the case (``reused``, ``new artefact``, ``unknown artefact``, ``recipients
    changed``, ``rule changed``, ``previous unreadable``) and, when the binary wrote it, why."""

    data: bytes | None
    case: str
    fallback: str = ""


_RULE_KEYS = ("encrypted_regex", "unencrypted_regex", "encrypted_suffix", "unencrypted_suffix", "mac_only_encrypted")


def _engine_options(root: Path, rule: CreationRule) -> dict[str, Any]:
    """The engine's options for ``rule``; EngineUnsupported for whatever needs the binary."""
    config = _sops_config(root)
    if config is not None and _has_stores(config.text):
        raise engine.EngineUnsupported(".sops.yaml sets stores: (a YAML indent the engine does not write)")
    return engine.options_from_creation_rule(rule.raw)


@lru_cache(maxsize=4)
def _has_stores(text: str) -> bool:
    data = yaml.load(text, Loader=_LOADER)
    return isinstance(data, dict) and bool(data.get("stores"))


def _binary_case(previous: bytes, rule: CreationRule) -> str:
    """Whether the sops binary may keep ``previous``'s data key for ``rule`` (the engine's own test, keyless)."""
    text = previous.decode(errors="replace")
    if not _same_recipients(text, rule.recipients):
        return "recipients changed"
    try:
        meta = yaml.load(text, Loader=_LOADER).get("sops") or {}
    except (yaml.YAMLError, AttributeError):
        return "previous unreadable"
    had = {key: meta.get(key) for key in _RULE_KEYS if meta.get(key)}
    wanted = {key: rule.raw.get(key) for key in _RULE_KEYS if rule.raw.get(key)}
    # sops writes its default suffix into files made without any regex or suffix.
    if not any(key in wanted for key in _RULE_KEYS[:4]):
        wanted["unencrypted_suffix"] = "_unencrypted"
    return "reused" if had == wanted else "rule changed"


def _edit_with_binary(root: Path, artefact: str, plain: Path, previous: bytes) -> bytes:
    """``sops edit`` a copy of the artefact to the rendered documents; its temporary plaintext stays in rendered/."""
    scratch = root / RENDERED_DIR / f".sops-edit.{os.getpid()}.{Path(artefact).stem}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700, parents=False)
    try:
        os.chmod(scratch, 0o700)
        copy = scratch / Path(artefact).name
        copy.write_bytes(previous)
        (scratch / "tmp").mkdir(mode=0o700)
        sops.edit_in_place(copy, plain.resolve(), scratch / "tmp", root, artefact)
        return copy.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_artefact(root: Path, artefact: str, plain: Path, rule: CreationRule, previous: bytes | None,
                   case: str = "", documents: list[Any] | None = None,
                   facts: dict[str, Any] | None = None) -> Written:
    """The new bytes of ``artefact`` for the rendered file ``plain``.

    With ``previous`` (an artefact the ledger knows) its data key and each unchanged value's IV are
    kept, so only changed values, ``lastmodified`` and ``mac`` change. ``case`` forces a fresh
    key and names why (``new artefact``, ``unknown artefact``). The in-process engine writes age +
    YAML rules; anything else, or ``PROMOTE_SOPS_ENGINE=binary``, goes through the sops binary
    (``sops edit`` to keep the key, ``sops --encrypt`` for a fresh one). ``documents``: ``plain``'s
    documents as go-yaml types them, when the caller has parsed it already; ``facts``: what render
    handed over (a config it kept in memory is written to ``plain`` when the binary needs a file).
    """
    fallback = ""
    if engine.engine_enabled():
        try:
            options = _engine_options(root, rule)
            if documents is None:
                documents = engine.load_yaml(plain.read_text(encoding="utf-8"), path=str(plain.relative_to(root)))
            result = engine.encrypt_documents(documents, **options, previous=previous,
                                              identities=engine.age_identities(), path=artefact)
        except engine.EngineUnsupported as why:
            fallback = str(why)
        else:
            if result.reason == "unchanged":
                return Written(None, "reused")
            return Written(result.data, case or result.reason)
    if facts is not None:
        materialise(plain, facts)  # the sops binary reads a file
    if previous is not None and not case:
        case = _binary_case(previous, rule)
        if case == "reused":
            return Written(_edit_with_binary(root, artefact, plain, previous), case, fallback)
    return Written(sops.encrypt(plain, artefact, root), case or "new artefact", fallback)


def _rendered_for_engine(plain: Path) -> list[Any] | None:
    """``plain``'s documents as go-yaml types them, or None (engine off, a file it cannot type, unreadable)."""
    if not engine.engine_enabled():
        return None
    try:
        text = plain.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            return None  # cut short: the integrity check reads it again and says so
        return engine.load_yaml(text, path=plain.name)
    except (OSError, UnicodeDecodeError, PipelineError, engine.EngineUnsupported):
        return None


def decrypt_documents(root: Path, artefact: str, ciphertext: bytes) -> list[Any]:
    """An artefact's documents (MAC checked), typed as go-yaml types them: in process when the engine can."""
    if engine.engine_enabled():
        try:
            return engine.decrypt(ciphertext, engine.age_identities(), path=artefact)
        except (engine.EngineUnsupported, PipelineError):
            pass  # the binary decides and words what the engine cannot open (wrong key, tampering, ...)
    return engine.load_yaml(sops.decrypt(artefact, root), path=artefact)


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
    rendered = _rendered_facts(inventory, node, plain)  # handed over in memory, or attached to the file
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
            materialise(plain, rendered)
            text = plain.read_text(encoding="utf-8")
            parsed.extend(doc for doc in load_documents(text, plain) if doc is not None)
        return parsed

    if rendered.get("shape") == shape and "rendered" in rendered:
        digest = rendered["rendered"]
    else:  # .sops.yaml changed since the render, or an older sidecar
        digest = ledger.keyed_digest(documents(), ledger.canonical(shape))

    entry = _ledger_entry(inventory, node)
    try:
        current_bytes: bytes | None = (root / artefact).read_bytes()  # read once: hashed, then parsed
    except FileNotFoundError:
        current_bytes = None
    current_sha = ledger.sha256_bytes(current_bytes) if current_bytes is not None else None
    artefact_known = current_sha is not None and entry.get("artefact_sha256") == current_sha
    unchanged = False
    if current_bytes is not None:
        current_text = current_bytes.decode("utf-8", errors="replace")  # garbage: judged as not SOPS below
        if entry.get("artefact_sha256") == current_sha and digest is not None:
            # New recipients (a rekey) rewrite it too; asked last, as it parses the artefact.
            unchanged = entry.get("rendered") == digest and _same_recipients(current_text, rule.recipients)
        elif not _same_recipients(current_text, rule.recipients):
            unchanged = False
        else:
            # An artefact the ledger does not know (hand-made, checked out, rotated): only a
            # decrypt can tell whether it already holds these documents.
            try:
                old = decrypt_documents(root, artefact, current_text.encode())
                materialise(plain, rendered)
                new = engine.load_yaml(plain.read_text(encoding="utf-8"), path=rendered_path(inventory, node))
                # Kept artefacts are recorded in the ledger, and the promotion's guard trusts what
                # the ledger records: judge this one now, as if sops had just written it.
                unchanged = old == new and not metadata.scan_artefact(current_text, artefact)
            except (PipelineError, engine.EngineUnsupported):
                unchanged = False

    trigger = describe_trigger(entry, inputs, artefact_known)
    case = fallback = ""
    # The rendered file is read and parsed once: what the engine encrypts is what the integrity check
    # compares with render's digest (engine off, or a file it cannot type: the check parses it itself).
    checked = None
    handed = rendered.get(DOCUMENTS) if engine.engine_enabled() else None
    if not unchanged:
        if not handed:
            materialise(plain, rendered)
        checked = handed or _rendered_for_engine(plain)
    if not unchanged:
        if current_sha is None:
            written = write_artefact(root, artefact, plain, rule, None, "new artefact", checked, rendered)
        elif not artefact_known:
            written = write_artefact(root, artefact, plain, rule, None, "unknown artefact", checked, rendered)
        else:
            written = write_artefact(root, artefact, plain, rule, current_bytes, documents=checked, facts=rendered)
        case, fallback = written.case, written.fallback
        if written.data is None:  # the same documents after all (e.g. only the rule's shape moved)
            unchanged = True
    if not unchanged:
        ciphertext = written.data
        assert ciphertext is not None
        findings = metadata.scan_artefact(ciphertext.decode(errors="replace"), artefact)
        if findings:
            raise PipelineError(f"sops output failed the guard, artefact left as it was: {findings[0]}",
                                path=artefact)
        # Documents handed over by render are the very ones its digest was taken of: no second digest.
        verify_ciphertext(ciphertext, artefact, plain, rendered_path(inventory, node),
                          None if handed else digest, shape, scanned=True, documents=checked)
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
    return EncryptOutcome(node.name, rewritten=not unchanged, trigger=trigger,
                          case=case if not unchanged else "", fallback=fallback)


