"""Reading, checking and using an existing cluster's secrets bundle (pipeline.talos.adopt)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from pipeline.errors import PipelineError
from pipeline.talos.adopt import (
    bundle_from_controlplane_config,
    check_same_cluster,
    talosconfig_from_bundle,
    validate_bundle,
)
from pipeline.talos.baseconfig import ClusterParams, generate_base
from pipeline.talos.secrets_bundle import generate_bundle
from pipeline.talos.secrets_bundle import validate_bundle as deep_validate

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures"
VERSIONS = ("v1.11", "v1.12", "v1.13")


def stability(version: str, role: str = "controlplane") -> list:
    return list(yaml.safe_load_all((FIXTURES / "stability" / version / f"base-{role}.yaml").read_text()))


def fixture_bundle() -> dict:
    return yaml.safe_load((FIXTURES / "secrets" / "secrets.yaml").read_text())


def params(version: str = "v1.11") -> ClusterParams:
    return ClusterParams(name="adopt", endpoint="https://10.0.0.1:6443", talos_version=version,
                         kubernetes_version="v1.34.1")


@pytest.fixture(scope="module")
def generated() -> dict:
    return generate_bundle("v1.11")


@pytest.mark.parametrize("version", VERSIONS)
def test_stability_fixture_bundle_is_read_field_by_field(version: str) -> None:
    docs = stability(version)
    bundle = bundle_from_controlplane_config(docs, "controlplane.yaml")
    config = docs[0]
    assert bundle["cluster"] == {"id": config["cluster"]["id"], "secret": config["cluster"]["secret"]}
    assert bundle["secrets"] == {"bootstraptoken": config["cluster"]["token"],
                                 "secretboxencryptionsecret": config["cluster"]["secretboxEncryptionSecret"]}
    assert bundle["trustdinfo"] == {"token": config["machine"]["token"]}
    assert bundle["certs"]["os"] == config["machine"]["ca"]
    assert bundle["certs"]["k8s"] == config["cluster"]["ca"]
    assert bundle["certs"]["etcd"] == config["cluster"]["etcd"]["ca"]
    assert bundle["certs"]["k8saggregator"] == config["cluster"]["aggregatorCA"]
    assert bundle["certs"]["k8sserviceaccount"] == {"key": config["cluster"]["serviceAccount"]["key"]}
    assert list(bundle) == ["cluster", "secrets", "trustdinfo", "certs"]
    deep_validate(bundle, "fixture")  # keys belong to their certificates


def test_stability_fixtures_share_one_bundle_that_differs_from_secrets_fixture() -> None:
    # Measured: the three contracts' fixtures come from one bundle; secrets/secrets.yaml is another.
    bundles = [bundle_from_controlplane_config(stability(v)) for v in VERSIONS]
    assert bundles[0] == bundles[1] == bundles[2]
    assert bundles[0]["cluster"]["id"] != fixture_bundle()["cluster"]["id"]
    assert check_same_cluster(fixture_bundle(), {"controlplane.yaml": stability("v1.11")})


@pytest.mark.parametrize("version", VERSIONS)
def test_secrets_fixture_round_trips_through_generated_base_config(version: str) -> None:
    bundle = fixture_bundle()
    docs = generate_base("controlplane", bundle, params(version))
    assert bundle_from_controlplane_config(docs) == bundle


def test_generated_bundle_round_trips(generated: dict) -> None:
    docs = generate_base("controlplane", generated, params())
    assert bundle_from_controlplane_config(docs) == generated
    worker = generate_base("worker", generated, params())
    assert check_same_cluster(generated, {"controlplane.yaml": docs, "worker.yaml": worker}) == []


def test_aescbc_only_config_gives_aescbc_bundle() -> None:
    docs = copy.deepcopy(stability("v1.11"))
    secret = docs[0]["cluster"].pop("secretboxEncryptionSecret")
    docs[0]["cluster"]["aescbcEncryptionSecret"] = secret
    bundle = bundle_from_controlplane_config(docs)
    assert bundle["secrets"] == {"bootstraptoken": docs[0]["cluster"]["token"], "aescbcencryptionsecret": secret}


def test_worker_config_is_refused() -> None:
    with pytest.raises(PipelineError, match="worker config has no CA keys") as caught:
        bundle_from_controlplane_config(stability("v1.11", "worker"), "worker.yaml")
    assert str(caught.value).startswith("worker.yaml: ")


def test_config_without_a_field_names_it() -> None:
    docs = copy.deepcopy(stability("v1.12"))
    del docs[0]["cluster"]["aggregatorCA"]
    with pytest.raises(PipelineError, match=r"certs\.k8saggregator\.crt is missing"):
        bundle_from_controlplane_config(docs, "cp.yaml")


def test_newer_multidoc_identity_is_refused_by_kind() -> None:
    docs = [*stability("v1.13"), {"apiVersion": "v1alpha1", "kind": "KubeAPIServerCAConfig"}]
    with pytest.raises(PipelineError, match="KubeAPIServerCAConfig"):
        bundle_from_controlplane_config(docs, "cp.yaml")


def test_no_v1alpha1_document_is_refused() -> None:
    with pytest.raises(PipelineError, match="no v1alpha1 machine config"):
        bundle_from_controlplane_config([{"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"}])


# --- check_same_cluster ---------------------------------------------------------------------------


def test_other_clusters_configs_are_refused_field_by_field(generated: dict) -> None:
    other = fixture_bundle()  # another cluster (no RSA key generation: fast)
    controlplane = generate_base("controlplane", other, params())
    worker = generate_base("worker", other, params())
    lines = check_same_cluster(generated, {"controlplane.yaml": controlplane, "worker.yaml": worker})
    fields = {line.split(":")[0] + ":" + line.split(" ")[1] for line in lines}
    for field in ("cluster.id", "cluster.secret", "cluster.token", "machine.token", "machine.ca.crt", "machine.ca.key",
                  "cluster.ca.crt", "cluster.ca.key", "cluster.etcd.ca.crt", "cluster.aggregatorCA.crt",
                  "cluster.serviceAccount.key", "cluster.secretboxEncryptionSecret"):
        assert f"controlplane.yaml:{field}" in fields
    # A worker carries the cluster id, tokens and the CA certificates, not the CA keys.
    for field in ("cluster.id", "machine.token", "cluster.token", "machine.ca.crt", "cluster.ca.crt"):
        assert f"worker.yaml:{field}" in fields
    assert "worker.yaml:machine.ca.key" not in fields
    text = "\n".join(lines)
    for value in (other["cluster"]["id"], other["secrets"]["bootstraptoken"], generated["cluster"]["id"],
                  other["certs"]["os"]["crt"], generated["trustdinfo"]["token"]):
        assert value not in text


def test_one_changed_ca_is_one_line(generated: dict) -> None:
    docs = generate_base("controlplane", generated, params())
    docs[0]["cluster"]["etcd"]["ca"]["crt"] = fixture_bundle()["certs"]["etcd"]["crt"]
    assert check_same_cluster(generated, {"cp.yaml": docs}) == [
        "cp.yaml: cluster.etcd.ca.crt (etcd CA certificate) differs from certs.etcd.crt of the secrets bundle"]


def test_same_pem_with_other_base64_wrapping_is_the_same(generated: dict) -> None:
    docs = generate_base("controlplane", generated, params())
    pem = base64.b64decode(generated["certs"]["os"]["crt"]).decode()
    rewrapped = pem.replace("\n", "\r\n")
    docs[0]["machine"]["ca"]["crt"] = base64.b64encode(rewrapped.encode()).decode()
    assert check_same_cluster(generated, {"cp.yaml": docs}) == []


# --- validate_bundle ----------------------------------------------------------------------------


def test_fixture_and_generated_bundles_validate(generated: dict) -> None:
    validate_bundle(fixture_bundle(), "secrets.yaml")
    validate_bundle(generated, "secrets.yaml")


@pytest.mark.parametrize(("path", "named"), [
    (("trustdinfo",), "trustdinfo is missing"),
    (("cluster", "id"), "cluster.id is missing"),
    (("secrets", "bootstraptoken"), "secrets.bootstraptoken is missing"),
    (("secrets", "secretboxencryptionsecret"), "secrets.secretboxencryptionsecret is missing"),
    (("certs", "os", "key"), "certs.os.key is missing"),
    (("certs", "k8sserviceaccount"), "certs.k8sserviceaccount is missing"),
])
def test_missing_field_is_named(path: tuple[str, ...], named: str) -> None:
    bundle = fixture_bundle()
    parent = bundle
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(PipelineError) as caught:
        validate_bundle(bundle, "mine.yaml")
    message = str(caught.value)
    assert message.startswith("mine.yaml: secrets bundle: ") and named in message and "\n" not in message


def test_not_a_bundle_is_refused() -> None:
    with pytest.raises(PipelineError, match="not a mapping"):
        validate_bundle(["x"], "f.yaml")
    talosconfig = {"context": "c", "contexts": {}}
    with pytest.raises(PipelineError, match="unknown field context"):
        validate_bundle(talosconfig, "f.yaml")


def test_malformed_certificate_is_named_without_its_value() -> None:
    bundle = fixture_bundle()
    bundle["certs"]["k8s"]["crt"] = "bm90IGEgcGVt"  # base64 of "not a pem"
    with pytest.raises(PipelineError, match=r"certs\.k8s\.crt is not base64 of a PEM") as caught:
        validate_bundle(bundle, "f.yaml")
    assert "bm90IGEgcGVt" not in str(caught.value)


# --- talosconfig ----------------------------------------------------------------------------------


def test_talosconfig_client_cert_verifies_against_the_bundles_os_ca() -> None:
    bundle = fixture_bundle()
    text = talosconfig_from_bundle(bundle, "home", ["10.0.0.2", "10.0.0.3"], nodes=["10.0.0.2"])
    config = yaml.safe_load(text)
    assert config["context"] == "home"
    context = config["contexts"]["home"]
    assert context["endpoints"] == ["10.0.0.2", "10.0.0.3"] and context["nodes"] == ["10.0.0.2"]
    assert context["ca"] == bundle["certs"]["os"]["crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle["certs"]["os"]["crt"]))
    client = x509.load_pem_x509_certificate(base64.b64decode(context["crt"]))
    client.verify_directly_issued_by(ca)  # raises on a wrong issuer or signature
    assert isinstance(client.public_key(), ed25519.Ed25519PublicKey)
    assert client.subject.rfc4514_string() == "O=os:admin"
    key_pem = base64.b64decode(context["key"])
    assert b"ED25519 PRIVATE KEY" in key_pem


def test_talosconfig_cert_does_not_verify_against_another_ca(generated: dict) -> None:
    context = yaml.safe_load(talosconfig_from_bundle(generated, "c", ["1.2.3.4"]))["contexts"]["c"]
    other = x509.load_pem_x509_certificate(base64.b64decode(fixture_bundle()["certs"]["os"]["crt"]))
    client = x509.load_pem_x509_certificate(base64.b64decode(context["crt"]))
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises ValueError or InvalidSignature
        client.verify_directly_issued_by(other)


def test_talosconfig_needs_endpoints() -> None:
    with pytest.raises(PipelineError, match="endpoints"):
        talosconfig_from_bundle(fixture_bundle(), "c", [])
    with pytest.raises(PipelineError, match="endpoints"):
        talosconfig_from_bundle(fixture_bundle(), "c", "1.2.3.4")  # type: ignore[arg-type]


def test_config_with_both_encryption_secrets_is_refused_as_talos_validate_does() -> None:
    docs = copy.deepcopy(stability("v1.11"))
    docs[0]["cluster"]["aescbcEncryptionSecret"] = docs[0]["cluster"]["secretboxEncryptionSecret"]
    with pytest.raises(PipelineError, match="both secretboxencryptionsecret and aescbcencryptionsecret"):
        bundle_from_controlplane_config(docs, "cp.yaml")
