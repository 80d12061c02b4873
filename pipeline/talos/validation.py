"""A rendered machine config checked as Talos would load it, for the cluster's Talos version.

- ``check_patches``: Talos's strict decoding of each patch (kinds its version registers, known keys only).
- ``check_node_config``: types normalised as Talos decodes them, the version's JSON schema, the ported
  ``Validate()`` rules (``talos.schema``) and the checks of ``talosctl validate --mode metal`` below; each
  problem names the patch file:line that brought the value (provenance recorded during the merge).

Pure: no I/O. Every problem found is reported at once, each naming its field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import PipelineError
from pipeline.talos import schema
from pipeline.talos.patching import Patch, Provenance
from pipeline.talos.rules.base import get as _get

_TOP_LEVEL_KEYS = ("version", "debug", "persist", "machine", "cluster")
_MACHINE_TYPES = ("controlplane", "worker", "init")
_CONTROL_PLANE_TYPES = ("controlplane", "init")


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


# A problem: the path of the offending field in the v1alpha1 document, and the message (naming the field).
_Problem = tuple[tuple[Any, ...], str]
_CA_KEY, _K8S_CA_KEY, _ETCD = ("machine", "ca", "key"), ("cluster", "ca", "key"), ("cluster", "etcd")


def _machine_problems(machine: dict[str, Any], cluster: dict[str, Any] | None) -> list[_Problem]:
    problems: list[_Problem] = []
    machine_type = machine.get("type")
    if machine_type not in _MACHINE_TYPES:
        problems.append((("machine", "type"),
            f"machine.type: unknown machine type, {_shape(machine_type)} (expected one of {', '.join(_MACHINE_TYPES)})"
        ))

    if machine_type in _CONTROL_PLANE_TYPES:
        if not _is_set(_get(machine, "ca", "key")):
            problems.append((_CA_KEY, "machine.ca.key: issuing CA key is required for controlplane nodes"))
    elif machine_type == "worker":
        # A worker holding a CA key could mint credentials for the whole cluster.
        if _is_set(_get(machine, "ca", "key")):
            problems.append((_CA_KEY, "machine.ca.key: issuing Talos API CA key is not allowed on worker nodes"))
        if cluster is not None:
            if _is_set(_get(cluster, "ca", "key")):
                problems.append((_K8S_CA_KEY, "cluster.ca.key: Kubernetes CA key is not allowed on worker nodes"))
            if cluster.get("etcd") is not None:
                problems.append((_ETCD, "cluster.etcd: etcd config is only allowed on control plane nodes"))

    install = machine.get("install")
    if not (_is_set(_get(install, "disk")) or _is_set(_get(install, "diskSelector"))):
        problems.append((("machine", "install"), "machine.install.disk: install disk or diskSelector is required"))
    return problems


def _cluster_problems(cluster: dict[str, Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    endpoint_problem = _endpoint_problem(_get(cluster, "controlPlane", "endpoint"))
    if endpoint_problem:
        problems.append((("cluster", "controlPlane", "endpoint"), endpoint_problem))

    manifests = cluster.get("inlineManifests")
    if manifests is not None and not isinstance(manifests, list):
        problems.append((("cluster", "inlineManifests"), "cluster.inlineManifests: must be a list"))
    elif manifests:
        seen: set[str] = set()
        for index, manifest in enumerate(manifests):
            name = manifest.get("name") if isinstance(manifest, dict) else None
            field = f"cluster.inlineManifests[{index}].name"
            here = ("cluster", "inlineManifests", index, "name")
            if not isinstance(name, str) or not name.strip():
                problems.append((here, f"{field}: inline manifest name is required"))
            elif name in seen:
                problems.append((here, f"{field}: duplicate inline manifest name {_shape(name)}"))
            else:
                seen.add(name)
    return problems


def _config_problems(documents: list[dict[str, Any]], source: str) -> tuple[list[_Problem], dict[str, Any] | None]:
    """Every problem of the v1alpha1 document (paths in it), and that document; PipelineError if it is missing."""
    problems: list[_Problem] = []
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            problems.append(((), f"document {index + 1}: expected a mapping"))
    legacy = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") in (None, "")]
    if not legacy:
        raise PipelineError("version: the v1alpha1 document (version: v1alpha1, no kind) is missing", path=source)
    if len(legacy) > 1:
        problems.append(((), "version: more than one v1alpha1 document"))
    doc = legacy[0]

    if doc.get("version") != "v1alpha1":
        problems.append((("version",), f"version: must be v1alpha1, got {_shape(doc.get('version'))}"))
    # A key is named only when it looks like a field name (a key can be built from a secret too).
    unknown = [str(key) if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", str(key)) else "(a key)"
               for key in doc if key not in _TOP_LEVEL_KEYS]
    if unknown:
        problems.append(((unknown[0],),
                         f"{', '.join(unknown)}: unknown top-level key (allowed: {', '.join(_TOP_LEVEL_KEYS)})"))
    if doc.get("persist") is False:
        problems.append((("persist",), "persist: must not be false (.persist should be enabled)"))

    machine = doc.get("machine")
    cluster = doc.get("cluster")
    if not isinstance(cluster, dict):
        problems.append((("cluster",), "cluster: required section (a mapping) is missing"))
        cluster = None
    if isinstance(machine, dict):
        problems.extend(_machine_problems(machine, cluster))
    else:
        problems.append((("machine",), "machine: required section (a mapping) is missing"))
    if cluster is not None:
        problems.extend(_cluster_problems(cluster))
    return problems, doc


def validate_machine_config(documents: list[dict[str, Any]], source: str) -> None:
    """Raise PipelineError(path=source) listing every problem, each naming its field."""
    problems, _doc = _config_problems(documents, source)
    if problems:
        raise PipelineError("; ".join(message for _path, message in problems), path=source)


def check_patches(patches: Sequence[Patch], contract: str, kinds: Sequence[str] = ("strategic", "json6902")) -> None:
    """Refuse what Talos's decoder refuses in a patch, for this Talos version: a document kind the version
    does not register, or an unknown key at any depth. One line naming the patch file and line.

    ``kinds`` selects the patches checked: Talos decodes a strategic patch before merging it, but applies
    JSON 6902 operations first (a failed operation is its error), so a render checks those after the merge.
    """
    for patch in patches:
        if patch.kind not in kinds:
            continue
        key = (id(patch), contract)
        known = _DECODABLE.get(key)
        if known is not None and known is patch:
            continue
        # A JSON 6902 patch is one document: its list of operations.
        documents = [patch.content] if patch.kind == "json6902" else patch.content
        findings = schema.strict_check(documents, contract, patch.source, patch=True, locate=patch.line)
        if findings:
            first = findings[0]
            message = "; ".join(_finding_text(finding) for finding in findings)
            raise PipelineError(message, path=patch.source, line=first.line)
        if len(_DECODABLE) > 16384:
            _DECODABLE.clear()
        _DECODABLE[key] = patch


# Patches (by identity, for a contract) this process found decodable. Parsed patches are cached and
# never modified (intent._parse_patch; apply_patches copies them), so a shared patch is one object for
# the whole fleet: checked once, not once per node. The entry holds the patch, so its id stays its own.
_DECODABLE: dict[tuple[int, str], Patch] = {}


def _finding_text(finding: schema.Finding) -> str:
    # Names the document only when it is not the machine config (most patches have just that one).
    at = f"{finding.path}: " if finding.path else ""
    kind = "" if finding.kind == schema.MACHINE_CONFIG else f"{finding.kind}: "
    return f"{kind}{at}{finding.reason}"


def check_node_config(
    documents: list[dict[str, Any]], node: str, contract: str, provenance: Provenance | None = None
) -> list[dict[str, Any]]:
    """A merged config as Talos would load it for ``contract``, or one PipelineError.

    Returns the documents with every value Talos decodes into a string field (extraArgs, sysctls,
    nodeLabels values ...) made that string, as talosctl writes it (keeping the patch's spelling, e.g.
    ``1e3``). Then checks them: the version's JSON schema, Talos's ported ``Validate()`` rules and the
    checks of ``talosctl validate --mode metal`` above. A problem names the patch file:line that brought
    the offending value (from ``provenance``), else the node. Run only when a node is rendered.
    """
    def raw_text(index: int, path: tuple[Any, ...]) -> str | None:
        return provenance.raw_text(documents[index], path) if provenance is not None else None

    normalised = schema.normalise_types(documents, contract, raw_text=raw_text)
    label = f"node {node}"

    def origin(index: int, path: tuple[Any, ...]) -> tuple[str, int | None] | None:
        if provenance is None or not 0 <= index < len(documents):
            return None
        found = provenance.origin(documents[index], path)
        return (found.source, found.line) if found is not None else None

    located: list[tuple[tuple[str, int | None] | None, str]] = []
    problems, legacy = _config_problems(normalised, label)
    legacy_index = next((i for i, doc in enumerate(normalised) if doc is legacy), 0)
    located.extend((origin(legacy_index, path), message) for path, message in problems)
    if not problems:
        for finding in schema.validate(normalised, contract, label):
            path = _parse_path(finding.path)
            located.append((origin(finding.doc_index, path), _finding_text(finding)))
    if not located:
        return normalised
    where = next((found for found, _message in located if found is not None), None)
    parts = []
    for found, message in located:
        suffix = f" ({found[0]}:{found[1]})" if found is not None and found != where and found[1] else ""
        suffix = suffix or (f" ({found[0]})" if found is not None and found[0] != (where or ("",))[0] else "")
        parts.append(message + suffix)
    text = f"{label}: " + "; ".join(parts)
    if where is None:
        raise PipelineError("; ".join(parts), path=label)
    raise PipelineError(text, path=where[0], line=where[1])


def _parse_path(dotted: str) -> tuple[Any, ...]:
    """``machine.files[0].mountPath`` -> ("machine", "files", 0, "mountPath")."""
    out: list[Any] = []
    for part in dotted.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("[") and part.endswith("]") and part[1:-1].isdigit():
            out.append(int(part[1:-1]))
        else:
            out.append(part)
    return tuple(out)
