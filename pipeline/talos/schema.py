"""Talos config documents checked the way Talos decodes them, driven by Talos's own JSON schemas.

One schema per supported Talos version (``schemas/v1.11.json`` ...; see ``schemas/SOURCES.md``)
plus ``decode_extras.json``: the fields Talos still decodes but leaves out of the published schema.

- :func:`registered_kinds`: the document kinds a version registers (``v1alpha1`` is the machine config).
- :func:`strict_check`: unknown kinds ("not registered") and unknown keys at any depth
  ("unknown keys found during decoding"), as Talos's decoder refuses them.
- :func:`normalise_types`: values the schema types as strings become the string Talos decodes.
- :func:`validate`: JSON-schema validation (Draft 2020-12) of every document (a compiled yes/no check first,
  :mod:`pipeline.talos.fastschema`; jsonschema words the errors), plus :func:`talos_rules`, Talos's own
  ``Validate()`` rules per version (:mod:`pipeline.talos.rules`).

Documents are plain parsed YAML (dicts). A finding names the document (index and kind) and a dotted
path, never a value: values may be secrets.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.talos import fastschema

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SUPPORTED = ("v1.11", "v1.12", "v1.13")
MACHINE_CONFIG = "v1alpha1"

# The schema calls this kind "KubeSpanEndpoints"; Talos registers it as "KubeSpanEndpointsConfig"
# (pkg/machinery/config/types/network/kubespan_endpoints.go, v1.11-v1.13).
_KIND_RENAMES = {"KubeSpanEndpoints": "KubeSpanEndpointsConfig"}
# Registered by Talos but absent from the schema: accepted, keys unchecked (see SOURCES.md).
_UNSCHEMATISED_KINDS: dict[str, frozenset[str]] = {"v1.13": frozenset({"ImageVerificationConfig"})}

PathKey = str | int
Locate = Callable[[int, tuple[PathKey, ...]], "int | None"]
RawText = Callable[[int, tuple[PathKey, ...]], "str | None"]


@dataclass(frozen=True)
class Finding:
    """One problem in one document: ``path`` is dotted (``machine.files[0].mountPath``), never a value."""

    where: str
    doc_index: int
    kind: str
    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        loc = f"{self.where}:{self.line}" if self.line is not None else self.where
        at = f": {self.path}" if self.path else ""
        return f"{loc}: document {self.doc_index} ({self.kind}){at}: {self.reason}"


def contract_version(contract: str) -> str:
    """``'v1.12'``, ``'1.12'`` or ``'v1.12.3'`` -> ``'v1.12'``; PipelineError for an unsupported version."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+.*)?", str(contract).strip())
    version = f"v{m.group(1)}.{m.group(2)}" if m else str(contract)
    if version not in SUPPORTED:
        raise PipelineError(f"Talos contract {contract!r} is not supported (supported: {', '.join(SUPPORTED)})")
    return version


@dataclass(frozen=True)
class _Schema:
    version: str
    root: dict[str, Any]
    defs: dict[str, Any]
    kinds: dict[str, str | None]  # kind -> $defs name (None: registered, no schema)


@functools.cache
def _extras() -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / "decode_extras.json").read_text(encoding="utf-8"))


@functools.cache
def _schema(version: str) -> _Schema:
    root = json.loads((SCHEMA_DIR / f"{version}.json").read_text(encoding="utf-8"))
    defs = root["$defs"]
    extras = _extras().get(version, {})
    for def_name, definition in extras.get("defs", {}).items():
        defs.setdefault(def_name, copy.deepcopy(definition))
    for def_name, fields in extras.get("fields", {}).items():
        defs[def_name].setdefault("properties", {}).update(copy.deepcopy(fields))
    for def_name, definition in extras.get("replace", {}).items():
        defs[def_name] = copy.deepcopy(definition)  # the published schema's type is not what Talos decodes
    kinds: dict[str, str | None] = {}
    for branch in root["oneOf"]:
        def_name = branch["$ref"].rsplit("/", 1)[-1]
        props = defs[def_name].get("properties", {})
        for kind in props.get("kind", {}).get("enum", []) or props.get("version", {}).get("enum", []):
            kind = _KIND_RENAMES.get(kind, kind)
            kinds[kind] = def_name
            if kind in _KIND_RENAMES.values():
                props["kind"] = {**props["kind"], "enum": [kind]}
    for kind in _UNSCHEMATISED_KINDS.get(version, ()):
        kinds.setdefault(kind, None)
    return _Schema(version=version, root=root, defs=defs, kinds=kinds)


def registered_kinds(contract: str) -> set[str]:
    """Document kinds Talos registers for this version; the machine config is ``'v1alpha1'``."""
    return set(_schema(contract_version(contract)).kinds)


def document_kind(doc: Any) -> str:
    """The kind of a parsed document: its ``kind``, else ``'v1alpha1'`` (machine config or a patch of it)."""
    if isinstance(doc, dict) and "kind" in doc:
        return str(doc["kind"])
    return MACHINE_CONFIG


_V1ALPHA1_KEYS = ("machine", "cluster", "debug", "persist")


def _dispatch(doc: dict[Any, Any], schema: _Schema) -> tuple[str, str | None]:
    """Talos's choice of document type (configloader decoder ``decode``): the kind and a refusal, if any."""
    kind = api_version = ""
    for key, value in doc.items():  # in document order, as Talos reads them: the last one wins
        if key == "kind":
            kind = "" if value is None else str(value)
        elif key == "apiVersion":
            api_version = "" if value is None else str(value)
        elif key in _V1ALPHA1_KEYS:
            api_version = MACHINE_CONFIG
    if api_version == MACHINE_CONFIG and not kind:
        return MACHINE_CONFIG, None
    if not kind:
        return "?", "missing kind"
    if not api_version:
        return kind, "missing apiVersion"
    if kind not in schema.kinds or kind == MACHINE_CONFIG or api_version != "v1alpha1":
        return kind, f'"{kind}" "{api_version}": not registered (Talos {schema.version})'
    return kind, None


def _fmt(path: Sequence[PathKey]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Walker:
    """Walks a value alongside its schema node, following $ref, properties, maps, items and oneOf."""

    def __init__(self, schema: _Schema) -> None:
        self.defs = schema.defs

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def branch(self, node: dict[str, Any], value: Any) -> dict[str, Any]:
        """For a oneOf, the branch matching the value's shape (mapping, list or scalar)."""
        node = self.resolve(node)
        if "oneOf" not in node:
            return node
        want = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None
        branches = [self.resolve(b) for b in node["oneOf"]]
        for b in branches:
            if b.get("type") == want or (want is None and b.get("type") not in ("object", "array")):
                return b
        return branches[0] if branches else node

    def child(self, node: dict[str, Any], key: PathKey) -> dict[str, Any] | None:
        """Schema of ``key`` inside an object node: None if unknown to a closed object, {} if unchecked."""
        if isinstance(key, int):
            return node.get("items", {})
        props = node.get("properties", {})
        if key in props:
            return props[key]
        for pattern, sub in node.get("patternProperties", {}).items():
            if re.search(pattern, key):
                return sub
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return extra
        if extra is False or props:
            return None
        return {}


_NOUNS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
}


def _shape_error(node: dict[str, Any], value: Any) -> str | None:
    """A mapping or list where the schema wants something else, or a scalar where it wants a mapping/list."""
    declared = node.get("type")
    if not isinstance(declared, str):
        return None
    if isinstance(value, dict) and declared != "object":
        return f"cannot decode a mapping into {_NOUNS.get(declared, declared)} field"
    if isinstance(value, list) and declared != "array":
        return f"cannot decode a list into {_NOUNS.get(declared, declared)} field"
    if not isinstance(value, dict | list) and value is not None and declared in ("object", "array"):
        return f"cannot decode a scalar into {_NOUNS[declared]} field"
    return None


def _walk_keys(
    walker: _Walker,
    node: dict[str, Any],
    value: Any,
    path: tuple[PathKey, ...],
    patch: bool,
    add: Callable[[tuple[PathKey, ...], str], None],
) -> None:
    """Report every key of ``value`` its schema ``node`` does not know, and every mapping/list shape mismatch."""
    node = walker.branch(node, value)
    problem = _shape_error(node, value)
    if problem:
        add(path, problem)
        return
    if isinstance(value, dict):
        for key, sub in value.items():
            if patch and key == "$patch":
                continue
            child = walker.child(node, str(key))
            if child is None:
                add((*path, str(key)), "unknown keys found during decoding")
            elif child:
                _walk_keys(walker, child, sub, (*path, str(key)), patch, add)
    elif isinstance(value, list) and node.get("items"):
        for i, item in enumerate(value):
            _walk_keys(walker, node["items"], item, (*path, i), patch, add)


def strict_check(
    documents: Iterable[Any], contract: str, where: str, *, patch: bool = False, locate: Locate | None = None
) -> list[Finding]:
    """Refuse what Talos's decoder refuses: kinds not registered in ``contract``, unknown keys at any depth.

    ``where`` names the file the documents came from. With ``patch=True`` the strategic-merge directive
    ``$patch`` is allowed, and a JSON 6902 patch (a list of operations on the v1alpha1 document) is checked
    for the keys its ``add``/``replace``/``test`` paths name and its values bring. ``locate(doc_index, path)``
    may return the line of a path so findings carry it.
    """
    version = contract_version(contract)
    schema = _schema(version)
    walker = _Walker(schema)
    findings: list[Finding] = []

    for index, doc in enumerate(documents):
        if doc is None:
            continue
        if isinstance(doc, list) and patch:
            findings.extend(_check_json6902(doc, schema, walker, where, index, locate))
            continue

        def add(path: tuple[PathKey, ...], reason: str, kind: str) -> None:
            line = locate(index, path) if locate else None  # noqa: B023 - called within this iteration
            findings.append(Finding(where, index, kind, _fmt(path), reason, line))  # noqa: B023

        if not isinstance(doc, dict):
            add((), "a config document must be a mapping", "?")
            continue
        kind, problem = _dispatch(doc, schema)
        if problem:
            add((), problem, kind)
            continue
        def_name = schema.kinds[kind]
        if def_name is None:
            continue

        _walk_keys(walker, {"$ref": f"#/$defs/{def_name}"}, doc, (), patch, lambda p, r: add(p, r, kind))  # noqa: B023
    return findings


def _check_json6902(
    ops: list[Any], schema: _Schema, walker: _Walker, where: str, index: int, locate: Locate | None
) -> list[Finding]:
    """A JSON 6902 patch (of the v1alpha1 document): the keys its ``path`` names and its ``value`` brings."""
    findings: list[Finding] = []
    root = {"$ref": f"#/$defs/{schema.kinds[MACHINE_CONFIG]}"}
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "test"):
            continue
        raw = str(op.get("path", ""))
        parts = [p.replace("~1", "/").replace("~0", "~") for p in raw.split("/")[1:]] if raw.startswith("/") else []
        node: dict[str, Any] | None = root
        path: tuple[PathKey, ...] = ()
        for part in parts:
            resolved = walker.resolve(node or {})
            is_index = part == "-" or part.isdigit()
            key: PathKey = (int(part) if part.isdigit() else 0) if is_index else part
            child = resolved.get("items", {}) if is_index else walker.child(resolved, part)
            path = (*path, key)
            if child is None:
                line = locate(index, path) if locate else None
                reason = "unknown keys found during decoding"
                findings.append(Finding(where, index, MACHINE_CONFIG, _fmt(path), reason, line))
                node = None
                break
            node = child
            if not child:
                break
        if node and "value" in op:

            def add(p: tuple[PathKey, ...], reason: str) -> None:
                line = locate(index, p) if locate else None
                findings.append(Finding(where, index, MACHINE_CONFIG, _fmt(p), reason, line))

            _walk_keys(walker, node, op["value"], path, True, add)
    return findings


def _go_string(value: bool | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def normalise_types(documents: Sequence[Any], contract: str, *, raw_text: RawText | None = None) -> list[Any]:
    """Return copies of ``documents`` where every int/bool/float at a place the schema types as a string
    (e.g. ``machine.sysctls``, ``machine.nodeLabels``, ``*.extraArgs`` values) is that string.

    Go decodes a YAML scalar into a string field as its raw text, so ``raw_text(doc_index, path)`` should
    return the scalar as written (e.g. ``'1e3'``, ``'0x1F'``, ``'1.0'``). Without it (or when it returns
    None) the text is rebuilt from the typed value: exact for bools and decimal ints, but a value that
    arrived already typed has lost its spelling (``1e3`` becomes ``'1000.0'``, ``0x1F`` becomes ``'31'``).
    """
    schema = _schema(contract_version(contract))
    walker = _Walker(schema)

    def convert(node: dict[str, Any], value: Any, index: int, path: tuple[PathKey, ...]) -> Any:
        node = walker.branch(node, value)
        if isinstance(value, dict):
            out = {}
            for key, sub in value.items():
                if type(sub) is str or sub is None:
                    # Only a bool, int or float is ever converted, and a str or None is its own copy:
                    # most leaves of a config, taken as they are without a schema look-up.
                    out[key] = sub
                    continue
                child = walker.child(node, str(key))
                out[key] = convert(child, sub, index, (*path, str(key))) if child else copy.deepcopy(sub)
            return out
        if isinstance(value, list):
            items = node.get("items") or {}
            return [v if type(v) is str or v is None else convert(items, v, index, (*path, i)) if items
                    else copy.deepcopy(v) for i, v in enumerate(value)]
        if node.get("type") == "string" and isinstance(value, bool | int | float):
            raw = raw_text(index, path) if raw_text else None
            return raw if raw is not None else _go_string(value)
        return value

    result: list[Any] = []
    for index, doc in enumerate(documents):
        def_name = schema.kinds.get(document_kind(doc)) if isinstance(doc, dict) else None
        if def_name is None:
            result.append(copy.deepcopy(doc))
        else:
            result.append(convert({"$ref": f"#/$defs/{def_name}"}, doc, index, ()))
    return result


@functools.cache
def _validator(version: str, def_name: str) -> Any:
    from jsonschema import Draft202012Validator  # imported lazily: only validation needs it

    root = _schema(version).root
    return Draft202012Validator({"$schema": root["$schema"], "$defs": root["$defs"], "$ref": f"#/$defs/{def_name}"})


@functools.cache
def _fast_compiler(version: str) -> fastschema.Compiler:
    return fastschema.Compiler(_schema(version).root)


def _fast_valid(version: str, def_name: str, doc: Any) -> bool:
    """Whether ``doc`` is valid for ``def_name`` by the compiled check (False: unsure, ask jsonschema)."""
    compiler = _fast_compiler(version)
    try:
        return compiler.check(compiler.root["$defs"][def_name])(doc)
    except (fastschema.Unsupported, RecursionError):
        return False


def _reason(error: Any) -> str:
    """A short reason for a jsonschema error that never quotes the instance (it may be a secret)."""
    kw, expected = error.validator, error.validator_value
    if kw == "type":
        return f"must be of type {expected if isinstance(expected, str) else ' or '.join(expected)}"
    if kw == "required":
        missing = [k for k in expected if not isinstance(error.instance, dict) or k not in error.instance]
        return f"missing required key(s): {', '.join(missing)}"
    if kw == "additionalProperties":
        return "unknown keys found during decoding"
    if kw == "enum":
        allowed = ", ".join(str(v) for v in expected[:8])
        return f"not one of the allowed values ({allowed})"
    if kw == "const":
        return "not the required constant"
    if kw == "pattern":
        return f"does not match the pattern {expected}"
    if kw in ("oneOf", "anyOf"):
        return "matches none of the allowed forms"
    return f"fails the schema's {kw!r} constraint"


def validate(
    documents: Sequence[Any], contract: str, where: str = "", *, locate: Locate | None = None
) -> list[Finding]:
    """Validate every document against its kind's schema for ``contract`` (Draft 2020-12) and apply the
    ported Talos ``Validate()`` rules (see :func:`talos_rules`). Findings carry path and reason, no values."""
    version = contract_version(contract)
    schema = _schema(version)
    findings: list[Finding] = []
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            continue
        kind = document_kind(doc)
        def_name = schema.kinds.get(kind)
        if def_name is None:
            if kind not in schema.kinds:
                findings.append(Finding(where, index, kind, "", f'"{kind}": not registered (Talos {version})'))
            continue
        if _fast_valid(version, def_name, doc):
            continue  # jsonschema runs only to word the errors of a document the fast check refuses
        for error in sorted(_validator(version, def_name).iter_errors(doc), key=lambda e: list(map(str, e.path))):
            path = tuple(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                allowed = error.schema.get("properties", {})
                patterns = error.schema.get("patternProperties", {})
                for key in error.instance:
                    if key not in allowed and not any(re.search(p, key) for p in patterns):
                        line = locate(index, (*path, key)) if locate else None
                        findings.append(Finding(where, index, kind, _fmt((*path, key)), _reason(error), line))
                continue
            line = locate(index, path) if locate else None
            findings.append(Finding(where, index, kind, _fmt(path), _reason(error), line))
    findings.extend(talos_rules(documents, version, where, locate=locate))
    return findings


def talos_rules(
    documents: Sequence[Any], contract: str, where: str = "", *, locate: Locate | None = None
) -> list[Finding]:
    """Talos ``Validate()`` rules ported per version, for every document of one node: see ``talos.rules``."""
    from pipeline.talos import rules  # lazily: only validation needs the rules

    return [
        Finding(where, f.doc_index, f.kind, _fmt(f.path), f.reason, locate(f.doc_index, f.path) if locate else None)
        for f in rules.check(documents, contract_version(contract))
    ]
