"""Adopting an existing cluster's identity: its secrets bundle, read or checked, never regenerated.

A bundle is the dict `talosctl gen secrets` writes (see ``pipeline.talos.secrets_bundle``)::

    cluster:    {id, secret}
    secrets:    {bootstraptoken, secretboxencryptionsecret | aescbcencryptionsecret}
    trustdinfo: {token}
    certs:      {etcd, k8s, k8saggregator, os: {crt, key}, k8sserviceaccount: {key}}

``bundle_from_controlplane_config`` reads it out of a control-plane machine config the way
`talosctl gen secrets --from-controlplane-config` does (Talos's ``secrets.NewBundleFromConfig``):

    cluster.id / cluster.secret          <- cluster.id / cluster.secret
    secrets.bootstraptoken               <- cluster.token
    secrets.secretboxencryptionsecret    <- cluster.secretboxEncryptionSecret (when set)
    secrets.aescbcencryptionsecret       <- cluster.aescbcEncryptionSecret (when set)
    trustdinfo.token                     <- machine.token
    certs.etcd                           <- cluster.etcd.ca
    certs.k8s                            <- cluster.ca
    certs.k8saggregator                  <- cluster.aggregatorCA
    certs.k8sserviceaccount.key          <- cluster.serviceAccount.key
    certs.os                             <- machine.ca

Talos releases after v1.13 can carry these in separate documents (KubeAPIServerCAConfig,
DiscoveryIdentityConfig, ...); such a config is refused with a message naming the document kind.

No function here ever puts a secret value into an error message.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import yaml

from pipeline.errors import PipelineError

__all__ = [
    "bundle_from_controlplane_config",
    "check_same_cluster",
    "talosconfig_from_bundle",
    "validate_bundle",
]

_SECTIONS = ("cluster", "secrets", "trustdinfo", "certs")
_CA_NAMES = ("etcd", "k8s", "k8saggregator", "os")
_CERT_NAMES = ("etcd", "k8s", "k8saggregator", "k8sserviceaccount", "os")
_SECRET_FIELDS = ("bootstraptoken", "aescbcencryptionsecret", "secretboxencryptionsecret")
# Documents that newer Talos releases use instead of the v1alpha1 fields read here.
_NEWER_KINDS = ("DiscoveryIdentityConfig", "KubeAPIServerCAConfig", "KubeAggregatorCAConfig",
                "KubeServiceAccountConfig", "KubeEtcdEncryptionConfig")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)-----END \1-----", re.DOTALL)


# --- validation -------------------------------------------------------------------------------


def _bundle_error(source: str, message: str) -> PipelineError:
    return PipelineError(f"secrets bundle: {message} (expected the structure of `talosctl gen secrets`)",
                         path=source)


def _pem_of(value: str) -> bytes | None:
    """The PEM text of a bundle ``crt``/``key`` (base64 of a PEM), or None when it is not one."""
    try:
        pem = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return pem if _PEM_BLOCK.search(pem) else None


def validate_bundle(data: Any, source: str) -> None:
    """Check that ``data`` has the structure of a `talosctl gen secrets` bundle.

    Sections cluster, secrets, trustdinfo and certs with every field present and a non-empty
    string, exactly one etcd encryption secret, and every ``crt``/``key`` base64 of a PEM
    document. Raises a one-line PipelineError naming ``source`` and the first missing or
    malformed field (never its value). Cryptographic checks (a key matching its certificate)
    are ``pipeline.talos.secrets_bundle.validate_bundle``'s.
    """
    if not isinstance(data, dict):
        raise _bundle_error(source, "not a mapping with cluster, secrets, trustdinfo and certs")
    for key in data:
        if key not in _SECTIONS:
            raise _bundle_error(source, f"unknown field {key}")

    def section(parent: dict, name: str, allowed: tuple[str, ...], path: str) -> dict:
        value = parent.get(name)
        if value is None:
            raise _bundle_error(source, f"{path} is missing")
        if not isinstance(value, dict):
            raise _bundle_error(source, f"{path} must be a mapping")
        for key in value:
            if key not in allowed:
                raise _bundle_error(source, f"unknown field {path}.{key}")
        return value

    def string(parent: dict, name: str, path: str) -> str:
        value = parent.get(name)
        if value is None or value == "":
            raise _bundle_error(source, f"{path} is missing")
        if not isinstance(value, str):
            raise _bundle_error(source, f"{path} must be a string")
        return value

    cluster = section(data, "cluster", ("id", "secret"), "cluster")
    string(cluster, "id", "cluster.id")
    string(cluster, "secret", "cluster.secret")
    secrets = section(data, "secrets", _SECRET_FIELDS, "secrets")
    string(secrets, "bootstraptoken", "secrets.bootstraptoken")
    present = [name for name in _SECRET_FIELDS[1:] if secrets.get(name)]
    if not present:
        raise _bundle_error(source, "secrets.secretboxencryptionsecret is missing")
    if len(present) > 1:
        raise _bundle_error(source, "secrets has both secretboxencryptionsecret and aescbcencryptionsecret")
    string(secrets, present[0], f"secrets.{present[0]}")
    trustd = section(data, "trustdinfo", ("token",), "trustdinfo")
    string(trustd, "token", "trustdinfo.token")
    certs = section(data, "certs", _CERT_NAMES, "certs")
    for name in _CERT_NAMES:
        fields = ("key",) if name == "k8sserviceaccount" else ("crt", "key")
        pair = section(certs, name, fields, f"certs.{name}")
        for field in fields:
            path = f"certs.{name}.{field}"
            if _pem_of(string(pair, field, path)) is None:
                raise _bundle_error(source, f"{path} is not base64 of a PEM document")


# --- extraction -------------------------------------------------------------------------------


def _v1alpha1(docs: list[Any], source: str) -> dict:
    if not isinstance(docs, list):
        raise PipelineError("a machine config must be a list of YAML documents", path=source)
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") in _NEWER_KINDS:
            raise PipelineError(
                f"the config has a {doc['kind']} document (Talos after v1.13): reading the secrets bundle "
                "from it is not supported; use `talosctl gen secrets --from-controlplane-config` and "
                "import with --secrets", path=source)
    found = [doc for doc in docs if isinstance(doc, dict) and doc.get("version") == "v1alpha1" and "kind" not in doc]
    if not found:
        raise PipelineError("no v1alpha1 machine config document (version: v1alpha1) in the file", path=source)
    if len(found) > 1:
        raise PipelineError("more than one v1alpha1 machine config document in the file", path=source)
    return found[0]


def _mapping(value: Any, path: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PipelineError(f"{path} must be a mapping", path=source)
    return value


def _text(parent: dict, key: str, path: str, source: str) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PipelineError(f"{path} must be a string", path=source)
    return value


def bundle_from_controlplane_config(docs: list[Any], source: str = "<controlplane config>") -> dict:
    """The secrets bundle held by a control-plane machine config (its parsed YAML documents).

    Field for field what `talosctl gen secrets --from-controlplane-config` writes (see the module
    docstring), then checked with ``validate_bundle``. A worker config (no CA keys) is refused.
    """
    config = _v1alpha1(docs, source)
    machine = _mapping(config.get("machine"), "machine", source)
    cluster = _mapping(config.get("cluster"), "cluster", source)
    os_ca = _mapping(machine.get("ca"), "machine.ca", source)
    if machine.get("type") == "worker" or not os_ca.get("key"):
        raise PipelineError("a worker config has no CA keys (machine.ca.key is empty): "
                            "give the control-plane config", path=source)

    def pair(value: Any, path: str) -> dict[str, str]:
        value = _mapping(value, path, source)
        return {"crt": _text(value, "crt", f"{path}.crt", source), "key": _text(value, "key", f"{path}.key", source)}

    secrets: dict[str, str] = {"bootstraptoken": _text(cluster, "token", "cluster.token", source)}
    # Both are written when set (omitempty), as Talos's bundle does; validate_bundle refuses two.
    aescbc = _text(cluster, "aescbcEncryptionSecret", "cluster.aescbcEncryptionSecret", source)
    secretbox = _text(cluster, "secretboxEncryptionSecret", "cluster.secretboxEncryptionSecret", source)
    if aescbc:
        secrets["aescbcencryptionsecret"] = aescbc
    if secretbox:
        secrets["secretboxencryptionsecret"] = secretbox
    etcd = _mapping(cluster.get("etcd"), "cluster.etcd", source)
    service_account = _mapping(cluster.get("serviceAccount"), "cluster.serviceAccount", source)
    bundle = {
        "cluster": {"id": _text(cluster, "id", "cluster.id", source),
                    "secret": _text(cluster, "secret", "cluster.secret", source)},
        "secrets": secrets,
        "trustdinfo": {"token": _text(machine, "token", "machine.token", source)},
        "certs": {
            "etcd": pair(etcd.get("ca"), "cluster.etcd.ca"),
            "k8s": pair(cluster.get("ca"), "cluster.ca"),
            "k8saggregator": pair(cluster.get("aggregatorCA"), "cluster.aggregatorCA"),
            "k8sserviceaccount": {"key": _text(service_account, "key", "cluster.serviceAccount.key", source)},
            "os": pair(machine.get("ca"), "machine.ca"),
        },
    }
    validate_bundle(bundle, source)
    return bundle


# --- same cluster? ----------------------------------------------------------------------------

# (path in the machine config, path in the bundle, what it is): compared when the config has it.
_IDENTITY_FIELDS: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("cluster", "id"), ("cluster", "id"), "cluster id"),
    (("cluster", "secret"), ("cluster", "secret"), "cluster secret"),
    (("cluster", "token"), ("secrets", "bootstraptoken"), "bootstrap token"),
    (("machine", "token"), ("trustdinfo", "token"), "trustd token"),
    (("cluster", "secretboxEncryptionSecret"), ("secrets", "secretboxencryptionsecret"), "secretbox secret"),
    (("cluster", "aescbcEncryptionSecret"), ("secrets", "aescbcencryptionsecret"), "AES-CBC secret"),
    (("machine", "ca", "crt"), ("certs", "os", "crt"), "OS CA certificate"),
    (("machine", "ca", "key"), ("certs", "os", "key"), "OS CA key"),
    (("cluster", "ca", "crt"), ("certs", "k8s", "crt"), "Kubernetes CA certificate"),
    (("cluster", "ca", "key"), ("certs", "k8s", "key"), "Kubernetes CA key"),
    (("cluster", "etcd", "ca", "crt"), ("certs", "etcd", "crt"), "etcd CA certificate"),
    (("cluster", "etcd", "ca", "key"), ("certs", "etcd", "key"), "etcd CA key"),
    (("cluster", "aggregatorCA", "crt"), ("certs", "k8saggregator", "crt"), "aggregator CA certificate"),
    (("cluster", "aggregatorCA", "key"), ("certs", "k8saggregator", "key"), "aggregator CA key"),
    (("cluster", "serviceAccount", "key"), ("certs", "k8sserviceaccount", "key"), "service-account key"),
)


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _same_value(left: str, right: str) -> bool:
    if left == right:
        return True
    # The same PEM can be base64-encoded with different line breaks: compare the DER blocks.
    left_pem, right_pem = _pem_of(left), _pem_of(right)
    if left_pem is None or right_pem is None:
        return False

    def blocks(pem: bytes) -> list[tuple[bytes, bytes]]:
        return [(label, b"".join(body.split())) for label, body in _PEM_BLOCK.findall(pem)]

    return blocks(left_pem) == blocks(right_pem)


def check_same_cluster(bundle: Mapping[str, Any], configs: Mapping[str, list[Any]]) -> list[str]:
    """Why the machine configs (file name -> parsed documents) are not of ``bundle``'s cluster.

    One line per disagreeing field and file, naming the file, the config field and the bundle
    field, never a value; empty when every identity field the configs carry (cluster id and
    secret, tokens, encryption secret, each CA's certificate and key) equals the bundle's.
    """
    problems: list[str] = []
    for name, docs in configs.items():
        try:
            config = _v1alpha1(docs, name)
        except PipelineError as error:
            problems.append(str(error))
            continue
        for config_path, bundle_path, what in _IDENTITY_FIELDS:
            value = _get(config, config_path)
            if value is None or value == "":
                continue  # a worker has no CA keys; a config has one of the two encryption secrets
            expected = _get(bundle, bundle_path)
            dotted, bundle_dotted = ".".join(config_path), ".".join(bundle_path)
            if expected is None or expected == "":
                problems.append(f"{name}: {dotted} ({what}) is set but the secrets bundle has no {bundle_dotted}")
            elif not isinstance(value, str) or not _same_value(value, str(expected)):
                problems.append(f"{name}: {dotted} ({what}) differs from {bundle_dotted} of the secrets bundle")
    return problems


# --- talosconfig -------------------------------------------------------------------------------


def talosconfig_from_bundle(bundle: dict, cluster_name: str, endpoints: list[str],
                            nodes: list[str] | None = None, now: datetime | None = None) -> str:
    """YAML text of a talosctl client config for ``bundle``'s cluster.

    One context named ``cluster_name`` with ``endpoints`` (and ``nodes`` when given), ``ca`` =
    the bundle's OS CA certificate and a fresh admin client certificate (O=os:admin, Ed25519,
    signed by the bundle's OS CA, valid one year from ``now``), as `talosctl gen config` makes.
    """
    validate_bundle(bundle, "<secrets bundle>")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise PipelineError("talosconfig: the cluster name must be a non-empty string")
    if isinstance(endpoints, str) or not endpoints or not all(isinstance(e, str) and e for e in endpoints):
        raise PipelineError("talosconfig: endpoints must be a non-empty list of addresses")
    # The certificate itself is the existing generator's (cryptography is imported only here).
    from pipeline.talos.secrets_bundle import issue_admin_certificate

    crt, key = issue_admin_certificate(bundle, now=now)
    context: dict[str, Any] = {"endpoints": list(endpoints)}
    if nodes:
        context["nodes"] = list(nodes)
    context.update({"ca": bundle["certs"]["os"]["crt"], "crt": crt, "key": key})
    return yaml.safe_dump({"context": cluster_name, "contexts": {cluster_name: context}}, sort_keys=False)
