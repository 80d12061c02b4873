"""Real-world patches (tests/corpus, sources in tests/corpus/SOURCES.md) through the real render, per Talos version.

Each patch is read by the pipeline's YAML layer (go-yaml v3 typing), decoded strictly for v1.11, v1.12 and v1.13
(unknown kinds and keys), merged by the pipeline's own merge onto talosctl's base config of that version (plus the
install disk every cluster.yaml names), its types normalised as Talos decodes them, and checked against the
version's JSON schema and Talos's ported ``Validate()`` rules: exactly what ``render_node`` does. The verdicts
must match ``tests/corpus/expected.yaml``. An accepted patch is then checked field by field in the rendered
config, written, encrypted with the real sops binary and decrypted again: the decrypted documents must equal the
rendered ones (what ``doit verify`` and ``doit drill`` compare).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.talos import schema as ts
from pipeline.talos.baseconfig import dump_documents
from pipeline.talos.patching import Patch, apply_patches_traced, load_patch
from pipeline.talos.validation import check_node_config, check_patches
from pipeline.talos.yaml import load_documents
from tests.talos.test_sops_roundtrip import age_key, sops  # noqa: F401  (age_key: a fixture used here)

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
PATCHES = sorted((CORPUS / "patches").glob("*.yaml"))
EXPECTED: dict[str, Any] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
STABILITY = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures" / "stability"
INSTALL = Patch("cluster.yaml", "strategic", ({"machine": {"install": {"disk": "/dev/sda"}}},))


def base(version: str) -> list[Any]:
    """talosctl's controlplane base config for ``version``, read as the pipeline reads a decrypted base."""
    text = (STABILITY / version / "base-controlplane.yaml").read_text(encoding="utf-8")
    return [doc for doc in load_documents(text, f"base-{version}") if doc is not None]


def load(path: Path) -> Patch:
    return load_patch(path.read_text(encoding="utf-8"), f"patches/{path.name}")


def merged_onto_base(patch: Patch, version: str) -> list[Any]:
    """The pipeline's own merge (not a stand-in) of the patch onto the base, types as Talos decodes them."""
    merged, provenance = apply_patches_traced(base(version), [INSTALL, patch])
    return ts.normalise_types(merged, version, raw_text=lambda i, p: provenance.raw_text(merged[i], p))


def verdict(path: Path, version: str) -> dict[str, Any]:
    """What Talos does with this patch on a cluster of this version: accepts, or refuses with reasons.

    Accepted means: decodes strictly, and the config the pipeline merges from it on talosctl's base
    validates against the version's schema and passes the ported Validate() rules.
    """
    patch = load(path)
    documents = [patch.content] if patch.kind == "json6902" else list(patch.content)
    findings = ts.strict_check(documents, version, path.name, patch=True)
    if not findings:
        try:
            findings = ts.validate(merged_onto_base(patch, version), version, path.name)
        except PipelineError as error:  # the merge itself refuses it, as Talos's configpatcher does
            return {"talos": "refuses", "reasons": [error.message]}
    if not findings:
        return {"talos": "accepts"}
    return {"talos": "refuses", "reasons": [str(f).removeprefix(f"{path.name}: ") for f in findings]}


def render(patch: Patch, version: str) -> list[Any]:
    """``render_node``'s steps for one node whose only patch is ``patch``; PipelineError when refused."""
    check_patches([patch], version)
    merged, provenance = apply_patches_traced(base(version), [INSTALL, patch])
    return check_node_config(merged, "cp1", version, provenance)


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


def _same(left: Any, right: Any) -> bool:
    # Go's values: bools apart from numbers; sops writes an integral float below 1e6 as an int.
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, bool | str) or isinstance(right, bool | str):
        return type(left) is type(right) and left == right
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    return bool(left == right)


def _effect_problems(
    patch_doc: Any, rendered: Any, raw: dict[tuple[Any, ...], str], path: tuple[Any, ...] = ()
) -> list[str]:
    """Where the rendered config does not hold what a strategic patch document says (``$patch`` aside)."""
    if isinstance(patch_doc, dict):
        if "$patch" in patch_doc:
            return []
        if not isinstance(rendered, dict):
            return [f"{path}: not a mapping"]
        problems = []
        for key, value in patch_doc.items():
            if value is None:
                continue  # null never sets anything in Talos's merge
            if key not in rendered:
                problems.append(f"{(*path, key)}: missing")
            else:
                problems.extend(_effect_problems(value, rendered[key], raw, (*path, key)))
        return problems
    if isinstance(patch_doc, list):
        ok = isinstance(rendered, list) and len(rendered) >= len([i for i in patch_doc if not
                                                                 (isinstance(i, dict) and "$patch" in i)])
        return [] if ok or not patch_doc else [f"{path}: list items missing"]
    if patch_doc in ("", 0) and not isinstance(patch_doc, bool):
        return []  # Go's zero value: the merge keeps what the base had
    if _same(patch_doc, rendered) or rendered == raw.get(path) or rendered == _go_text(patch_doc):
        return []  # as written, or as the string Talos decodes it into
    return [f"{path}: differs"]


def _go_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


@pytest.mark.parametrize("version", ts.SUPPORTED)
def test_corpus_through_the_render_and_sops(version: str, age_key: tuple[Path, str],  # noqa: F811
                                            tmp_path: Path) -> None:
    """Every patch: the real render accepts exactly the expected ones (refusals are one line naming the patch),
    an accepted one has its effect in the rendered config, and the artefact decrypts to the rendered documents."""
    key, public = age_key
    accepted = 0
    for path in PATCHES:
        patch = load(path)
        expected = EXPECTED[path.name][version]["talos"]
        try:
            rendered = render(patch, version)
        except PipelineError as error:
            assert expected == "refuses", f"{path.name}: {error}"
            assert "\n" not in str(error) and f"patches/{path.name}" in str(error), str(error)
            continue
        assert expected == "accepts", path.name
        accepted += 1
        if patch.kind == "strategic":
            for index, doc in enumerate(patch.content):
                target = next(d for d in rendered if ts.document_kind(d) == ts.document_kind(doc)
                              and d.get("name") == doc.get("name"))
                assert _effect_problems(doc, target, patch.raw[index]) == [], path.name
        plain = tmp_path / "cp1.yaml"
        plain.write_text(dump_documents(rendered))
        (tmp_path / "cp1.enc.yaml").write_text(sops(["--encrypt", "--age", public, str(plain)], key, tmp_path))
        decrypted = sops(["--decrypt", "cp1.enc.yaml"], key, tmp_path)
        stored = [doc for doc in load_documents(decrypted, "decrypted") if doc is not None]
        assert _same(stored, rendered), f"{path.name}: the decrypted artefact differs from the render"
    assert accepted >= 20


def test_corpus_covers_accepts_and_refusals_on_every_version() -> None:
    for version in ts.SUPPORTED:
        outcomes = {EXPECTED[p.name][version]["talos"] for p in PATCHES}
        assert outcomes == {"accepts", "refuses"}, version
