"""Provenance recorded during the merge: which patch file:line brought each value of a merged config."""

from __future__ import annotations

from typing import Any

from pipeline.talos.patching import Origin, apply_patches, apply_patches_traced, load_patch

BASE: list[dict[str, Any]] = [
    {
        "version": "v1alpha1",
        "machine": {
            "type": "worker",
            "network": {"interfaces": [{"interface": "eth0", "mtu": 1500}]},
            "certSANs": ["a"],
        },
        "cluster": {"inlineManifests": [{"name": "base", "contents": "x"}]},
    },
]


def test_values_point_at_the_patch_line_that_wrote_them() -> None:
    first = load_patch("machine:\n  certSANs:\n    - b\n  nodeLabels:\n    rack: 1e3\n", "patches/one.yaml")
    second = load_patch(
        "# comment\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        mtu: 9000\n"
        "cluster:\n  inlineManifests:\n    - name: cni\n      contents: y\n",
        "patches/two.yaml",
    )
    merged, trace = apply_patches_traced(BASE, [first, second])
    assert merged == apply_patches(BASE, [first, second])  # tracing changes nothing
    doc = merged[0]
    assert trace.origin(doc, ("machine", "certSANs", 1)) == Origin("patches/one.yaml", 3)  # appended item
    assert trace.origin(doc, ("machine", "certSANs", 0)) is None  # the base's
    assert trace.origin(doc, ("machine", "nodeLabels", "rack")) == Origin("patches/one.yaml", 5)
    assert trace.raw_text(doc, ("machine", "nodeLabels", "rack")) == "1e3"  # as written, for string fields
    # A keyed merge (interfaces by name): the merged item's mtu is the second patch's, at its line.
    assert trace.origin(doc, ("machine", "network", "interfaces", 0, "mtu")) == Origin("patches/two.yaml", 6)
    assert trace.origin(doc, ("cluster", "inlineManifests", 1, "name")) == Origin("patches/two.yaml", 9)


def test_a_deleted_list_item_moves_the_later_ones_up() -> None:
    add = load_patch("machine:\n  certSANs:\n    - b\n    - c\n", "patches/add.yaml")
    removal = load_patch("cluster:\n  inlineManifests:\n    - name: base\n      $patch: delete\n", "patches/rm.yaml")
    extra = load_patch("cluster:\n  inlineManifests:\n    - name: late\n      contents: z\n", "patches/late.yaml")
    merged, trace = apply_patches_traced(BASE, [add, extra, removal])
    doc = merged[0]
    assert [m["name"] for m in doc["cluster"]["inlineManifests"]] == ["late"]
    assert trace.origin(doc, ("cluster", "inlineManifests", 0, "name")) == Origin("patches/late.yaml", 3)
    assert trace.origin(doc, ("machine", "certSANs", 2)) == Origin("patches/add.yaml", 4)


def test_json6902_operations_are_recorded_at_the_operation() -> None:
    patch = load_patch(
        "- op: add\n  path: /machine/sysctls\n  value:\n    a: '1'\n- op: replace\n  path: /machine/type\n"
        "  value: controlplane\n",
        "patches/ops.yaml",
    )
    merged, trace = apply_patches_traced(BASE, [patch])
    doc = merged[0]
    assert trace.origin(doc, ("machine", "sysctls", "a")) == Origin("patches/ops.yaml", 4)
    assert trace.origin(doc, ("machine", "type")) == Origin("patches/ops.yaml", 7)


def test_a_replaced_subtree_forgets_what_was_recorded_under_it() -> None:
    first = load_patch("cluster:\n  apiServer:\n    auditPolicy:\n      rules:\n        - level: None\n",
                       "patches/a.yaml")
    second = load_patch("cluster:\n  apiServer:\n    auditPolicy:\n      kind: Policy\n", "patches/b.yaml")
    merged, trace = apply_patches_traced(BASE, [first, second])
    doc = merged[0]
    assert doc["cluster"]["apiServer"]["auditPolicy"] == {"kind": "Policy"}  # merge:"replace"
    assert trace.origin(doc, ("cluster", "apiServer", "auditPolicy", "kind")) == Origin("patches/b.yaml", 4)
    assert trace.origin(doc, ("cluster", "apiServer", "auditPolicy", "rules")).source == "patches/b.yaml"
