"""Convert talhelper's `talconfig.yaml` (+ `talenv.yaml`) into this project's cluster.yaml and patches/.

Pure: text in, text out; the only file reads are the talconfig's own `@file` patches (confined to
its folder). Field by field, with what talhelper (budimanjojo/talhelper, pkg/talos) sets:

    clusterName, endpoint, talosVersion,    cluster.name / endpoint / talosVersion / kubernetesVersion
      kubernetesVersion                     (a name that is not a DNS label is mapped to one)
    domain                                  cluster.network.dnsDomain          patch talhelper-cluster.yaml
    clusterPodNets / clusterSvcNets         cluster.network.podSubnets / serviceSubnets        (idem)
    cniConfig                               cluster.network.cni                                (idem)
    additionalMachineCertSans               machine.certSANs                                   (idem)
    additionalApiServerCertSans             cluster.apiServer.certSANs    talhelper-controlplane.yaml
    allowSchedulingOnControlPlanes/Masters  cluster.allowSchedulingOnControlPlanes             (idem)
    nodes[].hostname                        the node (name mapped to a DNS label) and its hostname:
                                            machine.network.hostname (Talos <= 1.11), a HostnameConfig
                                            document {hostname, auto: off} (>= 1.12); none with
                                            ignoreHostname
    nodes[].ipAddress                       the node's address (the first of a comma-separated list)
    nodes[].controlPlane                    role controlplane / worker
    nodes[].installDisk                     machine.install.disk            talhelper-node-<node>.yaml
    nodes[].installDiskSelector             machine.install.diskSelector                       (idem)
    nameservers, disableSearchDomain        machine.network.nameservers / disableSearchDomain (<= 1.11),
                                            a ResolverConfig document (>= 1.12)                (idem)
    networkInterfaces                       machine.network.interfaces                         (idem)
                                            (a WireGuard privateKey is left out and listed as
                                            unconverted: a secret never goes into a plaintext patch)
    nodeLabels                              machine.nodeLabels (not the Go-template values)    (idem)
    certSANs                                machine.certSANs                                   (idem)
    patches (global, controlPlane/worker,   patch files, in talhelper's order for each node:
      node)                                 node fields, group patches, node patches, global patches

Node-level values override the group's (`controlPlane:`/`worker:`) as talhelper's merge does;
group patches and certSANs are prepended/appended unless overridePatches/overrideMachineCertSANs.

Layout: talhelper-cluster.yaml is the shared `patches:` and talhelper-controlplane.yaml the
`roles.controlplane` patch (both settings talhelper puts in the base config, so they come first);
every node then lists its patches explicitly, in talhelper's order. An inline patch becomes
talhelper-<global|controlplane|worker|node>-<n>.yaml; an `@file` patch keeps its path relative to
the talconfig (one file however often it is used; names the repository ignores, such as
worker.yaml, get the talhelper- prefix). `@file` paths must stay inside the talconfig's folder
(no `..`, not absolute, no symlink out). An empty patch file is skipped, as talhelper does. All
patch text is escaped so that jinja2 renders it back unchanged. The talconfig is read as
talhelper's Go decoder reads it: `on`/`no`/`1.10` stay text, except that Go booleans accept yes/on.

`${VAR}` / `$VAR` (talhelper runs envsubst with talenv.yaml, and refuses unset or empty
variables): inside patch text written by the user (inline or `@file`), a reference becomes
`{{ vars.VAR }}` and VAR goes into cluster.yaml's `vars:` with its value; everywhere else (the
cluster.yaml fields, and the patches generated from talconfig fields) the value is substituted,
re-typed as YAML would read it when it is a whole scalar. `$$` is a literal `$`. An unset
variable, or another envsubst form (`${VAR:-default}`), is a PipelineError.

Everything that is set in the talconfig and not converted is listed in ``unconverted`` by its
dotted name (`nodes[kmaster1].schematic`, `patches[2]`): nothing is dropped silently. A patch
using talhelper's Go templating (`{{ .MachineConfig... }}`) is such a field.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import yaml

from pipeline.errors import PipelineError
from pipeline.talos.yaml import dump_documents, load_one

__all__ = ["TalconfigImport", "convert_talconfig", "import_talconfig", "load_talenv", "node_name_for"]

PATCH_PREFIX = "talhelper-"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# envsubst references: `$$` (escape), `${...}`, `$NAME`.
_REF = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names the repository's .gitignore / guard treat as plaintext machine configs.
_RESERVED_NAME = re.compile(r"^((secrets|controlplane|worker|talosconfig|kubeconfig)(\.ya?ml)?|.+\.decrypted\.ya?ml)$")

_TOP_CONVERTED = {"clusterName", "endpoint", "talosVersion", "kubernetesVersion", "domain", "allowSchedulingOnMasters",
                  "allowSchedulingOnControlPlanes", "additionalMachineCertSans", "additionalApiServerCertSans",
                  "clusterPodNets", "clusterSvcNets", "cniConfig", "patches", "nodes", "controlPlane", "worker"}
_GROUP_CONVERTED = {"nameservers", "networkInterfaces", "nodeLabels", "patches", "certSANs", "disableSearchDomain"}
_NODE_CONVERTED = _GROUP_CONVERTED | {"hostname", "ipAddress", "controlPlane", "installDisk", "installDiskSelector",
                                      "ignoreHostname", "overridePatches", "overrideMachineCertSANs"}


@dataclass(frozen=True)
class TalconfigImport:
    """The result of a conversion: files to write and what could not be converted."""

    cluster_yaml: str  # text of cluster.yaml
    patches: dict[str, str]  # file name under patches/ -> text
    unconverted: list[str]  # dotted talconfig names of set fields that were not converted
    node_names: dict[str, str]  # talconfig hostname -> cluster.yaml node name (every node)
    vars: dict[str, str] = field(default_factory=dict)  # talenv variables now in cluster.yaml `vars:`
    notes: list[str] = field(default_factory=list)  # renames, substitutions, behaviour differences


# --- YAML, read as talhelper's Go decoder reads it --------------------------------------------


class _RawLoader(yaml.BaseLoader):
    """Every plain scalar as its text (what Go keeps when it decodes into a string), except null."""


_RawLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                 ["~", "n", "N", ""])
_RawLoader.add_constructor("tag:yaml.org,2002:null", lambda _loader, _node: None)

# go-yaml v3 reads these as booleans when the target is a Go bool (and only then).
_GO_BOOLS = {**dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"), True),
             **dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"), False)}
_JINJA_OPENERS = re.compile(r"\{\{|\{%|\{#")


def _secret_var(text: str) -> str:
    """A variable name (letters, digits, _; not starting with a digit) made from node and interface names."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if not name[:1].isdigit() else f"_{name}"


def _jinja_literal(text: str) -> str:
    """``text`` as a jinja2 template that renders to exactly ``text`` (our patches are templates)."""
    return _JINJA_OPENERS.sub(lambda match: "{{ '" + match.group(0) + "' }}", text)


def _load(text: str, source: str, *, raw: bool = False) -> Any:
    if not raw:
        return load_one(text, source)  # talhelper is Go: go-yaml v3's typing, the pipeline's one reader
    try:
        return yaml.load(text, Loader=_RawLoader)  # a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise PipelineError(f"not valid YAML: {problem}", path=source,
                            line=mark.line + 1 if mark is not None else None) from None


def _dump(document: Any) -> str:
    # Written so go-yaml reads back what was converted (`"0o17"` stays a string): the pipeline's one writer.
    return dump_documents([document], for_sops=False)


def _dump_all(documents: list[Any]) -> str:
    return dump_documents(documents, for_sops=False)


# --- talenv -----------------------------------------------------------------------------------


def load_talenv(text: str, source: str = "talenv.yaml") -> dict[str, str]:
    """The variables of a talenv.yaml (a flat mapping; every value read as its text).

    A SOPS-encrypted file (talenv.sops.yaml) is refused with a message saying so.
    """
    if not text.strip():
        return {}
    try:
        data = _load(text, source, raw=True)
    except PipelineError:
        data = None
    if not isinstance(data, dict):
        # talhelper reads the file with a dotenv parser, which also takes KEY=value lines.
        return _dotenv(text, source)
    if isinstance(data.get("sops"), dict):
        raise PipelineError("talenv: this file is SOPS-encrypted; encrypted talhelper variables cannot be "
                            "imported yet: import the plaintext variables only, or decrypt it with "
                            "`sops -d` into a file outside the repository", path=source)
    out: dict[str, str] = {}
    for key, value in data.items():
        if not _VAR_NAME.match(str(key)):
            raise PipelineError(f"talenv: '{key}' is not a variable name", path=source)
        if value is not None and not isinstance(value, str):
            raise PipelineError(f"talenv: {key} must be a plain value, not a list or mapping", path=source)
        out[str(key)] = value or ""
    return out


def _dotenv(text: str, source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if not sep or not _VAR_NAME.match(key.strip()):
            raise PipelineError("talenv: expected VARIABLE: value (YAML) or VARIABLE=value lines", path=source,
                                line=number)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


class _Env:
    """Variable look-ups for one conversion: remembers which ones went into `vars:`."""

    def __init__(self, values: Mapping[str, str], source: str) -> None:
        self.values = dict(values)
        self.source = source
        self.templated: dict[str, str] = {}
        self.substituted: dict[str, list[str]] = {}

    def _value(self, name: str, where: str) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            raise PipelineError(f"{where}: ${{{name}}} is not set in talenv.yaml (talhelper refuses unset and "
                                "empty variables)", path=self.source)
        return value

    def _name(self, match: re.Match[str], where: str) -> str | None:
        if match.group(0) == "$$":
            return None
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if not _VAR_NAME.match(name):
            raise PipelineError(f"{where}: envsubst form ${{{name}}} is not supported (only ${{VAR}} and $VAR)",
                                path=self.source)
        return name

    def substitute(self, text: str, where: str) -> str:
        """``text`` with every reference replaced by its value (envsubst)."""
        def replace(match: re.Match[str]) -> str:
            name = self._name(match, where)
            if name is None:
                return "$"
            self.substituted.setdefault(name, []).append(where)
            return self._value(name, where)

        return _REF.sub(replace, text)

    def template(self, text: str, where: str) -> str:
        """``text`` with every reference as `{{ vars.NAME }}` (patch text, rendered by jinja2)."""
        def replace(match: re.Match[str]) -> str:
            name = self._name(match, where)
            if name is None:
                return "$"
            self.templated[name] = self._value(name, where)
            return "{{ vars." + name + " }}"

        return _REF.sub(replace, text)

    def resolve(self, value: Any, where: str) -> Any:
        """A parsed talconfig value with references substituted; a whole scalar is re-typed as YAML reads it."""
        if isinstance(value, str):
            if not _REF.search(value):
                return value
            text = self.substitute(value, where)
            if _REF.fullmatch(value) and value != "$$":
                typed = _load(text, self.source)
                if isinstance(typed, (bool, int, float)):
                    return typed
            return text
        if isinstance(value, list):
            return [self.resolve(item, f"{where}[{index}]") for index, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self.resolve(item, f"{where}.{key}") for key, item in value.items()}
        return value


# --- names ------------------------------------------------------------------------------------


def node_name_for(hostname: str) -> str:
    """A DNS label (a-z, 0-9, -) for a talhelper hostname: lower case, other characters as '-'."""
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:63].strip("-")
    return label or "node"


def _unique(name: str, taken: set[str]) -> str:
    candidate, counter = name, 2
    while candidate in taken:
        suffix = f"-{counter}"
        candidate = name[: 63 - len(suffix)].rstrip("-") + suffix
        counter += 1
    taken.add(candidate)
    return candidate


# --- the conversion ---------------------------------------------------------------------------


def _is_set(value: Any) -> bool:
    return value not in (None, False, "", [], {}, "false")


def _as_bool(value: Any, where: str, source: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _GO_BOOLS:
        return _GO_BOOLS[value]
    raise PipelineError(f"{where}: expected true or false", path=source)


def _string_list(value: Any, where: str, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PipelineError(f"{where}: expected a list of strings", path=source)
    return list(value)


def _contract_minor(version: str, source: str) -> int:
    match = re.match(r"^v?1\.(\d+)(\.\d+)?([-+].*)?$", version)
    if not match:
        raise PipelineError(f"talosVersion: '{version}' is not a Talos version like v1.11.5", path=source)
    return int(match.group(1))


class _Converter:
    def __init__(self, text: str, folder: Path, source: str, env: Mapping[str, str]) -> None:
        self.folder = folder
        self.source = source
        self.env = _Env(env, source)
        self.typed = _load(text, source)
        self.raw = _load(text, source, raw=True)
        if not isinstance(self.typed, dict):
            raise PipelineError("a talconfig must be a mapping (clusterName, endpoint, nodes, ...)", path=source)
        self.patches: dict[str, str] = {}
        self.file_patches: dict[str, str] = {}  # talconfig-relative path -> patch name
        self.unconverted: list[str] = []
        self.notes: list[str] = []
        self.secret_refs: dict[str, str] = {}  # stand-in in a patch -> the encrypted variable it reads
        self.labels_noted = False

    # -- values

    def string(self, raw: Any, where: str, *, required: bool = False) -> str | None:
        if raw is None or raw == "":
            if required:
                raise PipelineError(f"{where}: required", path=self.source)
            return None
        if not isinstance(raw, str):
            raise PipelineError(f"{where}: expected a string", path=self.source)
        return self.env.substitute(raw, where)

    def strings(self, raw: Any, where: str) -> list[str]:
        return [self.env.substitute(item, f"{where}[{i}]") for i, item in
                enumerate(_string_list(raw, where, self.source))]

    def flag(self, typed: Any, where: str) -> bool:
        return _as_bool(self.env.resolve(typed, where), where, self.source)

    # -- patches

    def add_patch(self, name: str, text: str) -> str:
        base = name
        if _RESERVED_NAME.match(PurePosixPath(base).name):
            base = str(PurePosixPath(base).with_name(PATCH_PREFIX + PurePosixPath(base).name))
        stem, dot, ext = base.rpartition(".")
        candidate, counter = base, 2
        while candidate in self.patches:
            candidate = f"{stem}-{counter}.{ext}" if dot else f"{base}-{counter}"
            counter += 1
        self.patches[candidate] = text
        return candidate

    def user_patch(self, raw: Any, where: str, inline_name: str) -> str | None:
        """The patch file name for one talhelper patch string (inline or @file), or None if not converted."""
        if not isinstance(raw, str):
            raise PipelineError(f"{where}: a patch must be a string (inline YAML or @file)", path=self.source)
        if raw.startswith("@"):
            relative = raw[1:].strip()
            if relative and not relative.startswith("/"):
                relative = str(PurePosixPath(relative))  # "./a.yaml" and "a.yaml" are one file
            if relative in self.file_patches:
                return self.file_patches[relative]
            text = self.read_patch_file(relative, where)
            if text is None:
                return None
            name = str(PurePosixPath(relative))
            target = self.convert_patch_text(text, where, name)
            if target is not None:
                self.file_patches[relative] = target
            return target
        return self.convert_patch_text(raw, where, inline_name)

    def read_patch_file(self, relative: str, where: str) -> str | None:
        pure = PurePosixPath(relative)
        if not relative or pure.is_absolute() or Path(relative).is_absolute() or ".." in pure.parts:
            raise PipelineError(f"{where}: patch file '{relative}' must be a relative path inside the talconfig's "
                                "folder (no '..', not absolute)", path=self.source)
        folder = self.folder.resolve()
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder):
            raise PipelineError(f"{where}: patch file '{relative}' leads outside the talconfig's folder",
                                path=self.source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PipelineError(f"{where}: patch file '{relative}' does not exist", path=self.source) from None
        except (OSError, UnicodeDecodeError) as error:
            raise PipelineError(f"{where}: cannot read patch file '{relative}' ({type(error).__name__})",
                                path=self.source) from None
        if not text.strip():
            self.notes.append(f"{where}: patch file '{relative}' is empty; talhelper skips it, so does the import")
            return None
        parsed = None
        # Bad patch YAML is left to the pipeline, which reports it with the patch file's lines.
        with contextlib.suppress(yaml.YAMLError):
            parsed = yaml.load(text, Loader=yaml.BaseLoader)  # a safe loader
        if isinstance(parsed, dict) and isinstance(parsed.get("sops"), dict):
            self.unconverted.append(f"{where} (SOPS-encrypted patch file '{relative}')")
            return None
        return text

    def convert_patch_text(self, text: str, where: str, name: str) -> str | None:
        if "{{" in text or "}}" in text:
            self.unconverted.append(f"{where} (talhelper Go template)")
            return None
        # Our patches are jinja2 templates: a literal '{%' or '{#' stays literal.
        templated = self.env.template(_jinja_literal(text), where)
        if not templated.endswith("\n"):
            templated += "\n"
        return self.add_patch(name, templated)

    def patch_list(self, raw: Any, where: str, prefix: str) -> list[str]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise PipelineError(f"{where}: expected a list of patches", path=self.source)
        names = []
        for index, item in enumerate(raw):
            name = self.user_patch(item, f"{where}[{index}]", f"{PATCH_PREFIX}{prefix}-{index + 1}.yaml")
            if name is not None:
                names.append(name)
        return names

    # -- unconverted fields

    def leftovers(self, typed: Any, converted: set[str], where: str) -> None:
        if not isinstance(typed, dict):
            return
        for key, value in typed.items():
            if key not in converted and _is_set(value):
                self.unconverted.append(f"{where}{key}")

    # -- main

    def run(self) -> TalconfigImport:
        raw, typed, src = self.raw, self.typed, self.source
        cluster_name_text = self.string(raw.get("clusterName"), "clusterName", required=True)
        endpoint = self.string(raw.get("endpoint"), "endpoint", required=True)
        talos_version = self.string(raw.get("talosVersion"), "talosVersion")
        if talos_version is None:
            raise PipelineError("talosVersion: not set (talhelper then uses its latest release); set the version "
                                "the cluster runs", path=src)
        kubernetes_version = self.string(raw.get("kubernetesVersion"), "kubernetesVersion", required=True)
        assert cluster_name_text is not None and endpoint is not None and kubernetes_version is not None
        if urlparse(endpoint).scheme != "https":
            raise PipelineError(f"endpoint: '{endpoint}' must be an https:// URL", path=src)
        multidoc = _contract_minor(talos_version, src) >= 12
        cluster_name = node_name_for(cluster_name_text)
        if cluster_name != cluster_name_text:
            self.notes.append(f"clusterName '{cluster_name_text}' is cluster.name '{cluster_name}' (a DNS label)")

        self.leftovers(typed, _TOP_CONVERTED, "")
        shared = self.cluster_patches(raw, typed)
        role_patches = self.controlplane_patches(raw, typed)
        global_patches = self.patch_list(raw.get("patches"), "patches", "global")

        nodes_raw, nodes_typed = raw.get("nodes"), typed.get("nodes")
        if not isinstance(nodes_typed, list) or not nodes_typed:
            raise PipelineError("nodes: at least one node is required", path=src)
        groups = {}
        for group in ("controlPlane", "worker"):
            group_typed = typed.get(group)
            if group_typed is not None and not isinstance(group_typed, dict):
                raise PipelineError(f"{group}: expected a mapping", path=src)
            self.leftovers(group_typed or {}, _GROUP_CONVERTED, f"{group}.")
            group_raw = raw.get(group) or {}
            groups[group] = (group_raw, group_typed or {},
                             self.patch_list(group_raw.get("patches"), f"{group}.patches", group.lower()))

        taken: set[str] = set()
        node_names: dict[str, str] = {}
        nodes_out: dict[str, dict[str, Any]] = {}
        for index, node_typed in enumerate(nodes_typed):
            node_raw = nodes_raw[index]
            if not isinstance(node_typed, dict):
                raise PipelineError(f"nodes[{index}]: expected a mapping", path=src)
            hostname = self.string(node_raw.get("hostname"), f"nodes[{index}].hostname", required=True)
            assert hostname is not None
            if hostname in node_names:
                raise PipelineError(f"nodes[{index}].hostname: '{hostname}' is used by two nodes", path=src)
            name = _unique(node_name_for(hostname), taken)
            node_names[hostname] = name
            if name != hostname:
                self.notes.append(f"node '{hostname}' is nodes.{name} in cluster.yaml (a DNS label)")
            nodes_out[name] = self.node(index, hostname, name, node_raw, node_typed, groups, global_patches,
                                        multidoc)

        if self.env.substituted:
            for var, places in sorted(self.env.substituted.items()):
                self.notes.append(f"talenv {var} substituted in {', '.join(sorted(set(places)))}")
        if _contract_minor(talos_version, src) >= 14:
            self.notes.append("Talos v1.14+: cni and allowSchedulingOnControlPlanes are written as v1alpha1 fields, "
                              "where talhelper writes Kubernetes config documents")
        if multidoc:
            self.notes.append("networkInterfaces are written as machine.network.interfaces (still accepted by "
                              "Talos 1.12+), where talhelper writes LinkConfig/BondConfig documents")
        self.notes.append("install image: talhelper's default (an Image Factory installer) is not carried over; "
                          "set cluster.installImage if the nodes use one")
        inventory: dict[str, Any] = {
            "cluster": {"name": cluster_name, "endpoint": endpoint, "talosVersion": talos_version,
                        "kubernetesVersion": kubernetes_version},
        }
        if shared:
            inventory["patches"] = shared
        if role_patches:
            inventory["roles"] = {"controlplane": role_patches}
        inventory["nodes"] = nodes_out
        if self.env.templated:
            inventory["vars"] = dict(sorted(self.env.templated.items()))
        header = ("# Converted from talhelper's talconfig.yaml by `doit import --talconfig`.\n"
                  "# Patches are applied in talhelper's order: node fields, group, node, then global patches.\n")
        return TalconfigImport(cluster_yaml=header + _dump(inventory), patches=self.patches,
                               unconverted=self.unconverted, node_names=node_names,
                               vars=dict(sorted(self.env.templated.items())), notes=self.notes)

    def cluster_patches(self, raw: dict, typed: dict) -> list[str]:
        network: dict[str, Any] = {}
        domain = self.string(raw.get("domain"), "domain")
        if domain:
            network["dnsDomain"] = domain
        for key, target in (("clusterPodNets", "podSubnets"), ("clusterSvcNets", "serviceSubnets")):
            values = self.strings(raw.get(key), key)
            if values:
                network[target] = values
        if typed.get("cniConfig") is not None:
            cni = self.env.resolve(typed["cniConfig"], "cniConfig")
            if not isinstance(cni, dict) or not isinstance(cni.get("name"), str):
                raise PipelineError("cniConfig: expected a mapping with a name (flannel, custom or none)",
                                    path=self.source)
            network["cni"] = cni
        document: dict[str, Any] = {}
        sans = self.strings(raw.get("additionalMachineCertSans"), "additionalMachineCertSans")
        if sans:
            document["machine"] = {"certSANs": sans}
        if network:
            document["cluster"] = {"network": network}
        if not document:
            return []
        return [self.add_patch(f"{PATCH_PREFIX}cluster.yaml", _jinja_literal(_dump(document)))]

    def controlplane_patches(self, raw: dict, typed: dict) -> list[str]:
        cluster: dict[str, Any] = {}
        sans = self.strings(raw.get("additionalApiServerCertSans"), "additionalApiServerCertSans")
        if sans:
            cluster["apiServer"] = {"certSANs": sans}
        if self.flag(typed.get("allowSchedulingOnControlPlanes"), "allowSchedulingOnControlPlanes") or \
                self.flag(typed.get("allowSchedulingOnMasters"), "allowSchedulingOnMasters"):
            cluster["allowSchedulingOnControlPlanes"] = True
        if not cluster:
            return []
        return [self.add_patch(f"{PATCH_PREFIX}controlplane.yaml", _jinja_literal(_dump({"cluster": cluster})))]

    def node(self, index: int, hostname: str, name: str, node_raw: dict, node_typed: dict,
             groups: dict[str, tuple[dict, dict, list[str]]], global_patches: list[str],
             multidoc: bool) -> dict[str, Any]:
        where = f"nodes[{hostname}]"
        src = self.source
        self.leftovers(node_typed, _NODE_CONVERTED, f"{where}.")
        control_plane = self.flag(node_typed.get("controlPlane"), f"{where}.controlPlane")
        group_raw, group_typed, group_patches = groups["controlPlane" if control_plane else "worker"]
        group_where = "controlPlane" if control_plane else "worker"

        def pick(key: str) -> tuple[Any, Any, str]:
            # talhelper: a node's non-zero value wins over its group's.
            if _is_set(node_typed.get(key)):
                return node_raw.get(key), node_typed.get(key), f"{where}.{key}"
            return group_raw.get(key), group_typed.get(key), f"{group_where}.{key}"

        entry: dict[str, Any] = {"role": "controlplane" if control_plane else "worker"}
        address_text = self.string(node_raw.get("ipAddress"), f"{where}.ipAddress")
        if address_text:
            addresses = [part.strip() for part in address_text.split(",") if part.strip()]
            entry["address"] = addresses[0]
            if len(addresses) > 1:
                self.unconverted.append(f"{where}.ipAddress (addresses after the first)")

        machine: dict[str, Any] = {}
        network: dict[str, Any] = {}
        extra_docs: list[dict[str, Any]] = []
        if not self.flag(node_typed.get("ignoreHostname"), f"{where}.ignoreHostname"):
            if multidoc:
                extra_docs.append({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": hostname,
                                   "auto": "off"})
            else:
                network["hostname"] = hostname
        ns_raw, _ns_typed, ns_where = pick("nameservers")
        nameservers = self.strings(ns_raw, ns_where)
        _sd_raw, sd_typed, sd_where = pick("disableSearchDomain")
        disable_search = self.flag(sd_typed, sd_where)
        if multidoc:
            if nameservers or disable_search:
                resolver: dict[str, Any] = {"apiVersion": "v1alpha1", "kind": "ResolverConfig"}
                if nameservers:
                    resolver["nameservers"] = [{"address": address} for address in nameservers]
                resolver["searchDomains"] = {"disableDefault": disable_search}
                extra_docs.append(resolver)
        else:
            if nameservers:
                network["nameservers"] = nameservers
            if disable_search:
                network["disableSearchDomain"] = True
        _if_raw, if_typed, if_where = pick("networkInterfaces")
        if if_typed is not None:
            interfaces = self.env.resolve(if_typed, if_where)
            if not isinstance(interfaces, list) or not all(isinstance(item, dict) for item in interfaces):
                raise PipelineError(f"{if_where}: expected a list of interfaces", path=src)
            if interfaces:
                network["interfaces"] = interfaces
                for number, item in enumerate(interfaces):
                    wireguard = item.get("wireguard")
                    if isinstance(wireguard, dict) and wireguard.get("privateKey"):
                        # A secret never goes into a plaintext patch (the guard refuses to commit one): the
                        # patch reads an encrypted variable instead, which the user sets once (doit secrets set).
                        var = _secret_var(f"{name}_{item.get('interface') or number}_wireguard_private_key")
                        token = f"TALHELPER_SECRET_{var}"
                        self.secret_refs[token] = var
                        item["wireguard"] = {**wireguard, "privateKey": token}
                        self.notes.append(f"{if_where}[{number}].wireguard.privateKey is a secret: the patch reads "
                                          f"secrets.{var}; set it once with: doit secrets set {var}")
        if network:
            machine["network"] = network
        install: dict[str, Any] = {}
        disk = self.string(node_raw.get("installDisk"), f"{where}.installDisk")
        if disk:
            install["disk"] = disk
        if _is_set(node_typed.get("installDiskSelector")):
            selector = self.env.resolve(node_typed["installDiskSelector"], f"{where}.installDiskSelector")
            if not isinstance(selector, dict):
                raise PipelineError(f"{where}.installDiskSelector: expected a mapping", path=src)
            install["diskSelector"] = selector
        if install:
            machine["install"] = install
        labels_raw, _labels_typed, labels_where = pick("nodeLabels")
        if labels_raw is not None:
            if not isinstance(labels_raw, dict):
                raise PipelineError(f"{labels_where}: expected a mapping of labels", path=src)
            labels = {}
            for key, value in labels_raw.items():
                if not isinstance(value, str):
                    raise PipelineError(f"{labels_where}.{key}: a label value must be a string", path=src)
                if "{{" in value or "}}" in value:
                    self.unconverted.append(f"{labels_where}.{key} (talhelper Go template)")
                    continue
                labels[key] = self.env.substitute(value, f"{labels_where}.{key}")
            if labels:
                machine["nodeLabels"] = labels
                if control_plane and not self.labels_noted:
                    self.labels_noted = True
                    self.notes.append("nodeLabels are added to the base config's labels; talhelper replaces them, "
                                      "dropping Talos's node.kubernetes.io/exclude-from-external-load-balancers "
                                      "label on control planes")
        # certSANs: the node's, then its group's unless overrideMachineCertSANs.
        sans = self.strings(node_raw.get("certSANs"), f"{where}.certSANs")
        if not self.flag(node_typed.get("overrideMachineCertSANs"), f"{where}.overrideMachineCertSANs"):
            sans += self.strings(group_raw.get("certSANs"), f"{group_where}.certSANs")
        if sans:
            machine["certSANs"] = sans

        documents: list[dict[str, Any]] = ([{"machine": machine}] if machine else []) + extra_docs
        patches: list[str] = []
        if documents:
            text = _jinja_literal(_dump_all(documents))
            for token, var in self.secret_refs.items():
                text = text.replace(token, f'"{{{{ secrets.{var} }}}}"')
            patches.append(self.add_patch(f"{PATCH_PREFIX}node-{name}.yaml", text))
        if not self.flag(node_typed.get("overridePatches"), f"{where}.overridePatches"):
            patches += group_patches
        patches += self.patch_list(node_raw.get("patches"), f"{where}.patches", f"{name}")
        patches += global_patches
        entry["patches"] = patches
        return entry


def convert_talconfig(text: str, folder: Path, source: str = "talconfig.yaml",
                      env: Mapping[str, str] | None = None) -> TalconfigImport:
    """Convert the text of a talconfig.yaml whose `@file` patches live in ``folder``.

    ``env`` holds the talenv variables (see ``load_talenv``). Raises PipelineError (naming
    ``source``) for input that cannot be converted faithfully.
    """
    return _Converter(text, folder, source, env or {}).run()


def import_talconfig(path: Path, env_files: Iterable[Path] = (), environ: Mapping[str, str] | None = None
                     ) -> TalconfigImport:
    """Read and convert ``path``; ``env_files`` (talenv.yaml...) are read in order, later ones win.

    ``environ`` (for instance os.environ) is consulted after the files, like talhelper, which
    also substitutes from the process environment.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("no such talconfig file", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineError(f"cannot read the talconfig ({type(error).__name__})", path=str(path)) from None
    variables: dict[str, str] = dict(environ or {})
    for env_file in env_files:
        try:
            env_text = env_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PipelineError(f"cannot read the talenv file ({type(error).__name__})", path=str(env_file)) from None
        variables.update(load_talenv(env_text, str(env_file)))
    return convert_talconfig(text, path.parent, str(path.name), variables)
