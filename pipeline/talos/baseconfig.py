"""Base Talos machine configs and talosconfig, generated natively like `talosctl gen config`.

The v1alpha1 document comes from one jinja2 template (``templates/v1alpha1.yaml.j2``) shared by
every supported version contract, rather than one template per contract: the v1.11, v1.12 and
v1.13 outputs differ in a handful of lines, and Talos itself decides each of those lines with a
named VersionContract predicate.  Mirroring those predicates as flags (``_Features``) keeps each
difference visible in one place and makes a new contract a new row rather than a new copy of
~130 lines.  Templates rather than Python dicts because the result should read like the YAML a
reviewer compares against talosctl's output; values enter only through the ``q`` filter (a fully
escaped YAML double-quoted scalar), so base64, tokens and URLs can never be re-typed or break
the document.  The tiny talosconfig is built as a dict.

``dump_documents`` writes Talos's own encoding (go-yaml v3 style, 4-space indent), which
reproduces the stability fixtures byte for byte.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import yaml

from pipeline.errors import PipelineError
from pipeline.talos.contracts import SUPPORTED_CONTRACTS, contract
from pipeline.talos.yaml import GoDumper, load_one, scalar_analysis, sops_hazard

if TYPE_CHECKING:
    from collections.abc import Callable

    import jinja2

__all__ = [
    "SUPPORTED_CONTRACTS",
    "ClusterParams",
    "contract",
    "dump_documents",
    "generate_base",
    "generate_talosconfig",
]

ROLES = ("controlplane", "worker")
INSTALLER_IMAGE = "ghcr.io/siderolabs/installer"
KUBELET_IMAGE = "ghcr.io/siderolabs/kubelet"
K8S_REGISTRY = "registry.k8s.io"
# Talos switches to IPv6 defaults only when the endpoint string is a bare IPv6 address, which an
# endpoint URL never is: talosctl always ends up with these.
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/12"
_K8S_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_FULL_TALOS_VERSION = re.compile(r"^v\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")


@dataclass(frozen=True)
class ClusterParams:
    """What `talosctl gen config` is told on its command line."""

    name: str
    endpoint: str  # https://host:6443
    talos_version: str  # "v1.11.5" or "v1.11" -> contract v1.11
    kubernetes_version: str  # "v1.34.1" or "1.34.1"
    install_disk: str | None = None  # when set, machine.install.disk (+ the default installer image)
    install_image: str | None = None


@dataclass(frozen=True)
class _Features:
    """Talos VersionContract predicates that change the base config between v1.11 and v1.13."""

    hide_rbac_and_key_usage: bool  # HideRBACAndKeyUsage: > v1.11
    hide_disable_psp: bool  # HideDisablePSP: > v1.11
    populate_cluster_sans: bool  # PopulateClusterSANsFromEndpoint: <= v1.11
    grub_use_uki_cmdline: bool  # GrubUseUKICmdlineDefault: > v1.11
    legacy_stable_hostname: bool  # StableHostnameEnabled && !MultidocNetworkConfigSupported
    hostname_config_document: bool  # MultidocNetworkConfigSupported: > v1.11
    empty_machine_network: bool  # !KubeSpanMultidocConfig: <= v1.12


def _features(contract_name: str) -> _Features:
    minor = int(contract_name.split(".")[1])  # every supported contract is 1.x
    return _Features(
        hide_rbac_and_key_usage=minor > 11,
        hide_disable_psp=minor > 11,
        populate_cluster_sans=minor <= 11,
        grub_use_uki_cmdline=minor > 11,
        legacy_stable_hostname=minor <= 11,
        hostname_config_document=minor > 11,
        empty_machine_network=minor <= 12,
    )


def _quote(value: Any) -> str:
    """A YAML double-quoted scalar that parses back to exactly ``value``, whatever it contains."""
    if not isinstance(value, str):
        raise TypeError(f"template value must be a string, got {type(value).__name__}")
    # Everything outside printable ASCII is escaped, so YAML can neither fold line separators nor
    # reject control characters; astral characters need YAML's \U escape (JSON would write a
    # surrogate pair, which PyYAML does not recombine).
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


@cache
def _environment() -> jinja2.Environment:
    import jinja2  # only when a base config is generated (bootstrap), not on every promotion

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.talos", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML
        keep_trailing_newline=True,
    )
    env.filters["q"] = _quote
    return env


def _render(template: str, **context: Any) -> dict:
    text = _environment().get_template(template).render(**context)
    document = load_one(text, template)
    if not isinstance(document, dict):
        raise AssertionError(f"template {template} did not render a mapping")
    return document


def _kubernetes_version(params: ClusterParams) -> str:
    version = str(params.kubernetes_version).strip().removeprefix("v")
    if not _K8S_VERSION.match(version):
        raise PipelineError(
            f"invalid Kubernetes version {params.kubernetes_version!r}: expected like v1.34.1"
        )
    return version


def _check_params(params: ClusterParams) -> str:
    if not isinstance(params.name, str) or not params.name.strip():
        raise PipelineError("cluster name must be a non-empty string")
    parsed = urlparse(params.endpoint) if isinstance(params.endpoint, str) else None
    if parsed is None or parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise PipelineError(
            f"invalid cluster endpoint {params.endpoint!r}: expected a URL like https://host:6443"
        )
    return contract(params.talos_version)


def _install(params: ClusterParams) -> dict[str, str | None]:
    image = params.install_image
    if params.install_disk and not image:
        # talosctl's default is its own installer at its own version; a bare contract has no tag.
        version = "v" + str(params.talos_version).strip().removeprefix("v")
        if not _FULL_TALOS_VERSION.match(version):
            raise PipelineError(
                f"install_disk needs a full Talos version (like v1.11.5) to pick the installer image, "
                f"got {params.talos_version!r}; or set install_image"
            )
        image = f"{INSTALLER_IMAGE}:{version}"
    return {"disk": params.install_disk or None, "image": image or None}


def _encryption(bundle: dict) -> dict[str, str]:
    secrets = bundle["secrets"]
    if secrets.get("secretboxencryptionsecret"):
        return {"field": "secretboxEncryptionSecret", "secret": secrets["secretboxencryptionsecret"]}
    # A pre-1.3 bundle only has an AES-CBC key.  talosctl would drop it for these contracts (and
    # leave the cluster without etcd encryption at rest); keeping it is the safer reading.
    return {"field": "aescbcEncryptionSecret", "secret": secrets["aescbcencryptionsecret"]}


def generate_base(role: str, bundle: dict, params: ClusterParams) -> list[dict]:
    """The base machine config documents for role 'controlplane' or 'worker'.

    v1alpha1 first; contracts v1.12+ add a HostnameConfig document.  With ``install_disk`` and
    ``install_image`` unset the result is exactly what talosctl's generator gives for the bundle.
    """
    if role not in ROLES:
        raise PipelineError(f"unknown machine role {role!r}: expected one of {', '.join(ROLES)}")
    contract_name = _check_params(params)
    from pipeline.talos.secrets_bundle import validate_bundle  # cryptography: only when generating

    validate_bundle(bundle, "<secrets bundle>")
    features = _features(contract_name)
    k8s = _kubernetes_version(params)
    hostname = urlparse(params.endpoint).hostname
    documents = [
        _render(
            "v1alpha1.yaml.j2",
            role=role,
            controlplane=role == "controlplane",
            bundle=bundle,
            features=features,
            name=params.name,
            endpoint=params.endpoint,
            pod_subnet=POD_SUBNET,
            service_subnet=SERVICE_SUBNET,
            # Talos <= 1.11 adds the endpoint's host to the API server SANs.
            api_server_sans=[hostname] if features.populate_cluster_sans and hostname else [],
            install=_install(params),
            encryption=_encryption(bundle),
            images={
                "kubelet": f"{KUBELET_IMAGE}:v{k8s}",
                "apiserver": f"{K8S_REGISTRY}/kube-apiserver:v{k8s}",
                "controller_manager": f"{K8S_REGISTRY}/kube-controller-manager:v{k8s}",
                "proxy": f"{K8S_REGISTRY}/kube-proxy:v{k8s}",
                "scheduler": f"{K8S_REGISTRY}/kube-scheduler:v{k8s}",
            },
        )
    ]
    if features.hostname_config_document:
        documents.append(_render("hostnameconfig.yaml.j2"))
    return documents


def generate_talosconfig(
    bundle: dict,
    params: ClusterParams,
    endpoints: list[str],
    now: datetime | None = None,
    nodes: list[str] | None = None,
) -> dict:
    """A talosctl client config like the one `talosctl gen config` writes.

    One context named after the cluster with ``endpoints`` (and ``nodes`` when given: talosctl
    leaves them out), ``ca`` = the os CA certificate, and ``crt``/``key`` of a fresh admin client
    certificate (O=os:admin, signed by the os CA, Ed25519, valid 365 days from ``now``).
    """
    _check_params(params)
    from pipeline.talos.secrets_bundle import validate_bundle  # cryptography: only when generating

    validate_bundle(bundle, "<secrets bundle>")
    if isinstance(endpoints, str) or not all(isinstance(e, str) and e for e in endpoints):
        raise PipelineError("talosconfig endpoints must be a list of non-empty strings")
    from pipeline.talos.secrets_bundle import issue_admin_certificate

    crt, key = issue_admin_certificate(bundle, now=now)
    context: dict[str, Any] = {"endpoints": list(endpoints)}
    if nodes:
        context["nodes"] = list(nodes)
    context.update({"ca": bundle["certs"]["os"]["crt"], "crt": crt, "key": key})
    return {"context": params.name, "contexts": {params.name: context}}


class _TalosDumper(GoDumper):  # type: ignore[misc,valid-type]
    """go-yaml v3's layout, which is what Talos writes, and its typing: a string is written plain only when
    go-yaml (so sops and Talos) reads the plain text back as that same string (``talos.yaml``'s rules);
    otherwise it is double-quoted. No anchors."""

    # The emitter's speed shortcuts (memoised scalar analysis, plain scalars written in one piece) are
    # GoDumper's: talos.yaml writes every YAML the pipeline writes.


def _dump_one(document: Any) -> str:
    # One standalone YAML stream in Talos's encoding: today's per-document dump, unchanged.
    return yaml.dump(
        document,
        Dumper=_TalosDumper,
        indent=4,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=2**31 - 1,  # go-yaml does not fold long lines
    )


def _reference_dump(documents: list[dict]) -> str:
    # The whole-document encoding that dump_documents must reproduce byte for byte (and the
    # oracle its tests compare against).
    return "---\n".join(_dump_one(document) for document in documents)


# --- fragment memo -----------------------------------------------------------------------------
#
# A fleet's node configs share most of their subtrees (the cluster section, certificates, kubelet,
# install...), so re-running the pure-Python emitter over them for every node is wasted work.
# dump_documents instead emits a mapping document as the concatenation of one text fragment per
# top-level item or, for a top-level item whose value is a non-empty mapping, a header line
# ("key:") followed by one fragment per second-level item; fragments are memoised.
#
# Why that is the same text: PyYAML's emitter writes a block mapping item by item, and what it
# writes for one item depends only on that item and its indentation level, never on its siblings:
# width is unlimited, so the column never decides a line split; whether a key is written simple or
# complex depends on the key alone; and every item ends with a line break, before the next item or
# the end of the document alike. A second-level fragment is cut out of the dump of
# {key: {sub_key: value}}, so the emitter itself writes it at the nested indentation: no text is
# ever re-indented. The one document-level effect is the "..." end marker the emitter adds when a
# document's last scalar is a keep-chomped literal block ("|+"): it is cut from every fragment and
# re-added when the document's last fragment carried it.
#
# The memo key is the item's key(s) and repr(value), which is exact once _is_plain_tree has vetted
# the document: only exact dict/list/str/int/bool/float/None with str keys, whose reprs are
# distinct Python literals for distinct values (so bool/int, int/float, "1"/1 never share a key;
# the one shared repr, "nan", dumps as ".nan" whatever the NaN; tuples and str or dict subclasses
# are refused outright); no container reached twice (the emitter would write an anchor and
# aliases, possibly across fragments; this also rules out cycles); and a depth far below the
# recursion limit (so the full dump's RecursionError stays one). Anything else goes through the
# full dump unchanged, errors included.

_MAX_DEPTH = 64  # Talos configs nest about 10 deep; PyYAML's recursion gives out in the hundreds
_SCALARS = frozenset({str, int, bool, float, type(None)})
_STR = frozenset({str})
_END_MARKER = "...\n"
_BREAKS = ("\n", "\x85", "\u2028", "\u2029")  # what the emitter writes as line breaks
_HEADER_PROBE = "    k: null\n"  # what {"k": None} dumps to, nested one level


def _is_plain_tree(root: dict) -> bool:
    """Whether ``root`` is plain data whose repr is an exact fragment memo key."""
    level: list[Any] = [root]
    containers = 0
    seen: set[int] = set()
    for _depth in range(_MAX_DEPTH + 1):
        containers += len(level)
        seen.update(map(id, level))
        if len(seen) != containers:
            return False  # a container reached twice: the dump would use an anchor
        deeper: list[Any] = []
        for node in level:
            if type(node) is dict:
                if not _STR.issuperset(map(type, node)):
                    return False
                items: Any = node.values()
            else:
                items = node
            for item in items:
                kind = type(item)
                if kind is dict or kind is list:
                    deeper.append(item)
                elif kind not in _SCALARS:
                    return False
        if not deeper:
            return True
        level = deeper
    return False


# A fragment: its text, and whether its dump ended with the document end marker (cut from the text).
_Fragment = tuple[str, bool]


class _FragmentMemo:
    """Bounded, thread-safe LRU of fragments."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, ...], _Fragment | None] = OrderedDict()
        self._lock = threading.Lock()  # renders run on worker threads

    def get(self, key: tuple[str, ...], make: Callable[[], _Fragment | None]) -> _Fragment | None:
        """The fragment remembered under ``key``, else ``make()``'s, remembered (the oldest goes)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        fragment = make()  # unlocked: two threads may both make it, and make the same
        with self._lock:
            self._entries[key] = fragment
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return fragment

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()


# A role's shared fragments (~60) are used by every node and stay; per-node ones age out.
_FRAGMENTS = _FragmentMemo(4096)


def _cut_end_marker(text: str) -> _Fragment:
    # A fragment's last line is "..." only as the end marker: a top-level "..." key is quoted and
    # anything nested is indented. The break before it may be any YAML line break: a literal block
    # ending in "\x85" (or U+2028/U+2029) ends with that character, not with "\n".
    if text.endswith(_END_MARKER) and text[-len(_END_MARKER) - 1 : -len(_END_MARKER)] in _BREAKS:
        return text[: -len(_END_MARKER)], True
    return text, False


@lru_cache(maxsize=256)
def _mapping_header(key: str) -> str | None:
    # The "key:\n" line that opens a top-level item whose value is a block mapping, or None when
    # the key is not written on one line as a simple key (then the item stays one fragment).
    text = _dump_one({key: {"k": None}})
    header = text[: -len(_HEADER_PROBE)]
    if not text.endswith(_HEADER_PROBE) or not header.endswith(":\n") or header.count("\n") != 1:
        return None
    return header


# --- direct emitter ------------------------------------------------------------------------------
#
# The fragments unique to each node (its network section, labels) miss the memo, and PyYAML's
# event-based emitter costs about a millisecond each. For the common shape of such a fragment, block
# mappings and sequences of short scalars, the text is fixed by a few rules of the emitter with
# _TalosDumper's increase_indent, so it is written directly here:
#
# - a mapping's nested collection is indented to the next multiple of 4 past the mapping's indent;
#   a mapping that is a sequence item starts on the "- " line, its keys 2 past the dash;
# - a scalar is what its representer (the dumper's own, so the text and tag are the dump's) makes
#   of it, written plain exactly when choose_scalar_style would (the node resolves back to its tag
#   and the memoised analysis allows plain in block context: never a tag, never a split, as the
#   width is unlimited); a str that is not plain is double-quoted, and written verbatim between the
#   quotes when every character is printable ASCII other than '"' and '\\' (write_double_quoted
#   escapes nothing else and never splits);
# - a key is also a simple key, on one line: non-empty, single-line and short (check_simple_key).
#
# Anything else (empty collections, written in flow style; a list directly in a list; literal
# blocks; escapes; long keys; other types) makes the whole fragment fall back to the PyYAML dump.
# The callers have vetted the tree (_is_plain_tree), so no container is shared and no anchor is due.

_STR_TAG = "tag:yaml.org,2002:str"
_KEY_LENGTH = 100  # check_simple_key allows len("!!str") + len(key) < 128; this stays well inside
_VERBATIM_QUOTED = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')
# Represents scalars and resolves plain text exactly as every dump does; only read, never written
# (its alias_key stays None, so represent_scalar records nothing), hence shareable across threads.
_PROBE = _TalosDumper(io.StringIO())


@lru_cache(maxsize=8192)
def _scalar_text(text: str, tag: str, simple_key: bool) -> str | None:
    # How the emitter writes an untagged scalar node of no requested style, or None when it would
    # write it some other way than plain or verbatim double-quoted (or as a complex key).
    analysis = scalar_analysis(text)
    if simple_key and (analysis.empty or analysis.multiline or len(text) > _KEY_LENGTH):
        return None
    if analysis.allow_block_plain and _PROBE.resolve(yaml.ScalarNode, text, (True, False)) == tag:
        return text
    # Not plain: choose_scalar_style picks single quotes (then _TalosDumper's double) or double
    # quotes; a str node needs no tag in quotes (implicit[1]), any other node does.
    if tag == _STR_TAG and _VERBATIM_QUOTED.fullmatch(text):
        return f'"{text}"'
    return None


def _scalar(value: Any, simple_key: bool = False) -> str | None:
    represent = _TalosDumper.yaml_representers.get(type(value))
    if represent is None:
        return None
    node = represent(_PROBE, value)
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:  # style: a literal block
        return None
    return _scalar_text(node.value, node.tag, simple_key)


def _direct_mapping(mapping: dict, indent: int, lead: str, out: list[str]) -> bool:
    # The items of a non-empty block mapping at ``indent``; the first line starts with ``lead``.
    for key, value in mapping.items():
        # "<<" is refused by the full dump (sops would read it as a merge key): let it say so.
        key_text = _scalar(key, simple_key=True) if type(key) is str and key != "<<" else None
        if key_text is None:
            return False
        out += (lead, key_text, ":")
        lead = " " * indent
        kind = type(value)
        if kind is dict or kind is list:
            if not value:
                return False  # "{}" / "[]" in flow style
            nested = (indent // 4 + 1) * 4
            out.append("\n")
            if kind is dict:
                if not _direct_mapping(value, nested, " " * nested, out):
                    return False
            elif not _direct_sequence(value, nested, out):
                return False
        else:
            text = _scalar(value)
            if text is None:
                return False
            out += (" ", text, "\n")
    return True


def _direct_sequence(sequence: list, indent: int, out: list[str]) -> bool:
    # The items of a non-empty block sequence whose dashes are at ``indent``.
    dash = " " * indent + "- "
    for item in sequence:
        kind = type(item)
        if kind is dict:
            if not item or not _direct_mapping(item, indent + 2, dash, out):
                return False
        elif kind is list:
            return False
        else:
            text = _scalar(item)
            if text is None:
                return False
            out += (dash, text, "\n")
    return True


def _direct_item(key: str, value: Any, indent: int) -> str | None:
    """The text of mapping item ``key: value`` at ``indent`` (0 or 4), or None if not handled here."""
    out: list[str] = []
    return "".join(out) if _direct_mapping({key: value}, indent, " " * indent, out) else None


def _top_fragment(key: str, value: Any) -> _Fragment | None:
    # One top-level item, as the emitter writes it.
    def make() -> _Fragment | None:
        text = _direct_item(key, value, 0)  # written directly: no literal block, so no end marker
        return (text, False) if text is not None else _cut_end_marker(_dump_one({key: value}))

    return _FRAGMENTS.get((key, repr(value)), make)


def _nested_fragment(key: str, header: str, sub_key: str, value: Any) -> _Fragment | None:
    # One second-level item, as the emitter writes it under its parent's header line.
    def make() -> _Fragment | None:
        direct = _direct_item(sub_key, value, 4)
        if direct is not None:
            return direct, False  # no literal block, so no end marker
        text = _dump_one({key: {sub_key: value}})
        # Cannot fail for a key _mapping_header accepted; checked rather than assumed.
        return _cut_end_marker(text[len(header) :]) if text.startswith(header) else None

    return _FRAGMENTS.get((key, sub_key, repr(value)), make)


def _fragment_dump(document: dict) -> str | None:
    # The document's text assembled from memoised fragments; None when it must take the full dump.
    parts: list[str] = []
    ends_open = False
    for key, value in document.items():
        header = _mapping_header(key) if type(value) is dict and value else None
        if header is None:
            fragments = [_top_fragment(key, value)]
        else:
            parts.append(header)
            fragments = [_nested_fragment(key, header, sub_key, sub_value) for sub_key, sub_value in value.items()]
        for fragment in fragments:
            if fragment is None:
                return None
            text, ends_open = fragment
            parts.append(text)
    if ends_open:
        parts.append(_END_MARKER)
    return "".join(parts)


def _dump_document(document: Any) -> str:
    if type(document) is dict and document and _is_plain_tree(document):
        try:
            text = _fragment_dump(document)
        except ValueError:
            # repr cannot write an int past Python's digit limit (nor can the emitter): the full
            # dump raises exactly what it always raised.
            text = None
        if text is not None:
            return text
    return _dump_one(document)


def dump_documents(documents: list[dict], *, for_sops: bool = True) -> str:
    """YAML text of a multi-document config in Talos's encoding.

    4-space indent, key order preserved, ``---`` between documents. Byte for byte the text of a
    whole-document dump, built from memoised per-item fragments (see the fragment memo above).
    go-yaml v3 (Talos, sops) reads it back to exactly these values: strings it would type otherwise
    (``1e3``, ``0o644``, ``yes``, ``2024-06-01`` ...) are quoted. With ``for_sops`` a string sops
    would corrupt (``talos.yaml.sops_hazard``) is a PipelineError naming its place, never its value.
    """
    if for_sops:
        problem = sops_hazard(documents)
        if problem:
            raise PipelineError(problem)
    return "---\n".join(_dump_document(document) for document in documents)
