"""What an artefact says without a key: is it a whole SOPS file, which fields are ENC[...], who can open it.

Composed to YAML nodes only (no Python objects), which keeps a fleet's keyless scans fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from pipeline.sops.config import SENSITIVE_FIELDS
from pipeline.sops.goyaml import inline_text, read_written

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


WHOLE_FILE_ARTEFACTS = ("secrets.encrypted.yaml", "talosconfig.encrypted.yaml", "vars.encrypted.yaml")


# Certificates are public; everything else in the sensitive set must be ciphertext in git.
_GUARDED = frozenset(SENSITIVE_FIELDS) - {"crt"}


_ENC = re.compile(r"^ENC\[[A-Z0-9_]+,data:")


_CONFLICT = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)


_CONFLICT_HINT = ("take either side (git checkout --ours/--theirs -- {path}), resolve the intent, "
                  "then run doit to re-promote")


_NULLS = frozenset(("", "~", "null", "Null", "NULL"))


_NODE_TAGS = {yaml.ScalarNode: "tag:yaml.org,2002:str", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


class _NodeLoader(_LOADER):  # type: ignore[misc,valid-type]
    """Composes YAML nodes with the one tag distinction the guard needs (null or not): 3x cheaper."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0] and value in _NULLS:
            return "tag:yaml.org,2002:null"
        return _NODE_TAGS.get(kind, "tag:yaml.org,2002:map")


def _node_leaves(node: yaml.Node, path: str) -> Iterator[tuple[str, yaml.ScalarNode]]:
    if isinstance(node, yaml.MappingNode):
        for key, item in node.value:
            yield from _node_leaves(item, f"{path}.{key.value}" if path else str(key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _node_leaves(item, f"{path}[{index}]")
    else:
        yield path, node


def _node_is_ciphertext(node: yaml.ScalarNode) -> bool:
    # sops leaves empty values alone; null and "" carry no secret.
    return node.tag.endswith(":null") or node.value == "" or bool(_ENC.match(node.value))


def _plaintext_sensitive(node: yaml.Node, path: str, guarded: bool) -> Iterator[str]:
    """Dotted paths of sensitive values that are not ENC[...] (whole subtrees under a sensitive key)."""
    if guarded:
        for leaf_path, leaf in _node_leaves(node, path):
            if not _node_is_ciphertext(leaf):
                yield leaf_path
        return
    if isinstance(node, yaml.MappingNode):
        for key, item in node.value:
            yield from _plaintext_sensitive(item, f"{path}.{key.value}" if path else str(key.value),
                                            key.value in _GUARDED)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _plaintext_sensitive(item, f"{path}[{index}]", False)


@dataclass(frozen=True)
class ArtefactScan:
    """What one read of an artefact says: its findings, and who its data key is wrapped for."""

    findings: list[str]
    recipients: tuple[str, ...]


def _age_entries(node: yaml.Node) -> Iterator[str]:
    for item in node.value if isinstance(node, yaml.SequenceNode) else ():
        if isinstance(item, yaml.MappingNode):
            yield from (value.value for key, value in item.value
                        if key.value == "recipient" and isinstance(value, yaml.ScalarNode))


def _recipients(meta: yaml.MappingNode) -> tuple[str, ...]:
    found: set[str] = set()
    for key, value in meta.value:
        if key.value == "age":
            found.update(_age_entries(value))
        elif key.value == "key_groups" and isinstance(value, yaml.SequenceNode):
            for group in value.value:
                if isinstance(group, yaml.MappingNode):
                    for group_key, group_value in group.value:
                        if group_key.value == "age":
                            found.update(_age_entries(group_value))
    return tuple(sorted(found))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _has_mac(meta: yaml.Node | None) -> bool:
    return isinstance(meta, yaml.MappingNode) and any(
        key.value == "mac" and isinstance(value, yaml.ScalarNode) and bool(value.value) for key, value in meta.value)


def _has_complex_key(node: yaml.Node) -> bool:
    if isinstance(node, yaml.MappingNode):
        return any(not isinstance(key, yaml.ScalarNode) or _has_complex_key(item) for key, item in node.value)
    if isinstance(node, yaml.SequenceNode):
        return any(_has_complex_key(item) for item in node.value)
    return False


def _plaintext_findings(where: str, body: Any, whole_file: bool, leaves: Callable[[Any, str], Iterator[Any]],
                        is_ciphertext: Callable[[Any], bool], sensitive: Callable[[Any, str, bool], Iterator[str]],
                        ) -> list[str]:
    """The one judgement of a document's body, on either reading of it (YAML nodes, or typed values):
    a whole-file artefact must have every leaf ENC[...], a node's artefact every sensitive field."""
    if whole_file:
        plain = [leaf_path for leaf_path, leaf in leaves(body, "") if not is_ciphertext(leaf)]
    else:
        plain = list(sensitive(body, "", False))
    return [f"{where}: field {field} is plaintext (must be ENC[...])" for field in plain]


def inspect_artefact(text: str, path: str, *, parse: bool = False) -> ArtefactScan:
    """One pass over an artefact. A file in the layout sops writes is read line by line (``read_written``);
    any other text is composed to YAML nodes only (no Python objects). ``parse`` always composes."""
    if _CONFLICT.search(text):
        return ArtefactScan([f"{path}: git conflict markers: {_CONFLICT_HINT.format(path=path)}"], ())
    written = None if parse else read_written(text)
    if written is not None:
        return _inspect_written(written, path)
    try:
        documents = [node for node in yaml.compose_all(text, Loader=_NodeLoader)
                     if node is not None and not _is_null(node)]
    except yaml.YAMLError:
        return ArtefactScan([f"{path}: not a SOPS file (not valid YAML)"], ())
    if not documents:
        return ArtefactScan([f"{path}: not a SOPS file (empty)"], ())
    whole_file = PurePosixPath(path).name in WHOLE_FILE_ARTEFACTS
    findings: list[str] = []
    recipients: tuple[str, ...] = ()
    for index, doc in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
        pairs = doc.value if isinstance(doc, yaml.MappingNode) else []
        meta = next((value for key, value in pairs if key.value == "sops"), None)
        if not _has_mac(meta):
            findings.append(f"{where}: not a SOPS file (no sops metadata)")
            continue
        if index == 0 and isinstance(meta, yaml.MappingNode):
            recipients = _recipients(meta)
        if _has_complex_key(doc):
            # sops never writes one (``? {token: x}: y``); its content would hide from the walk below.
            findings.append(f"{where}: not a SOPS file (a mapping key that is a list or mapping)")
            continue
        body = yaml.MappingNode("tag:yaml.org,2002:map", [(key, value) for key, value in pairs if key.value != "sops"])
        findings.extend(_plaintext_findings(where, body, whole_file,
                                            _node_leaves, _node_is_ciphertext, _plaintext_sensitive))
    return ArtefactScan(findings, recipients)


# The same judgement on documents read by ``read_written`` (typed values, not nodes): null is None,
# and a value is ciphertext when it is None, "" or an ENC[...] string.


def _value_is_ciphertext(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, str) and bool(_ENC.match(value)))


def _value_leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _value_leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _value_leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def _value_plaintext_sensitive(value: Any, path: str, guarded: bool) -> Iterator[str]:
    if guarded:
        yield from (leaf_path for leaf_path, leaf in _value_leaves(value, path) if not _value_is_ciphertext(leaf))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _value_plaintext_sensitive(item, f"{path}.{key}" if path else key, key in _GUARDED)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _value_plaintext_sensitive(item, f"{path}[{index}]", False)


def _scalar_text(value: Any) -> str:
    # What a YAML node's value would be: the text, as the file writes it, of a typed scalar.
    return value if isinstance(value, str) else inline_text(value)


def _value_recipients(meta: dict[str, Any]) -> tuple[str, ...]:
    found: set[str] = set()
    stanzas = [meta.get("age")]
    groups = meta.get("key_groups")
    if isinstance(groups, list):
        stanzas.extend(group.get("age") for group in groups if isinstance(group, dict))
    for entries in stanzas:
        for item in entries if isinstance(entries, list) else ():
            recipient = item.get("recipient", _NO_VALUE) if isinstance(item, dict) else _NO_VALUE
            if recipient is not _NO_VALUE and not isinstance(recipient, dict | list):
                found.add(_scalar_text(recipient))
    return tuple(sorted(found))


_NO_VALUE = object()


def _inspect_written(documents: list[dict[str, Any]], path: str) -> ArtefactScan:
    whole_file = PurePosixPath(path).name in WHOLE_FILE_ARTEFACTS
    findings: list[str] = []
    recipients: tuple[str, ...] = ()
    for index, doc in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
        meta = doc.get("sops", _NO_VALUE)
        mac = meta.get("mac", _NO_VALUE) if isinstance(meta, dict) else _NO_VALUE
        if mac is _NO_VALUE or isinstance(mac, dict | list) or mac == "":
            findings.append(f"{where}: not a SOPS file (no sops metadata)")
            continue
        if index == 0:
            recipients = _value_recipients(meta)
        body = {key: value for key, value in doc.items() if key != "sops"}
        findings.extend(_plaintext_findings(where, body, whole_file,
                                            _value_leaves, _value_is_ciphertext, _value_plaintext_sensitive))
    return ArtefactScan(findings, recipients)


def scan_artefact(text: str, path: str) -> list[str]:
    """Findings for one file under encrypted/: not SOPS, plaintext sensitive fields, conflicts."""
    return inspect_artefact(text, path).findings


def artefact_recipients(text: str) -> tuple[str, ...]:
    """The age recipients an artefact's data key is wrapped for (from its sops metadata), sorted."""
    return inspect_artefact(text, "").recipients
