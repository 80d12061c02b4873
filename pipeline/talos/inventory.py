"""The inventory: `cluster.yaml`, the declarative intent for a whole cluster."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from pipeline.errors import PipelineError
from pipeline.talos.yaml import LineMap, line_of, load_one_with_lines

INVENTORY_FILE = "cluster.yaml"
PATCH_DIR = "patches"
ROLES = ("controlplane", "worker")
RENDERERS = ("builtin", "talosctl")

_TOP_LEVEL = {"cluster", "patches", "roles", "nodes", "vars", "recipients", "renderer"}
_CLUSTER_KEYS = {"name", "endpoint", "talosVersion", "kubernetesVersion", "installDisk", "installImage"}
_NODE_KEYS = {"role", "address", "patches", "vars"}
# DNS label rules: artefact names embed cluster and node names, so keep them path- and hostname-safe.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^v?\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.-]+)?$")
_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")


@dataclass(frozen=True)
class Recipient:
    """A named age public key that every artefact is encrypted to."""

    name: str
    key: str


@dataclass(frozen=True)
class Node:
    """One machine of the cluster, as declared in the inventory."""

    name: str
    role: str
    address: str | None
    patches: tuple[str, ...]
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    line: int | None = None

    def context(self) -> dict[str, Any]:
        """The `node` variable seen by patch templates."""
        return {"name": self.name, "role": self.role, "address": self.address, "vars": dict(self.vars)}


@dataclass(frozen=True)
class Cluster:
    """The cluster-wide settings that shape base configs and artefact names."""

    name: str
    endpoint: str
    talos_version: str
    kubernetes_version: str
    install_disk: str | None = None
    install_image: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Inventory:
    """The parsed, validated `cluster.yaml` plus where it lives."""

    root: Path
    cluster: Cluster
    nodes: dict[str, Node]
    shared_patches: tuple[str, ...]
    role_patches: dict[str, tuple[str, ...]]
    vars: dict[str, Any]
    recipients: tuple[Recipient, ...]
    renderer: str = "builtin"

    def patches_for(self, node: Node) -> list[str]:
        """Patch files for ``node`` relative to the repo, in order: shared, role, node."""
        names = [*self.shared_patches, *self.role_patches.get(node.role, ()), *node.patches]
        return [f"{PATCH_DIR}/{name}" for name in names]

    def template_context(self, node: Node, secrets: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a patch template sees: `cluster`, `node` and `vars` (node vars override global ones).

        ``secrets``: the decrypted template variables, given only to a template that reads them
        (so the vars file is decrypted only when some patch uses it).
        """
        merged = {**self.vars, **node.vars}
        context = {"cluster": dict(self.cluster.raw), "node": node.context(), "vars": merged}
        if secrets is not None:
            context["secrets"] = dict(secrets)
        return context

    def artefact_name(self, node: Node | str) -> str:
        """`<cluster>-<node>`, the stem of the rendered file and the encrypted artefact."""
        name = node if isinstance(node, str) else node.name
        return f"{self.cluster.name}-{name}"


def _fail(message: str, source: str, lines: LineMap, *path: Any) -> PipelineError:
    return PipelineError(message, path=source, line=line_of(lines, path))


def _check_patch_name(value: Any, source: str, lines: LineMap, *path: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{'.'.join(map(str, path))}: a patch must be a file name under {PATCH_DIR}/", source,
                    lines, *path)
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts:
        raise _fail(f"{'.'.join(map(str, path))}: patch '{value}' must stay inside {PATCH_DIR}/", source,
                    lines, *path)
    return str(pure)


def _patch_list(value: Any, source: str, lines: LineMap, *path: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(f"{'.'.join(map(str, path))}: expected a list of patch files", source, lines, *path)
    return tuple(_check_patch_name(item, source, lines, *path, i) for i, item in enumerate(value))


def _mapping(value: Any, source: str, lines: LineMap, *path: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(f"{'.'.join(map(str, path))}: expected a mapping", source, lines, *path)
    return value


def _parse_cluster(raw: Any, source: str, lines: LineMap) -> Cluster:
    data = _mapping(raw, source, lines, "cluster")
    unknown = sorted(set(data) - _CLUSTER_KEYS, key=str)
    if unknown:
        raise _fail(f"cluster.{unknown[0]}: unknown key (known: {', '.join(sorted(_CLUSTER_KEYS))})",
                    source, lines, "cluster", unknown[0])
    for key in ("name", "endpoint", "talosVersion", "kubernetesVersion"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(f"cluster.{key}: required (a string)", source, lines, "cluster", key)
    if not _NAME.match(data["name"]):
        raise _fail(f"cluster.name: '{data['name']}' must be a DNS label (a-z, 0-9, -)", source, lines,
                    "cluster", "name")
    # urlparse raises on an unclosed IPv6 bracket and .port on a port out of range: both are bad input.
    try:
        url = urlparse(data["endpoint"])
        host, port = url.hostname, url.port
    except ValueError as error:
        raise _fail(f"cluster.endpoint: '{data['endpoint']}' is not a valid URL ({error})", source, lines,
                    "cluster", "endpoint") from None
    if url.scheme != "https" or not host:
        raise _fail(f"cluster.endpoint: '{data['endpoint']}' must be an https:// URL", source, lines,
                    "cluster", "endpoint")
    if port is not None and not 1 <= port <= 65535:
        raise _fail(f"cluster.endpoint: port {port} is out of range (1-65535)", source, lines,
                    "cluster", "endpoint")
    for key in ("talosVersion", "kubernetesVersion"):
        if not _VERSION.match(data[key]):
            raise _fail(f"cluster.{key}: '{data[key]}' is not a version like v1.11.5", source, lines,
                        "cluster", key)
    for key in ("installDisk", "installImage"):
        if key in data and not isinstance(data[key], str):
            raise _fail(f"cluster.{key}: expected a string", source, lines, "cluster", key)
    return Cluster(
        name=data["name"],
        endpoint=data["endpoint"],
        talos_version=data["talosVersion"],
        kubernetes_version=data["kubernetesVersion"],
        install_disk=data.get("installDisk"),
        install_image=data.get("installImage"),
        raw=dict(data),
    )


def _parse_node(name: Any, raw: Any, source: str, lines: LineMap, root: Path) -> Node:
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(f"nodes.{name}: node name must be a DNS label (a-z, 0-9, -)", source, lines, "nodes", name)
    data = _mapping(raw, source, lines, "nodes", name)
    unknown = sorted(set(data) - _NODE_KEYS, key=str)
    if unknown:
        raise _fail(f"nodes.{name}.{unknown[0]}: unknown key (known: {', '.join(sorted(_NODE_KEYS))})",
                    source, lines, "nodes", name, unknown[0])
    role = data.get("role")
    if role is None:
        raise _fail(f"nodes.{name}.role: required ({' or '.join(ROLES)})", source, lines, "nodes", name)
    if role not in ROLES:
        raise _fail(f"nodes.{name}.role: unknown role '{role}' (known: {', '.join(ROLES)})", source, lines,
                    "nodes", name, "role")
    address = data.get("address")
    if address is not None:
        try:
            ipaddress.ip_interface(str(address))
        except ValueError:
            raise _fail(f"nodes.{name}.address: '{address}' is not an IP address", source, lines,
                        "nodes", name, "address") from None
        address = str(address)
    if "patches" in data:
        patches = _patch_list(data["patches"], source, lines, "nodes", name, "patches")
    elif (root / PATCH_DIR / f"{name}.yaml").is_file():
        patches = (f"{name}.yaml",)
    else:
        patches = ()
    node_vars = _mapping(data.get("vars"), source, lines, "nodes", name, "vars")
    return Node(name=name, role=role, address=address, patches=patches, vars=dict(node_vars),
                line=line_of(lines, ("nodes", name)))


def _refuse_duplicate_addresses(nodes: dict[str, Node], source: str, lines: LineMap) -> None:
    """Two nodes with one IP address would get each other's configs applied: an error, not a warning."""
    seen: dict[Any, str] = {}
    for node in nodes.values():
        if node.address is None:
            continue
        ip = ipaddress.ip_interface(node.address).ip
        if ip in seen:
            raise _fail(f"nodes.{node.name}.address: {ip} is already the address of node {seen[ip]}", source,
                        lines, "nodes", node.name, "address")
        seen[ip] = node.name


def _parse_recipients(raw: Any, source: str, lines: LineMap) -> tuple[Recipient, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("recipients: expected a list of {name, key}", source, lines, "recipients")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("key"), str):
            raise _fail(f"recipients[{i}]: expected {{name, key}}", source, lines, "recipients", i)
        if not _AGE_RECIPIENT.match(item["key"]):
            raise _fail(f"recipients[{i}].key: not an age public key (age1...)", source, lines,
                        "recipients", i, "key")
        out.append(Recipient(item["name"], item["key"]))
    return tuple(out)


def parse_inventory(text: str, root: Path, source: str = INVENTORY_FILE) -> Inventory:
    """Parse and validate the inventory text; every error names the file and line."""
    data, lines = load_one_with_lines(text, source)
    if not isinstance(data, dict):
        raise PipelineError("the inventory must be a mapping (cluster, nodes, ...)", path=source,
                            line=line_of(lines, ()))
    unknown = sorted(set(data) - _TOP_LEVEL, key=str)
    if unknown:
        raise _fail(f"{unknown[0]}: unknown top-level key (known: {', '.join(sorted(_TOP_LEVEL))})",
                    source, lines, unknown[0])
    if "cluster" not in data:
        raise PipelineError("cluster: required", path=source, line=1)
    cluster = _parse_cluster(data["cluster"], source, lines)
    shared = _patch_list(data.get("patches"), source, lines, "patches")
    roles_raw = _mapping(data.get("roles"), source, lines, "roles")
    role_patches: dict[str, tuple[str, ...]] = {}
    for role, value in roles_raw.items():
        if role not in ROLES:
            raise _fail(f"roles.{role}: unknown role (known: {', '.join(ROLES)})", source, lines, "roles", role)
        role_patches[role] = _patch_list(value, source, lines, "roles", role)
    nodes_raw = _mapping(data.get("nodes"), source, lines, "nodes")
    if not nodes_raw:
        raise _fail("nodes: at least one node is required", source, lines, "nodes")
    nodes = {name: _parse_node(name, raw, source, lines, root) for name, raw in nodes_raw.items()}
    _refuse_duplicate_addresses(nodes, source, lines)
    renderer = data.get("renderer", "builtin")
    if renderer not in RENDERERS:
        raise _fail(f"renderer: unknown renderer '{renderer}' (known: {', '.join(RENDERERS)})", source,
                    lines, "renderer")
    patch_dir = (root / PATCH_DIR).resolve()
    checked: set[str] = set()  # a shared patch is checked once, not once per node
    for node in nodes.values():
        for patch in (*shared, *role_patches.get(node.role, ()), *node.patches):
            if patch in checked:
                continue
            checked.add(patch)
            path = root / PATCH_DIR / patch
            if not path.is_file():
                raise PipelineError(
                    f"patch file {PATCH_DIR}/{patch} (used by node {node.name}) does not exist",
                    path=source, line=_patch_line(lines, shared, role_patches, node, patch))
            # A symlink under patches/ must not read (and so promote) a file from elsewhere.
            if not path.resolve().is_relative_to(patch_dir):
                raise PipelineError(
                    f"patch file {PATCH_DIR}/{patch} (used by node {node.name}) resolves outside {PATCH_DIR}/",
                    path=source, line=_patch_line(lines, shared, role_patches, node, patch))
    return Inventory(
        root=root,
        cluster=cluster,
        nodes=nodes,
        shared_patches=shared,
        role_patches=role_patches,
        vars=dict(_mapping(data.get("vars"), source, lines, "vars")),
        recipients=_parse_recipients(data.get("recipients"), source, lines),
        renderer=renderer,
    )


def _patch_line(lines: LineMap, shared: tuple[str, ...], role_patches: dict[str, tuple[str, ...]],
                node: Node, patch: str) -> int | None:
    if patch in shared:
        return line_of(lines, ("patches", shared.index(patch)))
    if patch in role_patches.get(node.role, ()):
        return line_of(lines, ("roles", node.role, role_patches[node.role].index(patch)))
    if patch in node.patches:
        return line_of(lines, ("nodes", node.name, "patches", node.patches.index(patch)))
    return node.line


def load_inventory(root: Path) -> Inventory:
    """Read `cluster.yaml` from the repository at ``root``."""
    path = root / INVENTORY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("no inventory here: create cluster.yaml (see README)", path=INVENTORY_FILE) from None
    except UnicodeDecodeError:
        raise PipelineError("not UTF-8 text", path=INVENTORY_FILE) from None
    return parse_inventory(text, root)
