"""Field-level differences between parsed YAML documents, and what of them may be shown.

Used by `doit plan` (with values, secrets redacted) and `doit verify` (dotted paths only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from pipeline.guard.scan import PRIVATE_KEY
from pipeline.sops.config import CARRIER_FIELDS, SENSITIVE_FIELDS
from pipeline.state import ledger

_SENSITIVE = frozenset((*SENSITIVE_FIELDS, *CARRIER_FIELDS))  # carriers: environment, inline manifests
_MAX_VALUE = 80
Segment = str | int


# --- field-level diff of parsed documents --------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One field that differs: ``op`` is ``+`` (added), ``-`` (removed) or ``~`` (changed)."""

    op: str
    path: tuple[Segment, ...]
    old: Any = None
    new: Any = None

    @property
    def dotted(self) -> str:
        """``machine.network.interfaces[0].addresses[0]``."""
        return dotted(self.path)

    @property
    def secret(self) -> bool:
        """Whether the field sits under a sensitive key (its value is never shown)."""
        return any(isinstance(part, str) and part in _SENSITIVE for part in self.path)


def dotted(path: tuple[Segment, ...]) -> str:
    """A path as dotted keys and [index] for list items."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _leaves(value: Any, path: tuple[Segment, ...]) -> Iterator[tuple[tuple[Segment, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def added(value: Any, path: tuple[Segment, ...]) -> Iterator[Change]:
    """Every leaf of ``value`` as an addition at ``path``."""
    return (Change("+", leaf_path, new=leaf) for leaf_path, leaf in _leaves(value, path))


def removed(value: Any, path: tuple[Segment, ...]) -> Iterator[Change]:
    """Every leaf of ``value`` as a removal at ``path``."""
    return (Change("-", leaf_path, old=leaf) for leaf_path, leaf in _leaves(value, path))


def _same(old: Any, new: Any) -> bool:
    # True == 1 in Python; in a config they differ.
    return type(old) is type(new) and old == new


def diff_values(old: Any, new: Any, path: tuple[Segment, ...] = ()) -> Iterator[Change]:
    """Every leaf that differs between two parsed YAML values (lists aligned by content)."""
    if isinstance(old, dict) and isinstance(new, dict) and old and new:
        for key, item in old.items():
            if key not in new:
                yield from removed(item, (*path, str(key)))
        for key, item in new.items():
            if key not in old:
                yield from added(item, (*path, str(key)))
            else:
                yield from diff_values(old[key], item, (*path, str(key)))
    elif isinstance(old, list) and isinstance(new, list) and old and new:
        before = [ledger.canonical(item) for item in old]
        after = [ledger.canonical(item) for item in new]
        for tag, i1, i2, j1, j2 in SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
            for offset in range(paired):
                yield from diff_values(old[i1 + offset], new[j1 + offset], (*path, j1 + offset))
            for index in range(i1 + paired, i2):
                yield from removed(old[index], (*path, index))
            for index in range(j1 + paired, j2):
                yield from added(new[index], (*path, index))
    elif _same(old, new):
        return
    elif not isinstance(old, dict | list) and not isinstance(new, dict | list):
        yield Change("~", path, old, new)
    else:
        yield from removed(old, path)
        yield from added(new, path)


def _document_key(doc: Any, index: int) -> tuple[str, str]:
    if isinstance(doc, dict) and doc.get("kind"):
        return str(doc["kind"]), str(doc.get("name") or "")
    if (isinstance(doc, dict) and "machine" in doc) or index == 0:
        return "", ""  # the v1alpha1 config: paths start at machine./cluster.
    return f"document{index + 1}", ""


def diff_documents(old: list[Any], new: list[Any]) -> list[Change]:
    """Changes between two multi-document configs, documents paired by kind (and name)."""
    before = {_document_key(doc, i): doc for i, doc in enumerate(old)}
    after = {_document_key(doc, i): doc for i, doc in enumerate(new)}
    changes: list[Change] = []
    for key in dict.fromkeys([*before, *after]):
        prefix: tuple[Segment, ...] = () if key == ("", "") else (f"{key[0]}({key[1]})" if key[1] else key[0],)
        if key not in after:
            changes.extend(removed(before[key], prefix))
        elif key not in before:
            changes.extend(added(after[key], prefix))
        else:
            changes.extend(diff_values(before[key], after[key], prefix))
    return changes


# --- redaction ----------------------------------------------------------------------------------


@dataclass
class Redactor:
    """Decides what may be shown: never a value under a sensitive key, a bundle secret, or a private key."""

    secrets: set[str] = field(default_factory=set)

    @classmethod
    def from_bundle(cls, bundle: Any) -> Redactor:
        """Every string of the secrets bundle long enough to be a secret."""
        values = {str(leaf) for _path, leaf in _leaves(bundle, ()) if isinstance(leaf, str) and len(leaf) >= 8}
        return cls(values)

    def hides(self, value: Any) -> bool:
        """Whether ``value`` must not be printed."""
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return bool(PRIVATE_KEY.search(text)) or any(secret in text for secret in self.secrets)

    def show(self, value: Any) -> str:
        """A short, safe rendering of one leaf value."""
        if self.hides(value):
            return "(secret)"
        if isinstance(value, str):
            if "\n" in value.strip("\n"):
                return f"({len(value.splitlines())} lines of text)"
            text = value if value and value.strip() == value and not value.startswith(("'", '"')) \
                else json.dumps(value)
        else:
            text = json.dumps(value, default=str)
        return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."

    def line(self, change: Change) -> str:
        """``+ path: value``, ``- path: value``, ``~ path: old -> new``, secrets redacted."""
        secret = change.secret or self.hides(change.old) or self.hides(change.new)
        if change.op == "~":
            shown = "(secret changed)" if secret else f"{self.show(change.old)} -> {self.show(change.new)}"
        else:
            value = change.new if change.op == "+" else change.old
            shown = "(secret)" if secret else self.show(value)
        return f"{change.op} {change.dotted}: {shown}"
