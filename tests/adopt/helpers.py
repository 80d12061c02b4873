"""Shared inputs and checks for the adoption tests: real bundles, real configs, real sops, real git."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from pipeline.talos.adopt import bundle_from_controlplane_config
from pipeline.talos.baseconfig import ClusterParams, dump_documents, generate_base, generate_talosconfig
from tests.conftest import FIXTURES, Repo

# The example cluster's settings (cluster.yaml), so talosctl-made bases fit its nodes.
EXAMPLE = ClusterParams(name="talos-kube", endpoint="https://192.168.1.100:6443", talos_version="v1.11.5",
                        kubernetes_version="v1.34.1", install_disk="/dev/sda")
NODES = ("cp1", "cp2", "cp3", "w1", "w2", "w3")


def stability_bundle() -> dict:
    """The bundle the stability fixtures were made from (one cluster)."""
    docs = list(yaml.safe_load_all((FIXTURES / "stability" / "v1.11" / "base-controlplane.yaml").read_text()))
    return bundle_from_controlplane_config(docs)


def fixture_bundle() -> dict:
    """Talos's own test bundle (another cluster)."""
    return yaml.safe_load((FIXTURES / "secrets" / "secrets.yaml").read_text())


def talosctl_files(folder: Path, bundle: dict) -> dict[str, Path]:
    """What `talosctl gen secrets` + `talosctl gen config --with-secrets` leave in a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"secrets": folder / "secrets.yaml", "controlplane": folder / "controlplane.yaml",
             "worker": folder / "worker.yaml", "talosconfig": folder / "talosconfig"}
    files["secrets"].write_text(yaml.safe_dump(bundle, sort_keys=False))
    for role in ("controlplane", "worker"):
        files[role].write_text(dump_documents(generate_base(role, bundle, EXAMPLE)))
    talosconfig = generate_talosconfig(bundle, EXAMPLE, ["192.168.1.101"])
    files["talosconfig"].write_text(yaml.safe_dump(talosconfig, sort_keys=False))
    return files


def secret_values(bundle: dict) -> list[str]:
    """Values that must never appear in plaintext in the repository or a message."""
    return [bundle["cluster"]["secret"], bundle["secrets"]["bootstraptoken"], bundle["trustdinfo"]["token"],
            bundle["secrets"].get("secretboxencryptionsecret") or bundle["secrets"]["aescbcencryptionsecret"],
            bundle["certs"]["os"]["key"], bundle["certs"]["k8s"]["key"]]


def decrypt(repo: Repo, artefact: str) -> list[Any]:
    """An artefact decrypted by the stock sops binary, parsed."""
    result = repo.sops("--decrypt", artefact)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def assert_no_plaintext(repo: Repo, bundle: dict, output: str = "") -> None:
    """No secret value of ``bundle`` in any work-tree file, in git's index, or in ``output``."""
    for value in secret_values(bundle):
        assert value not in output
        for path in repo.path.rglob("*"):
            if path.is_file() and ".git" not in path.relative_to(repo.path).parts:
                assert value.encode() not in path.read_bytes(), path
        listed = repo.git("ls-files", "-s")
        assert value not in listed


def assert_identity(repo: Repo, bundle: dict, nodes: dict[str, str] | None = None) -> None:
    """Every node renders with ``bundle``'s identity: cluster id and secret, tokens, CAs, secretbox key.

    ``nodes``: artefact -> role (default: the example cluster's six nodes).
    """
    box = bundle["secrets"].get("secretboxencryptionsecret")
    if nodes is None:
        nodes = {f"encrypted/talos-kube-{node}.encrypted.yaml": "controlplane" if node.startswith("cp") else "worker"
                 for node in NODES}
    for artefact, role in nodes.items():
        docs = decrypt(repo, artefact)
        config = next(doc for doc in docs if doc.get("version") == "v1alpha1")
        cluster, machine = config["cluster"], config["machine"]
        assert cluster["id"] == bundle["cluster"]["id"] and cluster["secret"] == bundle["cluster"]["secret"]
        assert cluster["token"] == bundle["secrets"]["bootstraptoken"]
        assert machine["token"] == bundle["trustdinfo"]["token"]
        assert machine["ca"]["crt"] == bundle["certs"]["os"]["crt"]
        assert cluster["ca"]["crt"] == bundle["certs"]["k8s"]["crt"]
        assert machine["type"] == role
        if role == "controlplane":
            assert machine["ca"]["key"] == bundle["certs"]["os"]["key"]
            assert cluster["ca"]["key"] == bundle["certs"]["k8s"]["key"]
            assert cluster["etcd"]["ca"] == bundle["certs"]["etcd"]
            assert cluster["aggregatorCA"] == bundle["certs"]["k8saggregator"]
            assert cluster["serviceAccount"]["key"] == bundle["certs"]["k8sserviceaccount"]["key"]
            assert cluster["secretboxEncryptionSecret"] == box


def talosconfig_verifies(repo: Repo, bundle: dict) -> bool:
    """Whether the committed talosconfig's client certificate is signed by ``bundle``'s OS CA."""
    config = decrypt(repo, "encrypted/talosconfig.encrypted.yaml")[0]
    context = config["contexts"][config["context"]]
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle["certs"]["os"]["crt"]))
    client = x509.load_pem_x509_certificate(base64.b64decode(context["crt"]))
    try:
        client.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):
        return False
    return context["ca"] == bundle["certs"]["os"]["crt"]


def key_file(repo: Repo) -> Path:
    """The age key the pipeline made in the repository's empty HOME."""
    return repo.home / ".config" / "sops" / "age" / "keys.txt"


def checked_and_verified(repo: Repo) -> None:
    """`doit check`, `doit verify` and `doit drill --key` pass on the committed repository."""
    for args in (("check",), ("verify",), ("drill", "--key", str(key_file(repo)))):
        result = repo.doit(*args)
        assert result.returncode == 0, f"doit {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
