"""The compiled yes/no schema check (pipeline/talos/fastschema.py) against jsonschema, the reference.

A rendered node whose documents the fast check calls valid is never shown to jsonschema, so the two must
agree on every document: talosctl's own base configs of each version, every real-world corpus patch merged
onto them, and hypothesis-made mutations of those (wrong types, unknown keys, deleted required keys, enum
values off by a letter, booleans where integers go, integral floats, nested junk).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.talos import fastschema
from pipeline.talos import schema as ts
from tests.talos.test_corpus import PATCHES, STABILITY, load, merged_onto_base

VERSIONS = ("v1.11", "v1.12", "v1.13")
EXAMPLES = 400 if os.environ.get("CI") else 120


def reference_valid(version: str, doc: dict[str, Any]) -> bool:
    def_name = ts._schema(version).kinds[ts.document_kind(doc)]
    return not any(True for _ in ts._validator(version, def_name).iter_errors(doc))


def fast_valid(version: str, doc: dict[str, Any]) -> bool:
    def_name = ts._schema(version).kinds[ts.document_kind(doc)]
    return ts._fast_valid(version, def_name, doc)


def base_documents(version: str) -> list[dict[str, Any]]:
    import yaml

    out = []
    for role in ("controlplane", "worker"):
        text = (STABILITY / version / f"base-{role}.yaml").read_text(encoding="utf-8")
        out += [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
    return out


def corpus_documents(version: str) -> list[dict[str, Any]]:
    docs = []
    for path in PATCHES:
        try:
            merged = merged_onto_base(load(path), version)
        except Exception:  # a patch this version refuses before the schema: not a schema case
            continue
        kinds = ts._schema(version).kinds
        docs += [doc for doc in merged if isinstance(doc, dict) and kinds.get(ts.document_kind(doc))]
    return docs


@pytest.mark.parametrize("version", VERSIONS)
def test_same_verdict_on_talos_bases_and_every_corpus_merge(version: str) -> None:
    documents = base_documents(version) + corpus_documents(version)
    assert len(documents) > 40
    verdicts = [(fast_valid(version, doc), reference_valid(version, doc)) for doc in documents]
    assert all(fast == ref for fast, ref in verdicts)
    assert all(ref for _fast, ref in verdicts)  # what strict decoding lets through is schema-valid


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 0.0, "", "true", "1", "eth0", "10.0.0.1/24", "https://x:6443", "controlplane",
                     "worker", "init", "metal", "stable", "off", "none", "flannel", "custom", "bogus"]),
    st.text(max_size=6),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "disk", "bogus", "interface", "enabled", "kind", "x"]), inner, max_size=3), max_leaves=6)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    version = draw(st.sampled_from(VERSIONS))
    docs = _SOURCES[version]
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p and p[0] not in ("kind", "apiVersion", "version")]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        action = draw(st.sampled_from(["set", "delete", "add", "enum-typo"]))
        if action == "set":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["bogus", "name", "mountPath", "proxy", "Disk"]))] = draw(VALUES)
        elif isinstance(parent[path[-1]], str):
            parent[path[-1]] = parent[path[-1]] + draw(st.sampled_from(["x", "", " "]))
    return version, doc


_SOURCES = {version: base_documents(version) + corpus_documents(version) for version in VERSIONS}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_same_verdict_on_mutated_documents(case: tuple[str, dict[str, Any]]) -> None:
    version, doc = case
    assert fast_valid(version, doc) == reference_valid(version, doc)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mutation", [
    ("machine", "type", 5),  # a number where a string goes
    ("machine", "kubelet", "image", ["a"]),
    ("machine", "install", "wipe", "yes"),  # a string where a boolean goes
    ("machine", "install", "bogus", 1),  # an unknown key
    ("cluster", "network", "cni", "name", "flanel"),  # an enum value with a typo
    ("machine", "network", "interfaces", [{"interface": "eth0", "mtu": True}]),  # true is not an integer
])
def test_known_invalid_documents_are_refused_by_both(version: str, mutation: tuple[Any, ...]) -> None:
    doc = copy.deepcopy(base_documents(version)[0])
    *path, key, value = mutation
    node = doc
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value
    assert reference_valid(version, doc) is False
    assert fast_valid(version, doc) is False


def test_a_keyword_it_does_not_compile_is_refused_not_ignored() -> None:
    compiler = fastschema.Compiler({"$defs": {"a": {"type": "string", "minLength": 3}}})
    with pytest.raises(fastschema.Unsupported):
        compiler.check(compiler.root["$defs"]["a"])


def test_json_equality_of_enum_values_is_strict_about_booleans() -> None:
    compiler = fastschema.Compiler({})
    check = compiler.check({"enum": [1, "a"]})
    assert check(1) and check(1.0) and check("a")
    assert not check(True) and not check("1")


def test_schema_files_use_only_compiled_keywords() -> None:
    # A new Talos schema with a keyword the fast check does not know would silently lose its speed.
    def keywords(node: Any, in_map: bool = False) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                found |= set() if in_map else {key}
                found |= keywords(value, not in_map and key in ("properties", "patternProperties", "$defs"))
        elif isinstance(node, list):
            for item in node:
                found |= keywords(item)
        return found

    for version in VERSIONS:
        used = keywords(ts._schema(version).root)
        assert used <= fastschema._COMPILED | fastschema._ANNOTATIONS, sorted(used - fastschema._COMPILED)
        assert {"$ref", "oneOf", "patternProperties", "additionalProperties", "enum"} <= used
