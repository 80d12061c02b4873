"""The checks of ``talosctl validate --mode metal`` that matter for a rendered machine config.

Pure: no I/O. Every problem found is reported at once, each naming its field.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import PipelineError

_TOP_LEVEL_KEYS = ("version", "debug", "persist", "machine", "cluster")
_MACHINE_TYPES = ("controlplane", "worker", "init")
_CONTROL_PLANE_TYPES = ("controlplane", "init")


def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...`` or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _is_set(value: Any) -> bool:
    # Talos treats "", {} and null alike: not set.
    return value not in (None, "", {}, [])


def _shape(value: Any) -> str:
    """A value described without its text (it may have been copied from a secret): type and length.

    Texts under 8 characters (the shortest secret the redaction tracks) are quoted: a typo stays readable.
    """
    if isinstance(value, str):
        return repr(value) if len(value) < 8 else f"a text of {len(value)} characters"
    return "nothing" if value is None else f"a {type(value).__name__}"


def _endpoint_problem(endpoint: Any) -> str | None:
    if not isinstance(endpoint, str) or not endpoint:
        return "cluster.controlPlane.endpoint: the control plane endpoint is required"
    try:
        url = urlsplit(endpoint)
        _ = url.port  # raises ValueError on a malformed port
    except ValueError:
        return "cluster.controlPlane.endpoint: not a valid URL (a malformed port)"
    if url.scheme != "https" or not url.hostname or any(char.isspace() for char in endpoint):
        return f"cluster.controlPlane.endpoint: must be an https:// URL with a host, got {_shape(endpoint)}"
    return None


def _machine_problems(machine: dict[str, Any], cluster: dict[str, Any] | None) -> list[str]:
    problems = []
    machine_type = machine.get("type")
    if machine_type not in _MACHINE_TYPES:
        problems.append(
            f"machine.type: unknown machine type, {_shape(machine_type)} (expected one of {', '.join(_MACHINE_TYPES)})"
        )

    if machine_type in _CONTROL_PLANE_TYPES:
        if not _is_set(_get(machine, "ca", "key")):
            problems.append("machine.ca.key: issuing CA key is required for controlplane nodes")
    elif machine_type == "worker":
        # A worker holding a CA key could mint credentials for the whole cluster.
        if _is_set(_get(machine, "ca", "key")):
            problems.append("machine.ca.key: issuing Talos API CA key is not allowed on worker nodes")
        if cluster is not None:
            if _is_set(_get(cluster, "ca", "key")):
                problems.append("cluster.ca.key: Kubernetes CA key is not allowed on worker nodes")
            if cluster.get("etcd") is not None:
                problems.append("cluster.etcd: etcd config is only allowed on control plane nodes")

    install = machine.get("install")
    if not (_is_set(_get(install, "disk")) or _is_set(_get(install, "diskSelector"))):
        problems.append("machine.install.disk: install disk or diskSelector is required")
    return problems


def _cluster_problems(cluster: dict[str, Any]) -> list[str]:
    problems = []
    endpoint_problem = _endpoint_problem(_get(cluster, "controlPlane", "endpoint"))
    if endpoint_problem:
        problems.append(endpoint_problem)

    manifests = cluster.get("inlineManifests")
    if manifests is not None and not isinstance(manifests, list):
        problems.append("cluster.inlineManifests: must be a list")
    elif manifests:
        seen: set[str] = set()
        for index, manifest in enumerate(manifests):
            name = manifest.get("name") if isinstance(manifest, dict) else None
            field = f"cluster.inlineManifests[{index}].name"
            if not isinstance(name, str) or not name.strip():
                problems.append(f"{field}: inline manifest name is required")
            elif name in seen:
                problems.append(f"{field}: duplicate inline manifest name {_shape(name)}")
            else:
                seen.add(name)
    return problems


def validate_machine_config(documents: list[dict[str, Any]], source: str) -> None:
    """Raise PipelineError(path=source) listing every problem, each naming its field."""
    problems: list[str] = []
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            problems.append(f"document {index + 1}: expected a mapping")
    legacy = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") in (None, "")]
    if not legacy:
        raise PipelineError("version: the v1alpha1 document (version: v1alpha1, no kind) is missing", path=source)
    if len(legacy) > 1:
        problems.append("version: more than one v1alpha1 document")
    doc = legacy[0]

    if doc.get("version") != "v1alpha1":
        problems.append(f"version: must be v1alpha1, got {_shape(doc.get('version'))}")
    # A key is named only when it looks like a field name (a key can be built from a secret too).
    unknown = [str(key) if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", str(key)) else "(a key)"
               for key in doc if key not in _TOP_LEVEL_KEYS]
    if unknown:
        problems.append(f"{', '.join(unknown)}: unknown top-level key (allowed: {', '.join(_TOP_LEVEL_KEYS)})")
    if doc.get("persist") is False:
        problems.append("persist: must not be false (.persist should be enabled)")

    machine = doc.get("machine")
    cluster = doc.get("cluster")
    if not isinstance(cluster, dict):
        problems.append("cluster: required section (a mapping) is missing")
        cluster = None
    if isinstance(machine, dict):
        problems.extend(_machine_problems(machine, cluster))
    else:
        problems.append("machine: required section (a mapping) is missing")
    if cluster is not None:
        problems.extend(_cluster_problems(cluster))

    if problems:
        raise PipelineError("; ".join(problems), path=source)
