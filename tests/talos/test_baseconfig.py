"""Base configs and talosconfig: measured against the configs talosctl itself generates."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from pipeline.errors import PipelineError
from pipeline.talos.adopt import bundle_from_controlplane_config as bundle_from_config
from pipeline.talos.baseconfig import (
    ClusterParams,
    contract,
    dump_documents,
    generate_base,
    generate_talosconfig,
)
from pipeline.talos.secrets_bundle import generate_bundle, load_certificate, load_private_key

# CI clones the repository elsewhere with shared/ beside it.
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "talos-fixtures"

VERSIONS = ["v1.11", "v1.12", "v1.13"]
ROLES = ["controlplane", "worker"]
CP_IMAGES = ("apiServer", "controllerManager", "proxy", "scheduler")


def fixture(*parts: str) -> Path:
    """A fixture file; its absence is a failure (never a skip): the oracle must be there."""
    path = FIXTURES.joinpath(*parts)
    if not path.is_file():
        pytest.fail(f"Talos fixture missing: {path} (shared/talos-fixtures must sit beside the repository)")
    return path


def stability_text(version: str, role: str) -> str:
    return fixture("stability", version, f"base-{role}.yaml").read_text()


def stability_bundle(version: str) -> dict:
    return bundle_from_config(list(yaml.safe_load_all(stability_text(version, "controlplane"))))


def base_params(version: str, **overrides: Any) -> ClusterParams:
    values: dict[str, Any] = {
        "name": "base",
        "endpoint": "https://base:6443",
        "talos_version": f"{version}.0",
        "kubernetes_version": "v1.28.0",
    }
    values.update(overrides)
    return ClusterParams(**values)


def key_order(value: Any) -> Any:
    """Keys in order, recursively: dict equality alone ignores order."""
    if isinstance(value, dict):
        return [(key, key_order(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [key_order(item) for item in value]
    return value


@pytest.fixture(scope="module")
def bundle() -> dict:
    return generate_bundle("v1.12")


# --- the oracle --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("version", VERSIONS)
def test_matches_talosctl_output(version: str, role: str) -> None:
    text = stability_text(version, role)
    generated = generate_base(role, stability_bundle(version), base_params(version))
    assert generated == list(yaml.safe_load_all(text))
    assert key_order(generated) == key_order(list(yaml.safe_load_all(text)))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("version", VERSIONS)
def test_dump_reproduces_talos_encoding_byte_for_byte(version: str, role: str) -> None:
    text = stability_text(version, role)
    assert dump_documents(generate_base(role, stability_bundle(version), base_params(version))) == text


@pytest.mark.parametrize("version", VERSIONS)
def test_patch_version_and_bare_contract_give_the_same_config(version: str) -> None:
    bundle = stability_bundle(version)
    assert generate_base("worker", bundle, base_params(version)) == generate_base(
        "worker", bundle, base_params(version, talos_version=version)
    )


def test_v1_11_config_validates_against_talos_schema(bundle: dict) -> None:
    schema = json.loads(fixture("schema", "v1.11", "config.schema.json").read_text())
    # Validate against the v1alpha1 definition itself, not the kind-dispatching top level.
    top = {key: value for key, value in schema.items() if key != "oneOf"}
    validator = jsonschema.Draft202012Validator({**top, "$ref": "#/$defs/v1alpha1.Config"})
    for role in ROLES:
        params = base_params("v1.11", install_disk="/dev/nvme0n1", talos_version="v1.11.5")
        document = generate_base(role, bundle, params)[0]
        document.pop("persist")  # the schema's known quirk: talosctl still emits it
        errors = [error.message for error in validator.iter_errors(document)]
        assert errors == []


# --- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("k8s", ["v1.34.1", "1.34.1"])
def test_kubernetes_version_flows_into_every_image(bundle: dict, version: str, k8s: str) -> None:
    cp = generate_base("controlplane", bundle, base_params(version, kubernetes_version=k8s))[0]
    assert cp["machine"]["kubelet"]["image"] == "ghcr.io/siderolabs/kubelet:v1.34.1"
    assert {cp["cluster"][part]["image"] for part in CP_IMAGES} == {
        "registry.k8s.io/kube-apiserver:v1.34.1",
        "registry.k8s.io/kube-controller-manager:v1.34.1",
        "registry.k8s.io/kube-proxy:v1.34.1",
        "registry.k8s.io/kube-scheduler:v1.34.1",
    }
    worker = generate_base("worker", bundle, base_params(version, kubernetes_version=k8s))[0]
    assert worker["machine"]["kubelet"]["image"] == "ghcr.io/siderolabs/kubelet:v1.34.1"
    assert not any(part in worker["cluster"] for part in CP_IMAGES)


@pytest.mark.parametrize("k8s", ["", "latest", "1.34", "v1.34.1 ", "1.34.1; rm"])
def test_invalid_kubernetes_version(bundle: dict, k8s: str) -> None:
    if k8s == "v1.34.1 ":
        # Surrounding whitespace is harmless and trimmed.
        generate_base("worker", bundle, base_params("v1.11", kubernetes_version=k8s))
        return
    with pytest.raises(PipelineError, match="Kubernetes version"):
        generate_base("worker", bundle, base_params("v1.11", kubernetes_version=k8s))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("version", VERSIONS)
def test_install_disk_adds_disk_and_talosctl_default_image(bundle: dict, version: str, role: str) -> None:
    params = base_params(version, talos_version=f"{version}.5", install_disk="/dev/sda")
    install = generate_base(role, bundle, params)[0]["machine"]["install"]
    assert install["disk"] == "/dev/sda"
    assert install["image"] == f"ghcr.io/siderolabs/installer:{version}.5"
    assert list(install)[:3] == ["disk", "image", "wipe"]  # Talos's field order
    assert install["wipe"] is False
    # Everything else stays as in the fixture.
    plain = generate_base(role, bundle, base_params(version))[0]
    changed = generate_base(role, bundle, params)[0]
    changed["machine"]["install"] = {k: v for k, v in install.items() if k not in ("disk", "image")}
    assert changed == plain


def test_install_image_overrides_the_default(bundle: dict) -> None:
    params = base_params("v1.12", install_disk="/dev/vda", install_image="factory.talos.dev/installer/abc:v1.12.1")
    install = generate_base("worker", bundle, params)[0]["machine"]["install"]
    assert install == {
        "disk": "/dev/vda",
        "image": "factory.talos.dev/installer/abc:v1.12.1",
        "wipe": False,
        "grubUseUKICmdline": True,
    }


def test_install_disk_with_only_a_contract_needs_an_image(bundle: dict) -> None:
    with pytest.raises(PipelineError, match="install_image"):
        generate_base("worker", bundle, base_params("v1.11", talos_version="v1.11", install_disk="/dev/sda"))
    params = base_params("v1.11", talos_version="v1.11", install_disk="/dev/sda", install_image="my/installer:x")
    assert generate_base("worker", bundle, params)[0]["machine"]["install"]["image"] == "my/installer:x"


@pytest.mark.parametrize("version", ["v1.10.3", "v1.14.0", "v2.0.0", "nonsense"])
def test_unsupported_talos_version_lists_supported(bundle: dict, version: str) -> None:
    with pytest.raises(PipelineError) as error:
        generate_base("controlplane", bundle, base_params("v1.11", talos_version=version))
    assert "v1.11, v1.12, v1.13" in str(error.value)


def test_contract() -> None:
    assert contract("v1.11.5") == "v1.11"
    assert contract("1.13.0") == "v1.13"
    with pytest.raises(PipelineError):
        contract("v1.9.0")


def test_unknown_role(bundle: dict) -> None:
    with pytest.raises(PipelineError, match="controlplane, worker"):
        generate_base("init", bundle, base_params("v1.11"))


@pytest.mark.parametrize("endpoint", ["base:6443", "", "https://", "ftp://x"])
def test_invalid_endpoint(bundle: dict, endpoint: str) -> None:
    with pytest.raises(PipelineError, match="endpoint"):
        generate_base("worker", bundle, base_params("v1.11", endpoint=endpoint))


def test_broken_bundle_is_a_pipeline_error(bundle: dict) -> None:
    broken = {**bundle, "trustdinfo": {}}
    with pytest.raises(PipelineError, match=r"trustdinfo\.token"):
        generate_base("worker", broken, base_params("v1.11"))


def test_values_are_never_reinterpreted_by_yaml(bundle: dict) -> None:
    # Names that YAML would otherwise read as bools, numbers, or mappings stay strings.
    for name in ("yes", "1.10", "a: b", 'quote"d', "back\\slash", "#hash", "null", "tab\t", "line\u2028sep", "😀"):
        params = base_params("v1.11", name=name, endpoint="https://10.0.0.1:6443")
        document = generate_base("controlplane", bundle, params)[0]
        assert document["cluster"]["clusterName"] == name
        assert document["cluster"]["apiServer"]["certSANs"] == ["10.0.0.1"]
        assert yaml.safe_load(dump_documents([document]))["cluster"]["clusterName"] == name


def test_endpoint_host_is_an_api_server_san_only_up_to_v1_11(bundle: dict) -> None:
    params = {"endpoint": "https://cp.example.com:443"}
    v11 = generate_base("controlplane", bundle, base_params("v1.11", **params))[0]
    v12 = generate_base("controlplane", bundle, base_params("v1.12", **params))[0]
    assert v11["cluster"]["apiServer"]["certSANs"] == ["cp.example.com"]
    assert "certSANs" not in v12["cluster"]["apiServer"]
    assert v12["cluster"]["controlPlane"]["endpoint"] == "https://cp.example.com:443"


def test_worker_carries_no_private_keys(bundle: dict) -> None:
    worker = generate_base("worker", bundle, base_params("v1.13"))[0]
    assert worker["machine"]["ca"] == {"crt": bundle["certs"]["os"]["crt"], "key": ""}
    assert worker["cluster"]["ca"] == {"crt": bundle["certs"]["k8s"]["crt"], "key": ""}
    text = dump_documents([worker])
    for name in ("etcd", "k8saggregator", "k8sserviceaccount", "os", "k8s"):
        assert bundle["certs"][name]["key"] not in text
    assert bundle["secrets"]["secretboxencryptionsecret"] not in text


def test_hostname_document_only_from_v1_12(bundle: dict) -> None:
    assert len(generate_base("worker", bundle, base_params("v1.11"))) == 1
    for version in ("v1.12", "v1.13"):
        documents = generate_base("worker", bundle, base_params(version))
        assert documents[1] == {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"}


# --- talosconfig -------------------------------------------------------------------------------


def test_talosconfig_structure_and_admin_certificate(bundle: dict) -> None:
    now = datetime(2025, 6, 7, 8, 9, 10, tzinfo=UTC)
    config = generate_talosconfig(bundle, base_params("v1.12"), ["10.0.0.1", "10.0.0.2"], now=now)
    assert config["context"] == "base"
    assert list(config) == ["context", "contexts"]
    context = config["contexts"]["base"]
    assert list(context) == ["endpoints", "ca", "crt", "key"]  # talosctl writes no nodes
    assert context["endpoints"] == ["10.0.0.1", "10.0.0.2"]
    assert context["ca"] == bundle["certs"]["os"]["crt"]

    ca = load_certificate(base64.b64decode(context["ca"]))
    crt_pem = base64.b64decode(context["crt"])
    key_pem = base64.b64decode(context["key"])
    cert = load_certificate(crt_pem)
    key = load_private_key(key_pem)

    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "O=os:admin"
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert key_pem.startswith(b"-----BEGIN ED25519 PRIVATE KEY-----\n")
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_before_utc == now
    assert cert.not_valid_after_utc - now == timedelta(days=365)
    assert [(e.oid, e.critical) for e in cert.extensions] == [
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
    ]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski


def test_talosconfig_with_nodes_and_fixture_bundle() -> None:
    bundle = stability_bundle("v1.11")
    config = generate_talosconfig(bundle, base_params("v1.11"), ["cp1"], nodes=["10.5.0.2"])
    context = config["contexts"]["base"]
    assert list(context) == ["endpoints", "nodes", "ca", "crt", "key"]
    assert context["nodes"] == ["10.5.0.2"]
    cert = load_certificate(base64.b64decode(context["crt"]))
    cert.verify_directly_issued_by(load_certificate(base64.b64decode(bundle["certs"]["os"]["crt"])))


def test_talosconfig_certificates_are_fresh(bundle: dict) -> None:
    first = generate_talosconfig(bundle, base_params("v1.13"), ["a"])
    second = generate_talosconfig(bundle, base_params("v1.13"), ["a"])
    assert first["contexts"]["base"]["key"] != second["contexts"]["base"]["key"]


# --- encoding ----------------------------------------------------------------------------------


def test_dump_documents_layout() -> None:
    documents = [
        {
            "b": "",
            "a": {"list": ["x", {"k": "v", "n": [1, 2]}], "empty": {}, "none": []},
            "text": "line one\nline two\n",
            "yes": "yes",
        },
        {"kind": "Second"},
    ]
    text = dump_documents(documents)
    assert text == (
        'b: ""\n'
        "a:\n"
        "    list:\n"
        "        - x\n"
        "        - k: v\n"
        '          "n":\n'  # go-yaml's encoder quotes "n" too (a YAML 1.1 bool)
        "            - 1\n"
        "            - 2\n"
        "    empty: {}\n"
        "    none: []\n"
        "text: |\n"
        "    line one\n"
        "    line two\n"
        '"yes": "yes"\n'  # go-yaml quotes YAML 1.1 booleans, keys included
        "---\n"
        "kind: Second\n"
    )
    assert list(yaml.safe_load_all(text)) == documents


def test_dump_round_trips_awkward_strings() -> None:
    values = ["trailing space \nx", "\nleading newline", "tab\there", "ünïcode", "#", "- dash", "1e3", "~"]
    document = {f"k{i}": value for i, value in enumerate(values)}
    assert yaml.safe_load(dump_documents([document])) == document


@pytest.mark.parametrize(
    "name",
    [
        "apply/expected.yaml",
        "apply/expected_manifests.yaml",
        "multidoc/expected.yaml",
        "patchdelete/controlplane_expected.yaml",
        "patchmixed/expected.yaml",
    ],
)
def test_dump_reproduces_talos_encoded_patch_results(name: str) -> None:
    # Other Talos-written outputs (inline manifests, multi-document files) re-encode identically.
    text = fixture("configpatcher", *name.split("/")).read_text()
    assert dump_documents(list(yaml.safe_load_all(text))) == text



def test_legacy_aescbc_bundle_keeps_its_encryption_secret(bundle: dict) -> None:
    # A pre-1.3 bundle has an AES-CBC key instead of secretbox; it must not be dropped.
    secret = bundle["secrets"]["secretboxencryptionsecret"]
    legacy = {**bundle, "secrets": {"bootstraptoken": bundle["secrets"]["bootstraptoken"],
                                    "aescbcencryptionsecret": secret}}
    documents = generate_base("controlplane", legacy, base_params("v1.11"))
    cluster = documents[0]["cluster"]
    assert "secretboxEncryptionSecret" not in cluster
    assert cluster["aescbcEncryptionSecret"] == secret
    assert list(cluster).index("aescbcEncryptionSecret") == list(cluster).index("token") + 1
    assert bundle_from_config(documents) == legacy
