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

The extracted bundle is checked by the one bundle validator, ``secrets_bundle.validate_bundle``
(structure and cryptography: every key belongs to its certificate). ``check_same_cluster``,
``check_base_config`` and ``check_talosconfig`` say why other inputs (base configs, a talosctl
client config) are not of the bundle's cluster, one line per file and field.

No function here ever puts a secret value into an error message.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from pipeline.errors import PipelineError
from pipeline.talos.secrets_bundle import load_certificate, validate_bundle

__all__ = [
    "bundle_from_controlplane_config",
    "check_base_config",
    "check_same_cluster",
    "check_talosconfig",
]

# Documents that newer Talos releases use instead of the v1alpha1 fields read here.
_NEWER_KINDS = ("DiscoveryIdentityConfig", "KubeAPIServerCAConfig", "KubeAggregatorCAConfig",
                "KubeServiceAccountConfig", "KubeEtcdEncryptionConfig")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)-----END \1-----", re.DOTALL)


def _pem_of(value: str) -> bytes | None:
    """The PEM text of a bundle ``crt``/``key`` (base64 of a PEM), or None when it is not one."""
    try:
        pem = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return pem if _PEM_BLOCK.search(pem) else None


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
    docstring), then checked with ``secrets_bundle.validate_bundle`` (every key
    belongs to its certificate). A worker config (no CA keys) is refused.
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




# --- base configs and talosconfig of the same cluster -------------------------------------------


def check_base_config(docs: Any, role: str, source: str) -> list[str]:
    """Why ``docs`` (a parsed machine config) is not a usable ``role`` base config: one line each, never a value."""
    if not isinstance(docs, list):
        return [f"{source}: not a machine config (YAML documents)"]
    try:
        config = _v1alpha1(docs, source)
    except PipelineError as error:
        return [str(error)]
    kind = _get(config, ("machine", "type"))
    if kind != role and not (role == "controlplane" and kind == "init"):
        return [f"{source}: machine.type is {kind!r}, expected {role!r} (was it given as the other role?)"]
    return []


def check_talosconfig(data: Any, bundle: Mapping[str, Any], source: str) -> list[str]:
    """Why a talosctl client config cannot talk to ``bundle``'s cluster: one line each, never a value.

    Every context must trust the bundle's OS CA (``ca``) and hold a client certificate (``crt``)
    signed by it.
    """
    contexts = data.get("contexts") if isinstance(data, dict) else None
    if not isinstance(contexts, dict) or not contexts:
        return [f"{source}: not a talosconfig (no contexts)"]
    os_ca_crt = str(_get(bundle, ("certs", "os", "crt")) or "")
    ca_pem = _pem_of(os_ca_crt)
    problems: list[str] = []
    for name, context in contexts.items():
        where = f"{source}: contexts.{name}"
        if not isinstance(context, dict):
            problems.append(f"{where}: not a mapping")
            continue
        ca = context.get("ca")
        if not isinstance(ca, str) or not _same_value(ca, os_ca_crt):
            problems.append(f"{where}.ca differs from certs.os.crt of the secrets bundle")
        crt_pem = _pem_of(context["crt"]) if isinstance(context.get("crt"), str) else None
        if crt_pem is None or ca_pem is None:
            problems.append(f"{where}.crt is not base64 of a PEM certificate")
            continue
        try:
            load_certificate(crt_pem).verify_directly_issued_by(load_certificate(ca_pem))
        except Exception:  # cryptography raises ValueError, TypeError or InvalidSignature
            problems.append(f"{where}.crt is not signed by certs.os of the secrets bundle")
    return problems
