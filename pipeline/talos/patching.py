"""Talos machine-config patching: strategic merge and JSON 6902, with Talos's semantics.

Pure functions over parsed YAML (dicts, lists and scalars): no I/O, no subprocess.

The rules follow Talos's ``configpatcher`` (documents matched by apiVersion/kind/name),
its ``$patch: delete`` selectors and its typed merge (``config/merge``). Talos merges Go
structs, so some behaviour hangs on Go field types; the tables below name the fields
whose type changes the merge (keyed lists, ``merge:"replace"`` fields, ``extraArgs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonpatch
import jsonpointer

from pipeline.errors import PipelineError
from pipeline.redact import safe_library_message
from pipeline.talos.yaml import LineMap, line_of, load_documents_with_lines

__all__ = [
    "Origin",
    "Patch",
    "PatchError",
    "Provenance",
    "apply_patches",
    "apply_patches_traced",
    "load_documents",
    "load_patch",
]


class PatchError(PipelineError):
    """A patch that cannot be parsed or applied; ``path`` names the patch source."""


@dataclass(frozen=True)
class Patch:
    """One parsed patch file.

    ``content`` holds the parsed YAML documents (mappings) of a strategic merge patch,
    or the list of operation mappings of a JSON 6902 patch.
    """

    source: str
    kind: Literal["strategic", "json6902"]
    content: tuple[Any, ...] | list[Any]
    # Per document of ``content`` (one for a JSON 6902 patch): the line of every key path, and the
    # source text of every plain non-string scalar (for fields Talos decodes into strings).
    lines: tuple[LineMap, ...] = field(default=(), compare=False, repr=False)
    raw: tuple[dict[tuple[Any, ...], str], ...] = field(default=(), compare=False, repr=False)

    def line(self, index: int, path: tuple[Any, ...]) -> int | None:
        """The line in this patch file of ``path`` in its document ``index`` (closest known prefix)."""
        return line_of(self.lines[index], path) if index < len(self.lines) else None


# ---------------------------------------------------------------------------
# YAML loading: the one YAML layer (go-yaml v3 typing, as Talos and sops read it)


@dataclass(frozen=True)
class _ParsedDoc:
    value: Any
    line: int
    lines: LineMap
    raw: dict[tuple[Any, ...], str]


def _parse_yaml(text: str, source: str, error: type[PipelineError]) -> list[_ParsedDoc]:
    try:
        documents = load_documents_with_lines(text, source, max_bytes=max(max_patch_bytes(), DEFAULT_MAX_PATCH_BYTES))
    except PipelineError as exc:
        raise error(exc.message, path=source, line=exc.line) from None
    return [_ParsedDoc(doc.value, doc.line, doc.lines, doc.raw) for doc in documents]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return "number" if isinstance(value, int | float) else type(value).__name__


# ---------------------------------------------------------------------------
# Document identity

_LEGACY = "v1alpha1"  # the kind Talos reports for the kind-less v1alpha1 document


def _is_legacy(doc: dict[str, Any]) -> bool:
    return doc.get("kind") in (None, "")


def _doc_id(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name): how Talos matches a patch document to a config document."""
    if _is_legacy(doc):
        return ("", _LEGACY, "")
    name = doc.get("name")
    return (str(doc.get("apiVersion", "")), str(doc["kind"]), "" if name is None else str(name))


def _doc_label(doc_id: tuple[str, str, str]) -> str:
    # Talos's spelling in messages: "<apiVersion>/<kind>", so "/v1alpha1" for the legacy document.
    return f"{doc_id[0]}/{doc_id[1]}"


def _identity_problem(doc: dict[str, Any]) -> str | None:
    has_kind = doc.get("kind") not in (None, "")
    has_api = doc.get("apiVersion") not in (None, "")
    if has_kind and not has_api:
        return f"document of kind {doc['kind']} is missing apiVersion"
    if has_api and not has_kind:
        return "document has apiVersion but is missing kind"
    return None


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """Parse a (multi-document) machine config; PipelineError with a line on bad YAML or structure."""
    documents: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], int] = {}
    for parsed in _parse_yaml(text, source, PipelineError):
        if parsed.value is None:
            continue  # an empty document ("---" twice), as Talos skips null documents
        if not isinstance(parsed.value, dict):
            raise PipelineError(
                f"expected a mapping document, got a {_type_name(parsed.value)}", path=source, line=parsed.line
            )
        problem = _identity_problem(parsed.value)
        if problem:
            raise PipelineError(problem, path=source, line=parsed.line)
        doc_id = _doc_id(parsed.value)
        if doc_id in seen:
            raise PipelineError(
                f"duplicate document {'/'.join(doc_id)} (first on line {seen[doc_id]})",
                path=source,
                line=parsed.line,
            )
        seen[doc_id] = parsed.line
        documents.append(parsed.value)
    return documents


# ---------------------------------------------------------------------------
# Loading patches

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_OPS_WITH_VALUE = frozenset({"add", "replace", "test"})
_OPS_WITH_FROM = frozenset({"move", "copy"})


def _is_pointer(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or value.startswith("/"))


def _op_problem(op: Any) -> str | None:
    if not isinstance(op, dict):
        return f"is a {_type_name(op)}, expected a mapping with op and path"
    name = op.get("op")
    if name not in _OPS:
        return f"has unknown op {name!r} (expected one of {', '.join(sorted(_OPS))})"
    if "path" not in op:
        return f"({name}) has no path"
    if not _is_pointer(op["path"]):
        return f"({name}) path {op['path']!r} is not a JSON pointer (it must start with '/')"
    if name in _OPS_WITH_VALUE and "value" not in op:
        return f"({name} {op['path']}) has no value"
    if name in _OPS_WITH_FROM and not _is_pointer(op.get("from")):
        return f"({name} {op['path']}) needs a 'from' JSON pointer"
    return None


def _load_json6902(ops: list[Any], parsed: _ParsedDoc, source: str) -> Patch:
    if ops and not any(isinstance(op, dict) and "op" in op for op in ops):
        raise PatchError(
            "a list is only a valid patch as JSON 6902 operations (mappings with op and path)",
            path=source,
            line=parsed.line,
        )
    for index, op in enumerate(ops):
        problem = _op_problem(op)
        if problem:
            line = parsed.lines.get((index,), parsed.line)
            raise PatchError(f"JSON 6902 operation {index + 1} {problem}", path=source, line=line)
        target = op.get("path")
        value = op.get("value")
        top = target.split("/")[1] if isinstance(target, str) and target.startswith("/") else None
        whole = target == "" and isinstance(value, dict) and any(key in value for key in _RESERVED_TOP_LEVEL)
        if op.get("op") != "remove" and (whole or top in _RESERVED_TOP_LEVEL):
            line = parsed.lines.get((index,), parsed.line)
            raise PatchError(f"JSON 6902 operation {index + 1}: top-level key 'sops' is reserved for sops metadata: "
                             "a patch may not set it", path=source, line=line)
    return Patch(source=source, kind="json6902", content=ops, lines=(parsed.lines,), raw=(parsed.raw,))


MAX_PATCH_BYTES_ENV = "PROMOTE_MAX_PATCH_BYTES"
DEFAULT_MAX_PATCH_BYTES = 1024 * 1024


def max_patch_bytes() -> int:
    """The largest templated patch accepted: PROMOTE_MAX_PATCH_BYTES, 1 MiB by default.

    A machine config is tens of kilobytes; a patch megabytes long is a mistake (a log pasted in, a
    template loop), and each one costs a sops run per node at the end.
    """
    raw = os.environ.get(MAX_PATCH_BYTES_ENV, "")
    try:
        value = int(raw) if raw.strip() else DEFAULT_MAX_PATCH_BYTES
    except ValueError:
        raise PatchError(f"{MAX_PATCH_BYTES_ENV}={raw!r} is not a number of bytes") from None
    return value if value > 0 else DEFAULT_MAX_PATCH_BYTES


# sops keeps its metadata under a top-level `sops` key: a document that already has one is
# encrypted into a file sops cannot read back (it panics), so no patch may introduce it.
_RESERVED_TOP_LEVEL = ("sops",)


def _refuse_reserved_keys(doc: dict[str, Any], parsed: _ParsedDoc, source: str) -> None:
    for key in _RESERVED_TOP_LEVEL:
        if key in doc:
            line = parsed.lines.get((key,), parsed.line)
            raise PatchError(f"top-level key '{key}' is reserved for sops metadata: a patch may not set it",
                             path=source, line=line)


def load_patch(text: str, source: str) -> Patch:
    """Parse an already-templated patch file's text (YAML or JSON) into a Patch.

    A list of ``{op, path, ...}`` mappings is a JSON 6902 patch; one or more mapping
    documents are a strategic merge patch. Anything else is a PatchError naming ``source``.
    """
    limit = max_patch_bytes()
    if len(text) > limit or len(text.encode("utf-8", errors="replace")) > limit:
        raise PatchError(f"patch is larger than {limit} bytes (templated): refused "
                         f"(raise {MAX_PATCH_BYTES_ENV} if it is meant to be)", path=source)
    parsed_docs: list[_ParsedDoc] | None = None
    if text.lstrip().startswith(("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            pass  # YAML flow style such as "{a: b}": let the YAML parser have it
        else:
            parsed_docs = [_ParsedDoc(value, 1, {(): 1}, {})]
    if parsed_docs is None:
        parsed_docs = _parse_yaml(text, source, PatchError)

    docs = [parsed for parsed in parsed_docs if parsed.value is not None]
    if not docs:
        raise PatchError("empty patch: the file has no YAML documents", path=source)

    lists = [parsed for parsed in docs if isinstance(parsed.value, list)]
    if lists:
        if len(docs) > 1:
            raise PatchError(
                "a JSON 6902 patch (a list of operations) must be the only document in its file",
                path=source,
                line=lists[0].line,
            )
        return _load_json6902(lists[0].value, lists[0], source)

    for index, parsed in enumerate(docs):
        doc = parsed.value
        if not isinstance(doc, dict):
            raise PatchError(
                f"document {index + 1} is a {_type_name(doc)}; a patch is a mapping (strategic merge) "
                "or a list of JSON 6902 operations",
                path=source,
                line=parsed.line,
            )
        problem = _identity_problem(doc)
        if problem:
            raise PatchError(problem, path=source, line=parsed.line)
        _refuse_reserved_keys(doc, parsed, source)
        # Dry run: surface malformed $patch directives now, with the file's line.
        try:
            _extract_deletes(doc, source)
        except PatchError as exc:
            raise PatchError(exc.message, path=source, line=parsed.line) from None
    return Patch(
        source=source,
        kind="strategic",
        content=tuple(parsed.value for parsed in docs),
        lines=tuple(parsed.lines for parsed in docs),
        raw=tuple(parsed.raw for parsed in docs),
    )


# ---------------------------------------------------------------------------
# Merge tables (from the Go types of Talos v1.11 to v1.14)

_Path = tuple[str, ...]
_ITEM = "[]"  # a list item in a table path


@dataclass(frozen=True)
class _KeyedList:
    """A list whose items are matched to existing items (Go types with a Merge method)."""

    find: Callable[[list[Any], dict[str, Any]], int | None]
    replace_item: bool = False  # a matched item is replaced wholesale instead of merged


def _by_field(field: str, default: Any) -> Callable[[list[Any], dict[str, Any]], int | None]:
    # Go compares the field's value; a missing field is the zero value of its type.
    def find(items: list[Any], item: dict[str, Any]) -> int | None:
        wanted = item.get(field, default)
        for index, candidate in enumerate(items):
            if isinstance(candidate, dict) and _same(candidate.get(field, default), wanted):
                return index
        return None

    return find


def _find_interface(items: list[Any], item: dict[str, Any]) -> int | None:
    # NetworkDeviceList.Merge: by interface name, else by an equal deviceSelector, else no match.
    name = item.get("interface")
    selector = item.get("deviceSelector")
    for index, candidate in enumerate(items):
        if not isinstance(candidate, dict):
            continue
        if name:
            if candidate.get("interface") == name:
                return index
        elif selector is not None and candidate.get("deviceSelector") == selector:
            return index
    return None


# (document kind, path) -> keyed merge of list items.
_KEYED: dict[tuple[str, _Path], _KeyedList] = {
    (_LEGACY, ("machine", "network", "interfaces")): _KeyedList(_find_interface),
    (_LEGACY, ("machine", "network", "interfaces", _ITEM, "vlans")): _KeyedList(_by_field("vlanId", 0)),
    (_LEGACY, ("cluster", "apiServer", "admissionControl")): _KeyedList(_by_field("name", "")),
    ("ExtensionServiceConfig", ("configFiles",)): _KeyedList(_by_field("mountPath", "")),
    # ImageVerificationRules.Merge replaces a rule with the same image pattern.
    ("ImageVerificationConfig", ("rules",)): _KeyedList(_by_field("image", ""), replace_item=True),
}

# (document kind, path) of `merge:"replace"` fields: the patch's value replaces the config's.
_REPLACE: frozenset[tuple[str, _Path]] = frozenset(
    {
        (_LEGACY, ("cluster", "apiServer", "auditPolicy")),
        (_LEGACY, ("cluster", "network", "podSubnets")),
        (_LEGACY, ("cluster", "network", "serviceSubnets")),
        ("NetworkRuleConfig", ("ingress",)),
        ("NetworkRuleConfig", ("portSelector", "ports")),
        ("BGPInstanceConfig", ("advertise",)),
        ("BGPInstanceConfig", ("importRoutes",)),
        ("BGPInstanceConfig", ("neighbors",)),
        ("CRIBaseRuntimeSpecConfig", ("overrides",)),
        ("KubeAuditPolicyConfig", ("configuration",)),
        ("KubeAuthenticationConfig", ("configuration",)),
        ("KubeCredentialProviderConfig", ("configuration",)),
        ("KubeNetworkConfig", ("podSubnets",)),
        ("KubeNetworkConfig", ("serviceSubnets",)),
        ("KubeStaticPodConfig", ("pod",)),
    }
)

# Every map named extraArgs is a meta.Args: its Merge overwrites key by key.
_ARGS_KEY = "extraArgs"


# ---------------------------------------------------------------------------
# Helpers


# What _clone returns as it is: taken in place by its callers' loops, without a call per leaf.
_LEAVES = frozenset({str, int, float, bool, type(None)})


def _clone(value: Any) -> Any:
    """Deep copy of plain YAML data; much cheaper than copy.deepcopy (and unshares YAML aliases)."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _LEAVES else _clone(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [item if type(item) in _LEAVES else _clone(item) for item in value]
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clone(item) for item in value]
    return value


def _same(left: Any, right: Any) -> bool:
    # In Python True == 1; YAML (and Go) keep booleans and numbers apart.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _is_zero(value: Any) -> bool:
    # Go's merge skips zero-valued scalars ("" and 0) but always applies booleans.
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value == ""
    if isinstance(value, int | float):
        return value == 0
    return False


def _dotted(path: _Path) -> str:
    text = ""
    for part in path:
        if part.startswith("["):
            text += part
        else:
            text += f".{part}" if text else part
    return text


# ---------------------------------------------------------------------------
# $patch: delete


@dataclass(frozen=True)
class _Delete:
    """One ``$patch: delete`` selector, as Talos's decoder extracts it."""

    doc_id: tuple[str, str, str]
    named: bool
    path: _Path  # empty: the whole document; last part "[i]": a list item
    item_key: str | None = None
    item_value: Any = None

    def path_text(self) -> str:
        return ".".join(self.path)


def _has_directive(value: Any) -> bool:
    # Whether any mapping inside ``value`` has a "$patch" key. Iterative: every node's render asks it
    # of every patch document, and a generator per level cost more than the look itself.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "$patch" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _extract_deletes(doc: dict[str, Any], source: str) -> tuple[list[_Delete], dict[str, Any] | None]:
    """Split a strategic patch document into its delete selectors and what is left to merge.

    Returns the remainder (None when nothing is left to merge). The patch is not modified.
    """
    if not _has_directive(doc):
        return [], (None if _is_empty_patch_doc(doc) else doc)

    doc_id = _doc_id(doc)
    named = not _is_legacy(doc) and doc.get("name") is not None
    found: list[_Delete] = []

    def walk(node: Any, path: _Path, in_list: bool) -> bool:
        """Collect deletes under ``node``; True if the node itself is to be dropped from the patch."""
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if key == "$patch":
                    if value != "delete":
                        raise PatchError(
                            f"unsupported directive '$patch: {value}' at '{_dotted(path) or '<document>'}' "
                            "(only '$patch: delete' is supported)",
                            path=source,
                        )
                    found.append(selector(node, path, in_list))
                    return True
                if walk(value, (*path, str(key)), False):
                    del node[key]
                    if not node:
                        return True
        elif isinstance(node, list):
            index = 0
            while index < len(node):
                if walk(node[index], (*path, f"[{index}]"), True):
                    del node[index]
                    if not node:
                        return True
                    continue
                index += 1
        return False

    def selector(node: dict[str, Any], path: _Path, in_list: bool) -> _Delete:
        if not path:
            if _is_legacy(doc):
                raise PatchError("the v1alpha1 document cannot be deleted with '$patch: delete'", path=source)
            return _Delete(doc_id, named, ())
        if not in_list:
            if any(part.startswith("[") for part in path):
                raise PatchError(f"cannot delete an inner key in '{'.'.join(path)}'", path=source)
            return _Delete(doc_id, named, path)
        if any(part.startswith("[") for part in path[:-1]):
            # Talos's lookup cannot walk through a list to reach a nested list item.
            raise PatchError(
                f"cannot delete '{'.'.join(path)}': searching for complex paths in lists is not supported",
                path=source,
            )
        for key, value in node.items():
            if key != "$patch":
                # The first other key/value pair of the item selects which item to remove.
                return _Delete(doc_id, named, path, str(key), value)
        raise PatchError(f"no key:value found to select the list item to delete at '{'.'.join(path)}'", path=source)

    work = _clone(doc)
    if walk(work, (), False) or _is_empty_patch_doc(work, had_deletes=True):
        return found, None
    return found, work


def _is_empty_patch_doc(doc: dict[str, Any], had_deletes: bool = False) -> bool:
    # Talos skips a patch document holding nothing but version/kind/name. After deletes were
    # taken out we also skip a bare apiVersion/kind/name: Talos would append such a document
    # as a new, empty one when its target does not exist, which is never what a delete means.
    identity = {"version", "kind", "name", "apiVersion"} if had_deletes else {"version", "kind", "name"}
    return all(key in identity and not isinstance(value, dict | list) for key, value in doc.items())


def _apply_delete(target: dict[str, Any], sel: _Delete, source: str) -> int | None:
    """Apply one selector; returns the index of the list item it removed (None: a key was removed)."""
    def lookup_failed(detail: str = "") -> PatchError:
        reason = f"failed to delete path '{sel.path_text()}': lookup failed{detail}"
        if sel.named:
            message = f"named patch delete: document {_doc_label(sel.doc_id)}: {reason}"
        else:
            message = f"patch delete: path '{sel.path_text()}' in document '{_doc_label(sel.doc_id)}': {reason}"
        return PatchError(message, path=source)

    container: Any = target
    for part in sel.path[:-1]:
        if not isinstance(container, dict) or container.get(part) is None:
            raise lookup_failed()
        container = container[part]

    last = sel.path[-1]
    if sel.item_key is None:
        if not isinstance(container, dict) or last not in container:
            raise lookup_failed()
        del container[last]
        return None

    if isinstance(container, list):
        for index, item in enumerate(container):
            if isinstance(item, dict) and sel.item_key in item and _same(item[sel.item_key], sel.item_value):
                del container[index]  # Talos removes the first matching item only
                return index
    raise lookup_failed(f" (no list item with {sel.item_key}: {sel.item_value!r})")


# ---------------------------------------------------------------------------
# Provenance: which patch file:line brought each value of a merged config


@dataclass(frozen=True)
class Origin:
    """Where a value of a merged config came from: the patch file and the line in it."""

    source: str
    line: int | None


# A recorded place: the patch, the index of its document, and the path inside that document.
_Entry = tuple[Patch, int, tuple[Any, ...]]


class Provenance:
    """Recorded during the merge: for every value a patch wrote, the patch file and line it came from.

    Entries are kept per document (apiVersion, kind, name) and per path in the merged document; a
    path with no entry of its own takes its closest recorded ancestor's (a subtree a patch brought
    whole). A value nobody recorded came from the base config.
    """

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str, str], dict[tuple[Any, ...], _Entry]] = {}

    def record(
        self, doc_id: tuple[str, str, str], path: tuple[Any, ...], patch: Patch, index: int,
        patch_path: tuple[Any, ...], *, replace: bool = False,
    ) -> None:
        """``path`` of document ``doc_id`` now holds what ``patch``'s document ``index`` has at ``patch_path``.

        ``replace``: the value replaced a whole subtree, so what was recorded under it is gone.
        """
        entries = self._docs.setdefault(doc_id, {})
        if replace and entries:
            self._drop_under(entries, path)
        entries[path] = (patch, index, patch_path)

    @staticmethod
    def _drop_under(entries: dict[tuple[Any, ...], _Entry], path: tuple[Any, ...]) -> None:
        size = len(path)
        for key in [key for key in entries if len(key) > size and key[:size] == path]:
            del entries[key]

    def forget(self, doc_id: tuple[str, str, str], path: tuple[Any, ...]) -> None:
        """``path`` (and everything under it) was deleted."""
        entries = self._docs.get(doc_id)
        if entries:
            self._drop_under(entries, path)
            entries.pop(path, None)

    def shift(self, doc_id: tuple[str, str, str], list_path: tuple[Any, ...], removed: int) -> None:
        """Item ``removed`` of the list at ``list_path`` was deleted: later items move up by one."""
        entries = self._docs.get(doc_id)
        if not entries:
            return
        size = len(list_path)
        moved: dict[tuple[Any, ...], _Entry] = {}
        for key, entry in entries.items():
            if len(key) > size and key[:size] == list_path and isinstance(key[size], int):
                if key[size] == removed:
                    continue
                if key[size] > removed:
                    key = (*list_path, key[size] - 1, *key[size + 1 :])
            moved[key] = entry
        entries.clear()
        entries.update(moved)

    def _find(self, doc: Any, path: tuple[Any, ...]) -> tuple[Patch, int, tuple[Any, ...]] | None:
        entries = self._docs.get(_doc_id(doc)) if isinstance(doc, dict) else None
        if not entries:
            return None
        for end in range(len(path), -1, -1):
            entry = entries.get(path[:end])
            if entry is not None:
                patch, index, patch_path = entry
                return patch, index, (*patch_path, *path[end:])
        return None

    def origin(self, doc: Any, path: tuple[Any, ...]) -> Origin | None:
        """The patch file and line that brought ``path`` of merged document ``doc`` (None: the base)."""
        found = self._find(doc, tuple(path))
        if found is None:
            return None
        patch, index, patch_path = found
        return Origin(patch.source, patch.line(index, patch_path))

    def raw_text(self, doc: Any, path: tuple[Any, ...]) -> str | None:
        """How the patch spelled the plain non-string scalar at ``path`` (``1e3``), if a patch wrote it."""
        found = self._find(doc, tuple(path))
        if found is None:
            return None
        patch, index, patch_path = found
        return patch.raw[index].get(patch_path) if index < len(patch.raw) else None


@dataclass(frozen=True)
class _At:
    """Where a merge step writes: a place in a merged document and the matching place in the patch."""

    trace: Provenance
    doc_id: tuple[str, str, str]
    patch: Patch
    index: int
    path: tuple[Any, ...]
    patch_path: tuple[Any, ...]

    def child(self, key: Any, patch_key: Any) -> _At:
        return _At(self.trace, self.doc_id, self.patch, self.index, (*self.path, key), (*self.patch_path, patch_key))

    def record(self, key: Any, patch_key: Any, *, replace: bool = False) -> None:
        self.trace.record(
            self.doc_id, (*self.path, key), self.patch, self.index, (*self.patch_path, patch_key), replace=replace
        )


# ---------------------------------------------------------------------------
# Strategic merge


def _merge_map(
    left: dict[str, Any], right: dict[str, Any], kind: str, path: _Path, source: str, at: _At | None = None
) -> None:
    """Merge ``right`` into ``left`` in place (``right`` is never aliased into ``left``).

    ``at`` (when tracing) says where ``left`` sits in the merged document and ``right`` in the patch.
    """
    for key, rvalue in right.items():
        if rvalue is None:
            continue  # null is "not set" in Go: it never clears a value
        here = (*path, key)
        lvalue = left.get(key)
        keyed = _KEYED.get((kind, here))

        if lvalue is None:
            if keyed is not None and isinstance(rvalue, list):
                # Go calls the list's Merge even on an empty list: items are matched among themselves.
                merged: list[Any] = []
                _merge_keyed(merged, rvalue, keyed, kind, here, source, at and at.child(key, key))
                left[key] = merged
            else:
                left[key] = _clone(rvalue)
                if at:
                    at.record(key, key)
            continue

        if (kind, here) in _REPLACE:
            if isinstance(rvalue, dict) and not rvalue:
                continue  # an empty mapping is Go's zero value: not set, so nothing replaced
            left[key] = _clone(rvalue)
            if at:
                at.record(key, key, replace=True)
        elif key == _ARGS_KEY and isinstance(lvalue, dict) and isinstance(rvalue, dict):
            for arg, value in rvalue.items():
                if value is not None:
                    lvalue[arg] = _clone(value)  # a list value replaces, it is not appended
                    if at:
                        at.child(key, key).record(arg, arg, replace=True)
        elif isinstance(lvalue, dict):
            if not isinstance(rvalue, dict):
                raise _mismatch(here, lvalue, rvalue, source)
            _merge_map(lvalue, rvalue, kind, here, source, at and at.child(key, key))
        elif isinstance(lvalue, list):
            if not isinstance(rvalue, list):
                raise _mismatch(here, lvalue, rvalue, source)
            if keyed is not None:
                _merge_keyed(lvalue, rvalue, keyed, kind, here, source, at and at.child(key, key))
            else:
                if at:
                    inner = at.child(key, key)
                    for number in range(len(rvalue)):
                        inner.record(len(lvalue) + number, number)
                lvalue.extend(_clone(item) for item in rvalue)  # lists append; [] adds nothing
        else:
            if isinstance(rvalue, dict | list):
                raise _mismatch(here, lvalue, rvalue, source)
            if not _is_zero(rvalue):
                left[key] = rvalue
                if at:
                    at.record(key, key)


def _merge_keyed(
    left: list[Any], right: list[Any], rule: _KeyedList, kind: str, path: _Path, source: str, at: _At | None = None
) -> None:
    item_path = (*path, _ITEM)
    # ImageVerificationRules only matches rules that were there before this patch.
    limit = len(left) if rule.replace_item else None
    for number, item in enumerate(right):
        if not isinstance(item, dict):
            if at:
                at.record(len(left), number)
            left.append(_clone(item))
            continue
        candidates = left if limit is None else left[:limit]
        index = rule.find(candidates, item)
        if index is None:
            if at:
                at.record(len(left), number)
            left.append(_clone(item))
        elif rule.replace_item:
            left[index] = _clone(item)
            if at:
                at.record(index, number, replace=True)
        else:
            _merge_map(left[index], item, kind, item_path, source, at and at.child(index, number))


def _mismatch(path: _Path, left: Any, right: Any, source: str) -> PatchError:
    return PatchError(
        f"cannot merge {_dotted(path)}: the config has a {_type_name(left)}, the patch a {_type_name(right)}",
        path=source,
    )


def _apply_strategic(
    documents: list[dict[str, Any]], patch: Patch, trace: Provenance | None = None
) -> list[dict[str, Any]]:
    index: dict[tuple[str, str, str], dict[str, Any]] = {_doc_id(doc): doc for doc in documents}
    for number, pdoc in enumerate(patch.content, start=1):
        if not isinstance(pdoc, dict):
            raise PatchError(f"document {number} is a {_type_name(pdoc)}, expected a mapping", path=patch.source)
        problem = _identity_problem(pdoc)
        if problem:
            raise PatchError(problem, path=patch.source)
        # Talos runs a patch document's deletes before its merge, document by document.
        deletes, remainder = _extract_deletes(pdoc, patch.source)
        for sel in deletes:
            target = index.get(sel.doc_id)
            if target is None:
                continue  # a delete aimed at a document the config does not have is skipped
            if sel.path:
                removed = _apply_delete(target, sel, patch.source)
                if trace is not None:
                    if removed is None:
                        trace.forget(sel.doc_id, sel.path)
                    else:
                        trace.shift(sel.doc_id, sel.path[:-1], removed)
            else:
                del index[sel.doc_id]
                documents = [doc for doc in documents if doc is not target]
                if trace is not None:
                    trace.forget(sel.doc_id, ())
        if remainder is None:
            continue
        doc_id = _doc_id(remainder)
        target = index.get(doc_id)
        if target is None:
            added = _clone(remainder)
            documents.append(added)
            index[doc_id] = added
            if trace is not None:
                trace.record(doc_id, (), patch, number - 1, (), replace=True)
        else:
            at = _At(trace, doc_id, patch, number - 1, (), ()) if trace is not None else None
            _merge_map(target, remainder, doc_id[1], (), patch.source, at)
    return documents


# ---------------------------------------------------------------------------
# JSON 6902

_JSON_PATCH_ERRORS = (
    jsonpatch.JsonPatchException,
    jsonpointer.JsonPointerException,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
)


def _pointer_path(doc: Any, pointer: str) -> tuple[Any, ...]:
    """A JSON pointer as a path of keys and list indices in ``doc`` ("-" is the last item, once added)."""
    path: list[Any] = []
    node = doc
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            index = len(node) - 1 if part == "-" else int(part) if part.isdigit() else part
            path.append(index)
            node = node[index] if isinstance(index, int) and 0 <= index < len(node) else None
        else:
            path.append(part)
            node = node.get(part) if isinstance(node, dict) else None
    return tuple(path)


def _trace_op(trace: Provenance, doc: Any, op: dict[str, Any], number: int, patch: Patch) -> None:
    # Where an operation wrote, and the line that says so: its value, or the operation itself.
    doc_id = ("", _LEGACY, "")
    name = op["op"]
    if name == "remove":
        trace.forget(doc_id, _pointer_path(doc, op["path"]))
    elif name in ("add", "replace", "copy", "move"):
        written = _pointer_path(doc, op["path"])
        patch_path = (number - 1, "value") if name in _OPS_WITH_VALUE else (number - 1,)
        trace.record(doc_id, written, patch, 0, patch_path, replace=True)


def _apply_json6902(
    documents: list[dict[str, Any]], patch: Patch, trace: Provenance | None = None
) -> list[dict[str, Any]]:
    if len(documents) != 1:
        raise PatchError(
            "JSON6902 patches are not supported for multi-document machine configuration", path=patch.source
        )
    doc: Any = documents[0]
    for number, op in enumerate(patch.content, start=1):
        problem = _op_problem(op)
        if problem:
            raise PatchError(f"JSON 6902 operation {number} {problem}", path=patch.source)
        try:
            # One operation at a time, so that a failure names the operation. The document is
            # our private copy, so in place is safe; the op is cloned so that its value is never
            # shared between nodes' configs.
            doc = jsonpatch.JsonPatch([_clone(op)]).apply(doc, in_place=True)
            if trace is not None:
                _trace_op(trace, doc, op, number, patch)
        except _JSON_PATCH_ERRORS as exc:
            # jsonpatch/jsonpointer print the parent mapping or the tested value (every secret of a
            # base config): the message names the operation, its paths and types, never a value.
            raise PatchError(
                f"failure applying rfc6902 patches to talos machine config: operation {number} "
                f"({op['op']} {op['path']}): {safe_library_message(exc, op)}",
                path=patch.source,
            ) from None
    if not isinstance(doc, dict):
        raise PatchError(f"the JSON 6902 patch turned the machine config into a {_type_name(doc)}", path=patch.source)
    return [doc]


# ---------------------------------------------------------------------------
# Entry point

# Talos trims these from the start of inline manifest contents when it decodes a config.
_MANIFEST_TRIM = "\t\n\v\f\r"


def _normalize(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    legacy = [doc for doc in documents if _is_legacy(doc)]
    for doc in legacy:
        cluster = doc.get("cluster")
        manifests = cluster.get("inlineManifests") if isinstance(cluster, dict) else None
        if isinstance(manifests, list):
            for manifest in manifests:
                if isinstance(manifest, dict) and isinstance(manifest.get("contents"), str):
                    manifest["contents"] = manifest["contents"].lstrip(_MANIFEST_TRIM)
    # Talos's config container always puts the v1alpha1 document first.
    return legacy + [doc for doc in documents if not _is_legacy(doc)]


def apply_patches(documents: list[dict[str, Any]], patches: Sequence[Patch]) -> list[dict[str, Any]]:
    """Apply ``patches`` in order to a machine config (a list of YAML documents).

    Returns new documents; neither ``documents`` nor the patches are modified.
    Raises PatchError (``path`` = the failing patch's source).
    """
    return _apply(documents, patches, None)


def apply_patches_traced(
    documents: list[dict[str, Any]], patches: Sequence[Patch]
) -> tuple[list[dict[str, Any]], Provenance]:
    """:func:`apply_patches`, also recording which patch file:line brought each value (see Provenance)."""
    trace = Provenance()
    return _apply(documents, patches, trace), trace


def _apply(
    documents: list[dict[str, Any]], patches: Sequence[Patch], trace: Provenance | None
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [_clone(doc) for doc in documents]
    for patch in patches:
        if patch.kind == "strategic":
            result = _apply_strategic(result, patch, trace)
        elif patch.kind == "json6902":
            result = _apply_json6902(result, patch, trace)
        else:
            raise PatchError(f"unknown patch kind {patch.kind!r}", path=patch.source)
    return _normalize(result)
