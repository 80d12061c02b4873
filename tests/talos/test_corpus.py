"""Real-world patches (tests/corpus, sources in tests/corpus/SOURCES.md): does Talos accept them, per version?

Each patch is decoded strictly (unknown kinds and keys) for v1.11, v1.12 and v1.13; an accepted patch is then
merged onto talosctl's base config of that version and Talos's ported ``Validate()`` rules are applied. The
verdicts must match ``tests/corpus/expected.yaml``.

The merge here is a stand-in (maps merge, lists append, ``$patch: delete``, documents by kind and name, JSON 6902
via jsonpatch) so the rules have a whole config to look at; the render pipeline should replace it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from pipeline.talos import schema as ts

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
PATCHES = sorted((CORPUS / "patches").glob("*.yaml"))
EXPECTED: dict[str, Any] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
STABILITY = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures" / "stability"


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if isinstance(value, dict) and value.get("$patch") == "delete":
                out.pop(key, None)
            else:
                out[key] = _merge(out.get(key), value) if key in out else _strip(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        deleted = [p for p in patch if isinstance(p, dict) and p.get("$patch") == "delete"]
        kept = [b for b in base if not any(_matches(b, d) for d in deleted)]
        return kept + [_strip(p) for p in patch if p not in deleted]
    return _strip(patch)


def _matches(item: Any, delete: dict) -> bool:
    keys = {k: v for k, v in delete.items() if k != "$patch"}
    return isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items())


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def merged_onto_base(docs: list[Any], version: str) -> list[Any]:
    text = (STABILITY / version / "base-controlplane.yaml").read_text(encoding="utf-8")
    config = [d for d in yaml.safe_load_all(text) if d is not None]
    for doc in docs:
        if isinstance(doc, list):
            config[0] = jsonpatch.apply_patch(config[0], doc)
        elif ts.document_kind(doc) == ts.MACHINE_CONFIG:
            config[0] = _merge(config[0], doc)
        else:
            ident = (doc.get("kind"), doc.get("name"))
            same = [d for d in config if (d.get("kind"), d.get("name")) == ident]
            merged = _merge(same[0], doc) if same else _strip(copy.deepcopy(doc))
            config = [d for d in config if (d.get("kind"), d.get("name")) != ident] + [merged]
    return config


class _GoOctalLoader(yaml.SafeLoader):
    """PyYAML plus go-yaml v3's ``0o644`` integers (the only Go-only scalar form in this corpus).

    A stand-in until the pipeline's single Go-semantics YAML layer can be used here.
    """


_GoOctalLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^0o[0-7]+$"), list("0"))
_GoOctalLoader.add_constructor(
    "tag:yaml.org,2002:int",
    lambda loader, node: (
        int(node.value[2:], 8) if node.value.startswith("0o") else yaml.SafeLoader.construct_yaml_int(loader, node)
    ),
)


def load(path: Path) -> list[Any]:
    return [d for d in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_GoOctalLoader) if d is not None]


def verdict(path: Path, version: str) -> dict[str, Any]:
    """What Talos does with this patch on a cluster of this version: accepts, or refuses with reasons.

    Accepted means: decodes strictly, and the config it yields on talosctl's base (types normalised as
    Talos decodes them) validates against the version's schema and passes the ported Validate() rules.
    """
    docs = load(path)
    findings = ts.strict_check(docs, version, path.name, patch=True)
    if not findings:
        config = ts.normalise_types(merged_onto_base(docs, version), version)
        findings = ts.validate(config, version, path.name)
    if not findings:
        return {"talos": "accepts"}
    return {"talos": "refuses", "reasons": [str(f).removeprefix(f"{path.name}: ") for f in findings]}


def test_corpus_is_large_and_varied_enough() -> None:
    assert len(PATCHES) >= 40
    assert len({p.name.split("__")[0] + "/" + p.name.split("__")[1] for p in PATCHES}) >= 6
    assert sorted(EXPECTED) == [p.name for p in PATCHES]
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for patch in PATCHES:
        assert f"`{patch.name}`" in sources, patch.name


@pytest.mark.parametrize("path", PATCHES, ids=lambda p: p.name)
def test_corpus_patch_verdicts_match_expected(path: Path) -> None:
    actual = {version: verdict(path, version) for version in ts.SUPPORTED}
    assert actual == EXPECTED[path.name]


def test_corpus_covers_accepts_and_refusals_on_every_version() -> None:
    for version in ts.SUPPORTED:
        outcomes = {EXPECTED[p.name][version]["talos"] for p in PATCHES}
        assert outcomes == {"accepts", "refuses"}, version
