"""Unit tests of pipeline.talos.patching: one small (config, patch, expected) case per rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.talos.patching import Patch, PatchError, apply_patches, load_documents, load_patch


def strategic(text: str, source: str = "patch.yaml") -> Patch:
    patch = load_patch(text, source)
    assert patch.kind == "strategic"
    return patch


def apply_one(config: str, patch: str) -> list[dict[str, Any]]:
    return apply_patches(load_documents(config, "config.yaml"), [load_patch(patch, "patch.yaml")])


V1 = "version: v1alpha1\n"


# --- maps and scalars ------------------------------------------------------


def test_maps_merge_key_by_key() -> None:
    out = apply_one(V1 + "machine: {network: {hostname: a}, type: worker}\n", "machine: {network: {mtu: 9000}}\n")
    assert out[0]["machine"] == {"network": {"hostname": "a", "mtu": 9000}, "type": "worker"}


def test_scalar_in_patch_wins() -> None:
    out = apply_one(V1 + "machine: {network: {hostname: a}}\n", "machine: {network: {hostname: b}}\n")
    assert out[0]["machine"]["network"]["hostname"] == "b"


@pytest.mark.parametrize("zero", ['""', "0", "0.0", "null"])
def test_zero_value_does_not_override(zero: str) -> None:
    out = apply_one(
        V1 + "machine: {kubelet: {image: x, port: 5}}\n", f"machine: {{kubelet: {{image: {zero}, port: {zero}}}}}\n"
    )
    assert out[0]["machine"]["kubelet"] == {"image": "x", "port": 5}


def test_explicit_false_overrides_true() -> None:
    out = apply_one(V1 + "machine: {features: {rbac: true}}\n", "machine: {features: {rbac: false}}\n")
    assert out[0]["machine"]["features"]["rbac"] is False


def test_new_keys_are_added_even_when_empty_string() -> None:
    # A label with an empty value is a real label.
    out = apply_one(V1 + "machine: {}\n", "machine: {nodeLabels: {role: ''}}\n")
    assert out[0]["machine"]["nodeLabels"] == {"role": ""}


def test_type_mismatch_is_a_patch_error() -> None:
    with pytest.raises(PatchError, match=r"cannot merge machine\.network") as caught:
        apply_one(V1 + "machine: {network: {hostname: a}}\n", "machine: {network: oops}\n")
    assert caught.value.path == "patch.yaml"


def test_yaml_11_scalars_stay_strings() -> None:
    docs = load_documents(V1 + "machine: {nodeLabels: {a: yes, b: off, c: 12:30, d: 2024-01-01}}\n", "c.yaml")
    assert docs[0]["machine"]["nodeLabels"] == {"a": "yes", "b": "off", "c": "12:30", "d": "2024-01-01"}


# --- lists -----------------------------------------------------------------


def test_lists_append_without_dedup() -> None:
    out = apply_one(V1 + "machine: {certSANs: [a, b]}\n", "machine: {certSANs: [b, c]}\n")
    assert out[0]["machine"]["certSANs"] == ["a", "b", "b", "c"]


def test_empty_list_does_not_clear() -> None:
    out = apply_one(V1 + "machine: {certSANs: [a]}\n", "machine: {certSANs: []}\n")
    assert out[0]["machine"]["certSANs"] == ["a"]


def test_interfaces_merge_by_interface_name() -> None:
    out = apply_one(
        V1 + "machine: {network: {interfaces: [{interface: eth0, dhcp: true}, {interface: eth1, mtu: 1}]}}\n",
        "machine: {network: {interfaces: [{interface: eth1, mtu: 9000, addresses: [10.0.0.1/24]}]}}\n",
    )
    assert out[0]["machine"]["network"]["interfaces"] == [
        {"interface": "eth0", "dhcp": True},
        {"interface": "eth1", "mtu": 9000, "addresses": ["10.0.0.1/24"]},
    ]


def test_interfaces_merge_by_device_selector() -> None:
    out = apply_one(
        V1 + "machine: {network: {interfaces: [{deviceSelector: {hardwareAddr: 'aa:*'}, dhcp: true}]}}\n",
        "machine: {network: {interfaces: [{deviceSelector: {hardwareAddr: 'aa:*'}, mtu: 1400},"
        " {deviceSelector: {driver: virtio}, mtu: 1}]}}\n",
    )
    assert out[0]["machine"]["network"]["interfaces"] == [
        {"deviceSelector": {"hardwareAddr": "aa:*"}, "dhcp": True, "mtu": 1400},
        {"deviceSelector": {"driver": "virtio"}, "mtu": 1},
    ]


def test_vlans_merge_by_vlan_id() -> None:
    out = apply_one(
        V1 + "machine: {network: {interfaces: [{interface: eth0, vlans: [{vlanId: 5, mtu: 1}]}]}}\n",
        "machine: {network: {interfaces: [{interface: eth0, vlans: [{vlanId: 5, mtu: 2}, {vlanId: 6}]}]}}\n",
    )
    assert out[0]["machine"]["network"]["interfaces"][0]["vlans"] == [{"vlanId": 5, "mtu": 2}, {"vlanId": 6}]


def test_admission_control_merges_by_name() -> None:
    out = apply_one(
        V1 + "cluster: {apiServer: {admissionControl: [{name: PodSecurity, configuration: {a: 1}}]}}\n",
        "cluster: {apiServer: {admissionControl: [{name: PodSecurity, configuration: {b: 2}}, {name: X}]}}\n",
    )
    assert out[0]["cluster"]["apiServer"]["admissionControl"] == [
        {"name": "PodSecurity", "configuration": {"a": 1, "b": 2}},
        {"name": "X"},
    ]


def test_keyed_items_in_one_patch_merge_among_themselves() -> None:
    out = apply_one(
        V1 + "machine: {network: {}}\n",
        "machine: {network: {interfaces: [{interface: a, mtu: 1}, {interface: a, dhcp: true}]}}\n",
    )
    assert out[0]["machine"]["network"]["interfaces"] == [{"interface": "a", "mtu": 1, "dhcp": True}]


def test_extension_service_config_files_merge_by_mount_path() -> None:
    head = "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: x\n"
    config = V1 + "---\n" + head + "configFiles: [{content: a, mountPath: /a}]\n"
    patch = head + "configFiles: [{content: b, mountPath: /a}, {content: c, mountPath: /c}]\n"
    out = apply_one(config, patch)
    assert out[1]["configFiles"] == [{"content": "b", "mountPath": "/a"}, {"content": "c", "mountPath": "/c"}]


@pytest.mark.parametrize("field", ["podSubnets", "serviceSubnets"])
def test_replace_fields_are_replaced_wholesale(field: str) -> None:
    out = apply_one(
        V1 + f"cluster: {{network: {{{field}: [10.0.0.0/8]}}}}\n", f"cluster: {{network: {{{field}: [10.1.0.0/16]}}}}\n"
    )
    assert out[0]["cluster"]["network"][field] == ["10.1.0.0/16"]


def test_audit_policy_is_replaced_wholesale() -> None:
    out = apply_one(
        V1 + "cluster: {apiServer: {auditPolicy: {kind: Policy, rules: [{level: Metadata}], omitStages: [x]}}}\n",
        "cluster: {apiServer: {auditPolicy: {kind: Policy, rules: [{level: None}]}}}\n",
    )
    assert out[0]["cluster"]["apiServer"]["auditPolicy"] == {"kind": "Policy", "rules": [{"level": "None"}]}


def test_replace_field_cleared_by_empty_list_but_not_by_empty_mapping() -> None:
    # Go decodes [] to a non-nil empty slice (set, so it replaces) and {} to a zero struct (not set).
    out = apply_one(
        V1 + "cluster: {network: {podSubnets: [10.0.0.0/8]}, apiServer: {auditPolicy: {kind: Policy}}}\n",
        "cluster: {network: {podSubnets: []}, apiServer: {auditPolicy: {}}}\n",
    )
    assert out[0]["cluster"] == {"network": {"podSubnets": []}, "apiServer": {"auditPolicy": {"kind": "Policy"}}}


def test_replace_fields_of_other_documents() -> None:
    head = "apiVersion: v1alpha1\nkind: NetworkRuleConfig\nname: r\n"
    out = apply_one(
        V1 + "---\n" + head + "portSelector: {ports: [22], protocol: tcp}\ningress: [{subnet: 10.0.0.0/8}]\n",
        head + "portSelector: {ports: [443]}\ningress: [{subnet: 192.168.0.0/16}]\n",
    )
    assert out[1]["portSelector"] == {"ports": [443], "protocol": "tcp"}
    assert out[1]["ingress"] == [{"subnet": "192.168.0.0/16"}]


def test_image_verification_rules_replace_by_image() -> None:
    head = "apiVersion: v1alpha1\nkind: ImageVerificationConfig\n"
    out = apply_one(
        V1 + "---\n" + head + "rules: [{image: 'a/*', skip: true, deny: false}, {image: 'b/*', skip: true}]\n",
        head + "rules: [{image: 'a/*', deny: true}, {image: 'c/*', skip: true}]\n",
    )
    assert out[1]["rules"] == [
        {"image": "a/*", "deny": True},
        {"image": "b/*", "skip": True},
        {"image": "c/*", "skip": True},
    ]


def test_extra_args_overwrite_per_key_and_lists_are_replaced() -> None:
    out = apply_one(
        V1 + "cluster: {apiServer: {extraArgs: {a: '1', b: [x, y], keep: k}}}\n",
        "cluster: {apiServer: {extraArgs: {a: '2', b: [z]}}}\n",
    )
    assert out[0]["cluster"]["apiServer"]["extraArgs"] == {"a": "2", "b": ["z"], "keep": "k"}


def test_inline_manifest_contents_leading_blank_lines_trimmed() -> None:
    out = apply_one(V1 + "cluster: {}\n", 'cluster: {inlineManifests: [{name: m, contents: "\\n\\t\\n  a: 1\\n"}]}\n')
    # Talos trims tabs and newlines but keeps leading spaces.
    assert out[0]["cluster"]["inlineManifests"] == [{"name": "m", "contents": "  a: 1\n"}]


# --- $patch: delete --------------------------------------------------------


def test_delete_a_key() -> None:
    out = apply_one(
        V1 + "machine: {network: {hostname: a, mtu: 1}}\n", "machine: {network: {hostname: {$patch: delete}}}\n"
    )
    assert out[0]["machine"]["network"] == {"mtu": 1}


def test_delete_a_list_item_selected_by_its_first_key() -> None:
    out = apply_one(
        V1 + "machine: {network: {interfaces: [{interface: eth0}, {interface: eth1}, {interface: eth0, x: 1}]}}\n",
        "machine: {network: {interfaces: [{interface: eth0, $patch: delete}]}}\n",
    )
    # Only the first match goes, as in Talos.
    assert out[0]["machine"]["network"]["interfaces"] == [{"interface": "eth1"}, {"interface": "eth0", "x": 1}]


def test_delete_runs_before_merge_of_the_same_document() -> None:
    head = "apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\n"
    out = apply_one(
        V1 + "---\n" + head + "addresses: [{address: 1.1.1.1/32}]\n",
        head + "addresses:\n  - {address: 2.2.2.2/32}\n  - {address: 1.1.1.1/32, $patch: delete}\n",
    )
    assert out[1]["addresses"] == [{"address": "2.2.2.2/32"}]


def test_delete_a_whole_document() -> None:
    out = apply_one(
        V1 + "machine: {}\n---\napiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: https://x\n",
        "apiVersion: v1alpha1\nkind: SideroLinkConfig\n$patch: delete\n",
    )
    assert out == [{"version": "v1alpha1", "machine": {}}]


def test_delete_of_an_absent_document_is_skipped() -> None:
    out = apply_one(V1 + "machine: {}\n", "apiVersion: v1alpha1\nkind: Nope\n$patch: delete\n")
    assert out == [{"version": "v1alpha1", "machine": {}}]
    # A path delete aimed at an absent document is skipped too, and adds no empty document.
    out = apply_one(V1 + "machine: {}\n", "apiVersion: v1alpha1\nkind: Nope\nname: x\nmtu: {$patch: delete}\n")
    assert out == [{"version": "v1alpha1", "machine": {}}]


def test_delete_of_a_missing_path_fails_with_talos_message() -> None:
    with pytest.raises(PatchError) as caught:
        apply_one(V1 + "machine: {}\n", "machine: {network: {hostname: {$patch: delete}}}\n")
    assert caught.value.path == "patch.yaml"
    assert (
        "patch delete: path 'machine.network.hostname' in document '/v1alpha1': "
        "failed to delete path 'machine.network.hostname': lookup failed"
    ) in caught.value.message


def test_delete_of_a_missing_last_key_fails_too() -> None:
    # Stricter than Talos, which only fails here for a map (not for a struct field it can zero):
    # without Go types we cannot tell the two apart, and failing loudly is the safe side.
    with pytest.raises(PatchError) as caught:
        apply_one(V1 + "machine: {network: {}}\n", "machine: {network: {hostname: {$patch: delete}}}\n")
    assert caught.value.path == "patch.yaml"
    assert (
        "patch delete: path 'machine.network.hostname' in document '/v1alpha1': "
        "failed to delete path 'machine.network.hostname': lookup failed"
    ) in caught.value.message


def test_delete_of_a_missing_list_item_fails() -> None:
    with pytest.raises(PatchError, match="lookup failed"):
        apply_one(
            V1 + "machine: {network: {interfaces: [{interface: eth0}]}}\n",
            "machine: {network: {interfaces: [{interface: eth9, $patch: delete}]}}\n",
        )


def test_delete_in_named_document_uses_talos_named_message() -> None:
    with pytest.raises(
        PatchError, match=r"named patch delete: document v1alpha1/LinkConfig: failed to delete path 'mtu'"
    ):
        apply_one(
            V1 + "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\n",
            "apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: {$patch: delete}\n",
        )


def test_v1alpha1_root_cannot_be_deleted() -> None:
    with pytest.raises(PatchError, match="v1alpha1 document cannot be deleted"):
        load_patch("version: v1alpha1\n$patch: delete\n", "p.yaml")
    with pytest.raises(PatchError, match="v1alpha1 document cannot be deleted"):
        apply_patches([{"version": "v1alpha1"}], [Patch("p.yaml", "strategic", ({"$patch": "delete"},))])


def test_delete_inside_a_list_item_is_refused() -> None:
    with pytest.raises(PatchError, match="cannot delete an inner key"):
        load_patch("machine: {network: {interfaces: [{interface: a, mtu: {$patch: delete}}]}}\n", "p.yaml")


def test_unsupported_patch_directive() -> None:
    with pytest.raises(PatchError, match=r"\$patch: replace"):
        load_patch("machine: {network: {$patch: replace}}\n", "p.yaml")


# --- documents -------------------------------------------------------------


def test_unmatched_patch_document_is_appended_and_v1alpha1_comes_first() -> None:
    docs = [{"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "a"}]
    patch = strategic("apiVersion: v1alpha1\nkind: KubeSpanConfig\nenabled: true\n---\n" + V1 + "machine: {}\n")
    out = apply_patches(docs, [patch])
    assert [doc.get("kind") for doc in out] == [None, "HostnameConfig", "KubeSpanConfig"]


def test_named_documents_are_matched_by_name() -> None:
    link = "apiVersion: v1alpha1\nkind: LinkConfig\nname: {}\nmtu: 1\n"
    config = V1 + "---\n" + link.format("a") + "---\n" + link.format("b")
    out = apply_one(config, "apiVersion: v1alpha1\nkind: LinkConfig\nname: b\nmtu: 2\n")
    assert [doc.get("mtu") for doc in out] == [None, 1, 2]


def test_json6902_on_multi_document_config_fails() -> None:
    with pytest.raises(PatchError, match="JSON6902 patches are not supported for multi-document machine configuration"):
        apply_one(V1 + "---\napiVersion: v1alpha1\nkind: X\n", '[{"op": "remove", "path": "/version"}]')


def test_json6902_applies_and_errors_name_the_op() -> None:
    out = apply_one(
        V1 + "machine: {network: {hostname: a}}\n", "- {op: replace, path: /machine/network/hostname, value: b}\n"
    )
    assert out[0]["machine"]["network"]["hostname"] == "b"
    with pytest.raises(PatchError) as caught:
        apply_one(
            V1 + "machine: {}\n", "- {op: test, path: /machine, value: {}}\n- {op: remove, path: /machine/nope}\n"
        )
    assert caught.value.path == "patch.yaml"
    assert "operation 2 (remove /machine/nope)" in caught.value.message


def test_apply_does_not_mutate_inputs() -> None:
    docs = load_documents(V1 + "machine: {certSANs: [a], network: {interfaces: [{interface: eth0}]}}\n", "c")
    patches = [
        strategic("machine: {certSANs: [b], network: {interfaces: [{interface: eth0, mtu: 1}], extra: {x: [1]}}}\n"),
        load_patch("- {op: add, path: /machine/certSANs/-, value: {nested: [1]}}\n", "j.yaml"),
    ]
    docs_before, patches_before = copy.deepcopy(docs), copy.deepcopy(patches)
    first = apply_patches(docs, patches)
    first[0]["machine"]["network"]["extra"]["x"].append(2)  # the result shares nothing with the patch
    first[0]["machine"]["certSANs"][-1]["nested"].append(2)
    assert apply_patches(docs, patches) != first
    assert docs == docs_before
    assert patches == patches_before


# --- load_patch ------------------------------------------------------------


def test_load_patch_bad_yaml_has_line_number() -> None:
    with pytest.raises(PatchError) as caught:
        load_patch("machine:\n  network:\n    hostname: [a\n", "patches/cp1.yaml")
    assert caught.value.path == "patches/cp1.yaml"
    assert caught.value.line == 4
    assert str(caught.value).startswith("patches/cp1.yaml:4: invalid YAML")


def test_load_patch_duplicate_key_has_line_number() -> None:
    with pytest.raises(PatchError) as caught:
        load_patch("machine:\n  type: worker\n  type: controlplane\n", "p.yaml")
    assert caught.value.line == 3
    assert "duplicate key 'type'" in caught.value.message


def test_load_patch_list_that_is_not_ops() -> None:
    with pytest.raises(PatchError, match="JSON 6902 operations") as caught:
        load_patch("- a\n- b\n", "p.yaml")
    assert caught.value.path == "p.yaml"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n---\n"])
def test_load_patch_empty_file(text: str) -> None:
    with pytest.raises(PatchError, match="empty patch"):
        load_patch(text, "p.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"op": "frobnicate", "path": "/a"}]', "unknown op 'frobnicate'"),
        ('[{"op": "add", "path": "a", "value": 1}]', "is not a JSON pointer"),
        ('[{"op": "add", "path": "/a"}]', "has no value"),
        ('[{"op": "move", "path": "/a"}]', "needs a 'from'"),
        ('[{"op": "remove"}]', "has no path"),
        ("- {op: remove, path: /a}\n- {op: nope, path: /b}\n", "operation 2 has unknown op"),
    ],
)
def test_load_patch_invalid_op(text: str, message: str) -> None:
    with pytest.raises(PatchError, match=message) as caught:
        load_patch(text, "ops.json")
    assert caught.value.path == "ops.json"


def test_load_patch_invalid_op_line_points_at_the_op() -> None:
    with pytest.raises(PatchError) as caught:
        load_patch("- op: remove\n  path: /a\n- op: nope\n  path: /b\n", "ops.yaml")
    assert caught.value.line == 3


@pytest.mark.parametrize("text", ["just a string\n", "42\n", "machine: {}\n---\n- {op: remove, path: /a}\n"])
def test_load_patch_scalar_or_mixed_documents(text: str) -> None:
    with pytest.raises(PatchError):
        load_patch(text, "p.yaml")


def test_load_patch_kinds() -> None:
    assert load_patch('[{"op": "remove", "path": "/a"}]', "p.json").kind == "json6902"
    two = load_patch("machine: {}\n---\n\n---\napiVersion: v1alpha1\nkind: X\n", "p.yaml")
    assert two.kind == "strategic"
    assert len(two.content) == 2  # the empty document is skipped


def test_load_patch_document_identity_checks() -> None:
    with pytest.raises(PatchError, match="missing apiVersion"):
        load_patch("kind: LinkConfig\nname: eth0\n", "p.yaml")
    with pytest.raises(PatchError, match="missing kind"):
        load_patch("apiVersion: v1alpha1\nname: eth0\n", "p.yaml")


def test_load_documents_errors() -> None:
    with pytest.raises(PipelineError) as caught:
        load_documents(V1 + "machine: {\n", "c.yaml")
    assert caught.value.path == "c.yaml"
    assert caught.value.line is not None
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_documents(V1 + "---\n- a\n", "c.yaml")
    with pytest.raises(PipelineError, match="duplicate document") as dup:
        load_documents(V1 + "---\n" + V1, "c.yaml")
    assert dup.value.line == 3


# --- properties ------------------------------------------------------------

_KEYS = st.sampled_from(
    ["machine", "cluster", "network", "hostname", "a", "b", "extraArgs", "nodeLabels", "auditPolicy", "apiServer"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", "x", "y", "delete"]),
)
_ANY_KEYS = st.one_of(_KEYS, st.sampled_from(["$patch", "kind", "apiVersion", "name", "version"]), st.text(max_size=3))


def _maps(keys: st.SearchStrategy[str], leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        st.dictionaries(keys, leaves, max_size=3),
        lambda children: st.dictionaries(keys, st.one_of(leaves, children), max_size=3),
        max_leaves=12,
    )


_BASE = st.builds(
    lambda body, extra: [{"version": "v1alpha1", **body}, *extra],
    _maps(_KEYS, st.one_of(_SCALARS, st.lists(st.sampled_from(["p", "q"]), max_size=2))),
    st.lists(
        st.builds(
            lambda body, name: {"apiVersion": "v1alpha1", "kind": "LinkConfig", "name": name, **body},
            _maps(_KEYS, _SCALARS),
            st.sampled_from(["eth0", "eth1"]),
        ),
        max_size=2,
        unique_by=lambda doc: doc["name"],
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(base=_BASE, patch_docs=st.lists(_maps(_ANY_KEYS, _SCALARS), min_size=1, max_size=3))
def test_property_map_patches_only_raise_patch_error(
    base: list[dict[str, Any]], patch_docs: list[dict[str, Any]]
) -> None:
    before = copy.deepcopy(base)
    try:
        apply_patches(base, [Patch("p.yaml", "strategic", tuple(patch_docs))])
    except PatchError as exc:
        assert exc.path == "p.yaml"
    assert base == before


@settings(max_examples=200)
@given(base=_BASE)
def test_property_empty_mapping_patch_is_identity(base: list[dict[str, Any]]) -> None:
    assert apply_patches(base, [Patch("p.yaml", "strategic", ({},))]) == base
    assert apply_patches(base, [strategic("{}\n")]) == base


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(base=_BASE, patch_doc=_maps(_KEYS, _SCALARS))
def test_property_map_patch_is_idempotent(base: list[dict[str, Any]], patch_doc: dict[str, Any]) -> None:
    patch = Patch("p.yaml", "strategic", (patch_doc,))
    try:
        once = apply_patches(base, [patch])
    except PatchError:
        assume(False)
        return
    assert apply_patches(once, [patch]) == once
