"""Strict decoding, type normalisation, schema validation and ported rules per Talos version."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.talos import schema as ts

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures"
VERSIONS = ("v1.11", "v1.12", "v1.13")
NETWORK_KINDS = ("HostnameConfig", "LinkAliasConfig", "BondConfig", "DHCPv4Config", "VLANConfig", "Layer2VIPConfig")


def base(version: str, role: str = "controlplane") -> list[dict]:
    path = FIXTURES / "stability" / version / f"base-{role}.yaml"
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def reasons(findings: list[ts.Finding]) -> list[tuple[str, str]]:
    return [(f.path, f.reason) for f in findings]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("role", ["controlplane", "worker"])
def test_talosctl_generated_configs_pass_strict_check_and_validation(version: str, role: str) -> None:
    docs = base(version, role)
    assert ts.strict_check(docs, version, "base.yaml") == []
    assert ts.validate(docs, version, "base.yaml") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_persist_is_decoded_although_the_schema_omits_it(version: str) -> None:
    assert ts.strict_check([{"version": "v1alpha1", "persist": True}], version, "p.yaml") == []


def test_network_document_kinds_are_registered_only_from_v1_12() -> None:
    assert not set(NETWORK_KINDS) & ts.registered_kinds("v1.11")
    assert set(NETWORK_KINDS) <= ts.registered_kinds("v1.12")
    assert set(NETWORK_KINDS) <= ts.registered_kinds("v1.13")
    assert "v1alpha1" in ts.registered_kinds("v1.11")
    # Talos's own name, not the schema's "KubeSpanEndpoints"
    assert "KubeSpanEndpointsConfig" in ts.registered_kinds("v1.11")


@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_v1_12_kinds_are_refused_on_v1_11(kind: str) -> None:
    doc = {"apiVersion": "v1alpha1", "kind": kind, "name": "x"}
    findings = ts.strict_check([{"machine": {}}, doc], "v1.11", "patches/net.yaml")
    assert len(findings) == 1
    assert findings[0].doc_index == 1
    assert "not registered" in findings[0].reason and kind in findings[0].reason
    assert str(findings[0]).startswith("patches/net.yaml: document 1")


def test_documents_without_kind_or_api_version_are_refused_as_talos_does() -> None:
    # Source: siderolabs/talos pkg/machinery/config/configloader/internal/decoder/decoder.go (decode), v1.12.11
    findings = ts.strict_check([{"kind": "HostnameConfig", "auto": "stable"}, {"foo": 1}], "v1.12", "p.yaml")
    assert [(f.doc_index, f.reason) for f in findings] == [(0, "missing apiVersion"), (1, "missing kind")]
    assert ts.strict_check([{"machine": {}}, {"version": "v1alpha1", "cluster": {}}], "v1.12", "p.yaml") == []


def test_unknown_api_version_is_not_registered() -> None:
    doc = {"apiVersion": "v1alpha2", "kind": "HostnameConfig", "auto": "stable"}
    assert "not registered" in ts.strict_check([doc], "v1.12", "p.yaml")[0].reason


@pytest.mark.parametrize("version", VERSIONS)
def test_mount_path_and_cluster_network_proxy_are_unknown_keys_everywhere(version: str) -> None:
    patch = {
        "machine": {"files": [{"path": "/var/a", "content": "x", "op": "create", "mountPath": "/var/a"}]},
        "cluster": {"network": {"proxy": {"disabled": True}}},
    }
    assert reasons(ts.strict_check([patch], version, "p.yaml", patch=True)) == [
        ("machine.files[0].mountPath", "unknown keys found during decoding"),
        ("cluster.network.proxy", "unknown keys found during decoding"),
    ]


def test_unknown_keys_are_found_deep_inside_lists_and_refs() -> None:
    patch = {"machine": {"kubelet": {"extraMounts": [{"destination": "/a", "options": ["bind"], "bogus": 1}]}}}
    assert reasons(ts.strict_check([patch], "v1.13", "p.yaml")) == [
        ("machine.kubelet.extraMounts[0].bogus", "unknown keys found during decoding")
    ]


def test_free_form_sections_accept_any_key() -> None:
    patch = {
        "machine": {"kubelet": {"extraConfig": {"anything": {"goes": 1}}}},
        "cluster": {"apiServer": {"admissionControl": [{"name": "x", "configuration": {"whatever": 1}}]}},
    }
    assert ts.strict_check([patch], "v1.12", "p.yaml") == []


def test_shape_mismatch_is_reported() -> None:
    patch = {"machine": {"certSANs": {"a": "b"}}}
    assert reasons(ts.strict_check([patch], "v1.11", "p.yaml")) == [
        ("machine.certSANs", "cannot decode a mapping into a list field")
    ]


def test_patch_directives_allowed_only_in_patches() -> None:
    patch = {"machine": {"network": {"$patch": "delete"}}}
    assert ts.strict_check([patch], "v1.11", "p.yaml", patch=True) == []
    assert reasons(ts.strict_check([patch], "v1.11", "p.yaml")) == [
        ("machine.network.$patch", "unknown keys found during decoding")
    ]


def test_json6902_paths_and_values_are_checked() -> None:
    ops = [
        {"op": "add", "path": "/cluster/etcd/extraArgs", "value": {"listen-metrics-urls": "http://0.0.0.0:2381"}},
        {"op": "add", "path": "/machine/network/interfaces/-", "value": {"interface": "eth0", "dhcp": True}},
        {"op": "remove", "path": "/machine/whatever"},
    ]
    assert ts.strict_check([ops], "v1.11", "p.yaml", patch=True) == []
    bad = [
        {"op": "add", "path": "/machine/files/0/mountPath", "value": "/x"},
        {"op": "replace", "path": "/cluster/network", "value": {"proxy": {"disabled": True}}},
    ]
    assert reasons(ts.strict_check([bad], "v1.12", "p.yaml", patch=True)) == [
        ("machine.files[0].mountPath", "unknown keys found during decoding"),
        ("cluster.network.proxy", "unknown keys found during decoding"),
    ]


def test_legacy_fields_still_decode_on_later_versions() -> None:
    # docgen:nodoc fields: absent from the v1.12/v1.13 schema, still decoded by Talos
    patch = {"machine": {"network": {"hostname": "n1"}, "features": {"stableHostname": False}}}
    for version in VERSIONS:
        assert ts.strict_check([patch], version, "p.yaml") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_legacy_sections_are_checked_key_by_key(version: str) -> None:
    # machine.network/registries/time/disks left the published schema (v1.12, v1.13) but not Talos's decoder
    patch = {
        "machine": {
            "network": {"interfaces": [{"interface": "bond0", "bond": {"mode": "active-backup", "miimon": 100}}]},
            "registries": {"mirrors": {"docker.io": {"endpoints": ["https://m.example"], "skipFallback": True}}},
            "time": {"servers": ["time.cloudflare.com"]},
            "disks": [{"device": "/dev/sdb", "partitions": [{"mountpoint": "/var/mnt/a"}]}],
        }
    }
    assert ts.strict_check([patch], version, "p.yaml") == []
    patch["machine"]["network"]["interfaces"][0]["bond"]["bogus"] = 1
    patch["machine"]["registries"]["mirrors"]["docker.io"]["endpoint"] = "x"
    patch["machine"]["disks"][0]["partitions"][0]["mountPath"] = "/x"
    assert reasons(ts.strict_check([patch], version, "p.yaml")) == [
        ("machine.network.interfaces[0].bond.bogus", "unknown keys found during decoding"),
        ("machine.registries.mirrors.docker.io.endpoint", "unknown keys found during decoding"),
        ("machine.disks[0].partitions[0].mountPath", "unknown keys found during decoding"),
    ]


def test_locate_puts_lines_on_findings() -> None:
    findings = ts.strict_check([{"machine": {"bogus": 1}}], "v1.11", "p.yaml", locate=lambda i, p: 7)
    assert findings[0].line == 7 and str(findings[0]).startswith("p.yaml:7: ")


@pytest.mark.parametrize("version", VERSIONS)
def test_string_maps_normalise_ints_bools_and_floats(version: str) -> None:
    patch = {
        "machine": {
            "kubelet": {"extraArgs": {"max-pods": 250, "rotate-server-certificates": True}},
            "sysctls": {"fs.inotify.max_user_watches": 1048576, "net.ipv4.ip_forward": 1},
            "nodeLabels": {"zone": 1.5, "ssd": False, "name": "already"},
            "install": {"wipe": True},
        },
        "cluster": {"apiServer": {"extraArgs": {"v": 2}}},
    }
    before = copy.deepcopy(patch)
    [out] = ts.normalise_types([patch], version)
    assert patch == before  # input untouched
    assert out["machine"]["kubelet"]["extraArgs"] == {"max-pods": "250", "rotate-server-certificates": "true"}
    assert out["machine"]["sysctls"] == {"fs.inotify.max_user_watches": "1048576", "net.ipv4.ip_forward": "1"}
    assert out["machine"]["nodeLabels"] == {"zone": "1.5", "ssd": "false", "name": "already"}
    assert out["machine"]["install"]["wipe"] is True  # a bool field stays a bool
    assert out["cluster"]["apiServer"]["extraArgs"] == {"v": "2"}


def test_normalise_uses_the_raw_text_when_given() -> None:
    raw = {(0, ("machine", "nodeLabels", "a")): "1e3", (0, ("machine", "nodeLabels", "b")): "0x1F"}
    doc = {"machine": {"nodeLabels": {"a": 1000.0, "b": 31, "c": 7}}}
    [out] = ts.normalise_types([doc], "v1.11", raw_text=lambda i, p: raw.get((i, p)))
    assert out["machine"]["nodeLabels"] == {"a": "1e3", "b": "0x1F", "c": "7"}


def test_normalise_keeps_v1_13_extra_args_lists() -> None:
    doc = {"machine": {"kubelet": {"extraArgs": {"feature-gates": ["A=true", "B=false"], "v": 3}}}}
    [out] = ts.normalise_types([doc], "v1.13")
    assert out["machine"]["kubelet"]["extraArgs"] == {"feature-gates": ["A=true", "B=false"], "v": "3"}


def test_normalised_documents_validate_and_raw_ones_do_not() -> None:
    docs = base("v1.12")
    docs[0]["machine"]["sysctls"] = {"vm.max_map_count": 262144}
    assert reasons(ts.validate(docs, "v1.12")) == [("machine.sysctls.vm.max_map_count", "must be of type string")]
    assert ts.validate(ts.normalise_types(docs, "v1.12"), "v1.12") == []


def test_findings_never_contain_values() -> None:
    secret = "s3cr3t-Value-9f8e7d"
    docs = base("v1.11")
    docs[0]["machine"]["type"] = secret
    docs[0]["cluster"]["controlPlane"]["endpoint"] = "ftp://" + secret
    docs[0]["machine"]["token"] = 424242424242
    docs[0]["machine"]["kubelet"]["bogus"] = secret
    findings = ts.validate(docs, "v1.11", "n.yaml") + ts.strict_check(docs, "v1.11", "n.yaml")
    assert {f.path for f in findings} >= {
        "machine.type",
        "cluster.controlPlane.endpoint",
        "machine.token",
        "machine.kubelet.bogus",
    }
    for f in findings:
        assert secret not in str(f) and "424242424242" not in str(f)


def test_unsupported_contract_is_bad_input() -> None:
    with pytest.raises(PipelineError, match="not supported"):
        ts.registered_kinds("v1.10")
    assert ts.contract_version("1.12.3") == "v1.12"


# --- Talos Validate() rules -------------------------------------------------------------------------------------


def with_hostname(version: str, **hostname_config: object) -> list[dict]:
    docs = [d for d in base(version) if ts.document_kind(d) != "HostnameConfig"]
    return [*docs, {"apiVersion": "v1alpha1", "kind": "HostnameConfig", **hostname_config}]


@pytest.mark.parametrize("version", ["v1.12", "v1.13"])
def test_legacy_static_hostname_conflicts_with_hostname_config(version: str) -> None:
    # Source: siderolabs/talos pkg/machinery/config/types/network/hostname.go (V1Alpha1ConflictValidate),
    # tags v1.12.11 and v1.13.9; called from pkg/machinery/config/container/container.go (Validate).
    docs = with_hostname(version, auto="stable")
    docs[0]["machine"].setdefault("network", {})["hostname"] = "node-1"
    findings = ts.validate(docs, version, "n.yaml")
    assert [(f.kind, f.path) for f in findings] == [("v1alpha1", "machine.network.hostname")]
    assert "static hostname is already set in v1alpha1 config" in findings[0].reason


@pytest.mark.parametrize("version", ["v1.12", "v1.13"])
def test_legacy_stable_hostname_conflicts_with_hostname_config(version: str) -> None:
    # Source: siderolabs/talos pkg/machinery/config/types/network/hostname.go (V1Alpha1ConflictValidate) and
    # pkg/machinery/config/types/v1alpha1/v1alpha1_network_bridge.go (AutoHostname), tags v1.12.11, v1.13.9.
    docs = with_hostname(version, auto="stable")
    docs[0]["machine"].setdefault("features", {})["stableHostname"] = True
    findings = ts.validate(docs, version)
    assert [f.path for f in findings] == ["machine.features.stableHostname"]
    assert "stable hostname is already set in v1alpha1 config" in findings[0].reason
    docs[0]["machine"]["features"]["stableHostname"] = False  # false is the legacy "talos-addr": no conflict
    assert ts.validate(docs, version) == []


@pytest.mark.parametrize("version", ["v1.12", "v1.13"])
def test_hostname_config_with_auto_and_hostname_is_invalid(version: str) -> None:
    # Source: siderolabs/talos pkg/machinery/config/types/network/hostname.go (HostnameConfigV1Alpha1.Validate),
    # tags v1.12.11 and v1.13.9.
    findings = ts.validate(with_hostname(version, auto="stable", hostname="node-1"), version)
    assert [f.reason for f in findings] == ["'auto' and 'hostname' cannot be set at the same time"]
    assert ts.validate(with_hostname(version, auto="off", hostname="node-1"), version) == []
    assert ts.validate(with_hostname(version, hostname="node-1"), version) == []


@pytest.mark.parametrize("version", ["v1.12", "v1.13"])
def test_hostname_config_needs_auto_or_hostname_and_a_valid_label(version: str) -> None:
    # Source: siderolabs/talos pkg/machinery/config/types/network/hostname.go (HostnameConfigV1Alpha1.Validate),
    # tags v1.12.11 and v1.13.9.
    assert [f.reason for f in ts.validate(with_hostname(version), version)] == [
        "either 'auto' or 'hostname' must be set"
    ]
    long_label = "a" * 64 + ".example.com"
    reasons_ = [f.reason for f in ts.validate(with_hostname(version, hostname=long_label), version)]
    assert reasons_ == ["invalid hostname (first label must be 1-63 characters)"]
    assert any(
        "fqdn is too long" in f.reason for f in ts.validate(with_hostname(version, hostname="a." * 130), version)
    )


def test_hostname_rules_do_not_apply_on_v1_11() -> None:
    docs = base("v1.11")
    docs[0]["machine"].setdefault("network", {})["hostname"] = "node-1"
    assert ts.validate(docs, "v1.11") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_extra_kernel_args_conflict_with_uki_cmdline_from_v1_12(version: str) -> None:
    # Source: siderolabs/talos pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (Config.Validate,
    # "install.extraKernelArgs and install.grubUseUKICmdline can't be used together"), present at v1.12.11 and
    # v1.13.9, absent at v1.11.6. talosctl's v1.12/v1.13 bases set grubUseUKICmdline: true.
    docs = base(version)
    docs[0]["machine"]["install"]["extraKernelArgs"] = ["mitigations=off"]
    docs[0]["machine"]["install"]["grubUseUKICmdline"] = True
    findings = ts.validate(docs, version)
    if version == "v1.11":
        assert not [f for f in findings if f.path == "machine.install.extraKernelArgs"]
    else:
        assert [(f.path, f.reason) for f in findings] == [
            (
                "machine.install.extraKernelArgs",
                "install.extraKernelArgs and install.grubUseUKICmdline can't be used together",
            )
        ]
        docs[0]["machine"]["install"]["grubUseUKICmdline"] = False
        assert ts.validate(docs, version) == []


# --- where the published schema is not what Talos decodes ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_fields_the_published_schema_mistypes_are_accepted_as_talos_decodes_them(version: str) -> None:
    # Source: siderolabs/talos pkg/machinery/config/types/v1alpha1/v1alpha1_types.go: Endpoint.UnmarshalYAML reads a
    # URL string; MachineConfig/ClusterConfig acceptedCAs are lists of PEMEncodedCertificate; Device.DeviceCIDR and
    # Vlan.VlanCIDR (`cidr`) are still decoded. The JSON schema says object, object, and (v1.12+) unknown key.
    patch = {"machine": {
        "logging": {"destinations": [{"endpoint": "udp://10.0.0.5:5140/", "format": "json_lines"}]},
        "acceptedCAs": [{"crt": "LS0tLS1CRUdJTi..."}],
        "network": {"interfaces": [{"interface": "eth0", "cidr": "10.0.0.7/24",
                                    "vlans": [{"vlanId": 20, "cidr": "10.20.0.7/24"}]}]},
    }, "cluster": {"acceptedCAs": [{"crt": "LS0tLS1CRUdJTi..."}]}}
    assert ts.strict_check([patch], version, "patches/logging.yaml", patch=True) == []
    docs = base(version)
    config = docs[0]
    config["machine"].update(copy.deepcopy(patch["machine"]))
    config["cluster"]["acceptedCAs"] = patch["cluster"]["acceptedCAs"]
    assert [str(f) for f in ts.validate(docs, version)] == []
    # ... and the wrong shapes are still refused, by type.
    config["machine"]["acceptedCAs"] = {"crt": "x"}
    config["machine"]["logging"]["destinations"][0]["endpoint"] = {"host": "x"}
    found = {(f.path, f.reason) for f in ts.validate(docs, version)}
    assert ("machine.acceptedCAs", "must be of type array") in found
    assert ("machine.logging.destinations[0].endpoint", "must be of type string") in found
