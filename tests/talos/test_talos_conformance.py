"""Our patcher against Talos's own configpatcher test data (the oracle in shared/talos-fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.talos.patching import PatchError, apply_patches, load_documents, load_patch

# The repo's parent holds shared/ (at /work/main locally; CI clones the repo beside its own shared/).
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "talos-fixtures"
CONFIGPATCHER = FIXTURES / "configpatcher"

# The README's table: (case id, input, patches in order, expected file or None, expected error text or None).
CASES: list[tuple[str, str, list[str], str | None, str | None]] = [
    (
        "apply",
        "apply/config.yaml",
        ["strategic1", "jsonpatch1", "jsonpatch2", "strategic2", "strategic3"],
        "apply/expected.yaml",
        None,
    ),
    ("apply-inline-manifest-newlines", "apply/config.yaml", ["strategic4"], "apply/expected_manifests.yaml", None),
    ("multidoc", "multidoc/config.yaml", ["strategic1", "strategic2", "strategic3"], "multidoc/expected.yaml", None),
    (
        "multidoc-jsonpatch",
        "multidoc/config.yaml",
        ["jsonpatch", "strategic1"],
        None,
        "JSON6902 patches are not supported for multi-document machine configuration",
    ),
    ("auditpolicy-replace", "auditpolicy/config.yaml", ["patch1"], "auditpolicy/expected.yaml", None),
    ("patchdelete", "patchdelete/config.yaml", ["strategic1"], "patchdelete/expected.yaml", None),
    (
        "patchdelete-controlplane",
        "patchdelete/controlplane_orig.yaml",
        ["strategic2", "strategic3", "strategic4"],
        "patchdelete/controlplane_expected.yaml",
        None,
    ),
    (
        "patchdelete-missing",
        "patchdeletemissing/config.yaml",
        ["strategic1"],
        None,
        "patch delete: path 'machine.network.hostname' in document '/v1alpha1': "
        "failed to delete path 'machine.network.hostname': lookup failed",
    ),
    ("patchlink", "patchlink/base.yaml", ["patch"], "patchlink/expected.yaml", None),
    ("patchmixed", "patchmixed/base.yaml", ["patch"], "patchmixed/expected.yaml", None),
]


def _read(relative: str) -> str:
    path = CONFIGPATCHER / relative
    # A missing fixture is a broken test setup: fail loudly, never skip.
    assert path.is_file(), f"Talos fixture missing: {path} (shared/talos-fixtures must sit beside the repo)"
    return path.read_text(encoding="utf-8")


def _strip_defaults(value: Any) -> Any:
    """Drop what Talos's Go encoder adds: null, "", [] and {} values (e.g. `type: ""`, `certSANs: []`).

    Applied to both sides, so only encoding noise is ignored; ``false`` and ``0`` stay.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _strip_defaults(item)
            if item is None or item == "" or item == [] or item == {}:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [_strip_defaults(item) for item in value]
    return value


def _run(case_input: str, patch_names: list[str]) -> list[dict[str, Any]]:
    folder = case_input.split("/")[0]
    documents = load_documents(_read(case_input), case_input)
    patches = [load_patch(_read(f"{folder}/{name}.yaml"), f"{folder}/{name}.yaml") for name in patch_names]
    return apply_patches(documents, patches)


def test_fixtures_are_present() -> None:
    assert (FIXTURES / "README.md").is_file(), f"Talos fixtures not found at {FIXTURES}"


def test_table_matches_readme() -> None:
    # Every input named in the README's configpatcher table is exercised here.
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for _, case_input, *_ in CASES:
        assert case_input in readme
    table_rows = [line for line in readme.splitlines() if line.startswith("| ") and "/" in line.split("|")[2]]
    assert len(table_rows) == len(CASES)


@pytest.mark.parametrize(
    ("case_input", "patch_names", "expected", "error"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_configpatcher_case(case_input: str, patch_names: list[str], expected: str | None, error: str | None) -> None:
    if error is not None:
        with pytest.raises(PatchError) as caught:
            _run(case_input, patch_names)
        assert error in caught.value.message
        return
    assert expected is not None
    result = _run(case_input, patch_names)
    want = load_documents(_read(expected), expected)
    assert [_strip_defaults(doc) for doc in result] == [_strip_defaults(doc) for doc in want]


def test_inline_manifest_leading_newline_is_trimmed_exactly() -> None:
    # The normalisation of the comparison must not hide this one: compare the string itself.
    result = _run("apply/config.yaml", ["strategic4"])
    want = load_documents(_read("apply/expected_manifests.yaml"), "expected")
    contents = result[0]["cluster"]["inlineManifests"][0]["contents"]
    assert contents == want[0]["cluster"]["inlineManifests"][0]["contents"]
    assert contents.startswith("---\n")


def test_explicit_false_overrides_true_in_fixture() -> None:
    result = _run("multidoc/config.yaml", ["strategic1"])
    assert result[0]["machine"]["network"]["interfaces"] == [{"interface": "eth0", "dhcp": False}]


def test_inputs_are_not_mutated_by_fixture_cases() -> None:
    documents = load_documents(_read("patchdelete/config.yaml"), "config")
    patch = load_patch(_read("patchdelete/strategic1.yaml"), "strategic1")
    before_docs = repr(documents)
    before_patch = repr(patch)
    apply_patches(documents, [patch])
    apply_patches(documents, [patch])
    assert repr(documents) == before_docs
    assert repr(patch) == before_patch


@pytest.mark.parametrize(
    ("name", "kind", "content"),
    [
        ("patch.json", "json6902", [{"op": "add", "path": "/machine/certSANs", "value": ["foo.com"]}]),
        ("patch.yaml", "json6902", [{"op": "add", "path": "/some/path", "value": ["a", "b", "c"]}]),
        ("strategic.yaml", "strategic", ({"machine": {"network": {"hostname": "foo.bar"}}},)),
    ],
)
def test_loader_examples(name: str, kind: str, content: Any) -> None:
    patch = load_patch(_read(name), name)
    assert patch.kind == kind
    assert patch.source == name
    assert patch.content == content


def test_json_and_yaml_loader_examples_apply_alike() -> None:
    documents = load_documents(_read("apply/config.yaml"), "config")
    as_json = apply_patches(documents, [load_patch(_read("patch.json"), "patch.json")])
    assert as_json[0]["machine"]["certSANs"] == ["foo.com"]
    with pytest.raises(PatchError, match="operation 1"):
        # /some/path does not exist in the config: the add's parent is missing.
        apply_patches(documents, [load_patch(_read("patch.yaml"), "patch.yaml")])
