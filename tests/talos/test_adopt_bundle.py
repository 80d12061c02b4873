"""Reading, checking and using an existing cluster's secrets bundle (pipeline.talos.adopt)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.talos.adopt import (
    bundle_from_controlplane_config,
    check_base_config,
    check_same_cluster,
    check_talosconfig,
)
from pipeline.talos.baseconfig import ClusterParams, generate_base, generate_talosconfig
from pipeline.talos.secrets_bundle import generate_bundle, validate_bundle

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
    validate_bundle(bundle, "fixture")  # keys belong to their certificates


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
    with pytest.raises(PipelineError, match=r"certs\.k8saggregator\.key is missing"):
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


# --- talosconfig and base configs of the same cluster --------------------------------------------


def talosconfig_for(bundle: dict) -> dict:
    return generate_talosconfig(bundle, params(), ["10.0.0.2"])


def test_talosconfig_of_the_bundle_passes_and_of_another_is_named(generated: dict) -> None:
    assert check_talosconfig(talosconfig_for(fixture_bundle()), fixture_bundle(), "talosconfig") == []
    other = talosconfig_for(generated)
    lines = check_talosconfig(other, fixture_bundle(), "talosconfig")
    assert lines == ["talosconfig: contexts.adopt.ca differs from certs.os.crt of the secrets bundle",
                     "talosconfig: contexts.adopt.crt is not signed by certs.os of the secrets bundle"]
    for value in (other["contexts"]["adopt"]["crt"], fixture_bundle()["certs"]["os"]["crt"]):
        assert value not in "\n".join(lines)


def test_talosconfig_with_the_right_ca_but_a_foreign_client_cert_is_refused(generated: dict) -> None:
    mixed = talosconfig_for(fixture_bundle())
    mixed["contexts"]["adopt"]["crt"] = talosconfig_for(generated)["contexts"]["adopt"]["crt"]
    assert check_talosconfig(mixed, fixture_bundle(), "tc") == [
        "tc: contexts.adopt.crt is not signed by certs.os of the secrets bundle"]
    assert check_talosconfig({"context": "x"}, fixture_bundle(), "tc") == ["tc: not a talosconfig (no contexts)"]


def test_base_config_given_as_the_other_role_is_named() -> None:
    assert check_base_config(stability("v1.12"), "controlplane", "cp.yaml") == []
    assert check_base_config(stability("v1.12", "worker"), "worker", "w.yaml") == []
    assert check_base_config(stability("v1.12", "worker"), "controlplane", "w.yaml") == [
        "w.yaml: machine.type is 'worker', expected 'controlplane' (was it given as the other role?)"]


def test_config_with_both_encryption_secrets_is_refused_as_talos_validate_does() -> None:
    docs = copy.deepcopy(stability("v1.11"))
    docs[0]["cluster"]["aescbcEncryptionSecret"] = docs[0]["cluster"]["secretboxEncryptionSecret"]
    with pytest.raises(PipelineError, match=r"only one of secrets\.secretboxencryptionsecret"):
        bundle_from_controlplane_config(docs, "cp.yaml")
