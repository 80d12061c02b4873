"""`doit plan`: what a promotion would change, node by node and field by field, secrets redacted.

The plan renders in memory and decrypts in memory: it writes no file under rendered/, changes no
artefact and no ledger entry, and runs no encryption. Values under a sensitive key (and any value
that holds a secret of the bundle or a private key) are shown only as ``(secret)``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import yaml

from pipeline import bootstrap, guard, ledger, sops
from pipeline.baseconfig import generate_base
from pipeline.errors import PipelineError
from pipeline.inventory import ROLES, Inventory, Node, load_inventory
from pipeline.patching import apply_patches
from pipeline.promotion import describe_trigger, is_current
from pipeline.rendering import base_artefact, intent_inputs, load_node_patches, node_artefact, render_node
from pipeline.secrets_bundle import validate_bundle
from pipeline.sopsconfig import SENSITIVE_FIELDS, SOPS_CONFIG
from pipeline.validation import validate_machine_config

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SENSITIVE = frozenset(SENSITIVE_FIELDS)
_MAX_VALUE = 80
Segment = str | int


# --- field-level diff of parsed documents --------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One field that differs: ``op`` is ``+`` (added), ``-`` (removed) or ``~`` (changed)."""

    op: str
    path: tuple[Segment, ...]
    old: Any = None
    new: Any = None

    @property
    def dotted(self) -> str:
        """``machine.network.interfaces[0].addresses[0]``."""
        return dotted(self.path)

    @property
    def secret(self) -> bool:
        """Whether the field sits under a sensitive key (its value is never shown)."""
        return any(isinstance(part, str) and part in _SENSITIVE for part in self.path)


def dotted(path: tuple[Segment, ...]) -> str:
    """A path as dotted keys and [index] for list items."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _leaves(value: Any, path: tuple[Segment, ...]) -> Iterator[tuple[tuple[Segment, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _added(value: Any, path: tuple[Segment, ...]) -> Iterator[Change]:
    return (Change("+", leaf_path, new=leaf) for leaf_path, leaf in _leaves(value, path))


def _removed(value: Any, path: tuple[Segment, ...]) -> Iterator[Change]:
    return (Change("-", leaf_path, old=leaf) for leaf_path, leaf in _leaves(value, path))


def _same(old: Any, new: Any) -> bool:
    # True == 1 in Python; in a config they differ.
    return type(old) is type(new) and old == new


def diff_values(old: Any, new: Any, path: tuple[Segment, ...] = ()) -> Iterator[Change]:
    """Every leaf that differs between two parsed YAML values (lists aligned by content)."""
    if isinstance(old, dict) and isinstance(new, dict) and old and new:
        for key, item in old.items():
            if key not in new:
                yield from _removed(item, (*path, str(key)))
        for key, item in new.items():
            if key not in old:
                yield from _added(item, (*path, str(key)))
            else:
                yield from diff_values(old[key], item, (*path, str(key)))
    elif isinstance(old, list) and isinstance(new, list) and old and new:
        before = [ledger.canonical(item) for item in old]
        after = [ledger.canonical(item) for item in new]
        for tag, i1, i2, j1, j2 in SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
            for offset in range(paired):
                yield from diff_values(old[i1 + offset], new[j1 + offset], (*path, j1 + offset))
            for index in range(i1 + paired, i2):
                yield from _removed(old[index], (*path, index))
            for index in range(j1 + paired, j2):
                yield from _added(new[index], (*path, index))
    elif _same(old, new):
        return
    elif not isinstance(old, dict | list) and not isinstance(new, dict | list):
        yield Change("~", path, old, new)
    else:
        yield from _removed(old, path)
        yield from _added(new, path)


def _document_key(doc: Any, index: int) -> tuple[str, str]:
    if isinstance(doc, dict) and doc.get("kind"):
        return str(doc["kind"]), str(doc.get("name") or "")
    if (isinstance(doc, dict) and "machine" in doc) or index == 0:
        return "", ""  # the v1alpha1 config: paths start at machine./cluster.
    return f"document{index + 1}", ""


def diff_documents(old: list[Any], new: list[Any]) -> list[Change]:
    """Changes between two multi-document configs, documents paired by kind (and name)."""
    before = {_document_key(doc, i): doc for i, doc in enumerate(old)}
    after = {_document_key(doc, i): doc for i, doc in enumerate(new)}
    changes: list[Change] = []
    for key in dict.fromkeys([*before, *after]):
        prefix: tuple[Segment, ...] = () if key == ("", "") else (f"{key[0]}({key[1]})" if key[1] else key[0],)
        if key not in after:
            changes.extend(_removed(before[key], prefix))
        elif key not in before:
            changes.extend(_added(after[key], prefix))
        else:
            changes.extend(diff_values(before[key], after[key], prefix))
    return changes


# --- redaction ----------------------------------------------------------------------------------


@dataclass
class Redactor:
    """Decides what may be shown: never a value under a sensitive key, a bundle secret, or a private key."""

    secrets: set[str] = field(default_factory=set)

    @classmethod
    def from_bundle(cls, bundle: Any) -> Redactor:
        """Every string of the secrets bundle long enough to be a secret."""
        values = {str(leaf) for _path, leaf in _leaves(bundle, ()) if isinstance(leaf, str) and len(leaf) >= 8}
        return cls(values)

    def hides(self, value: Any) -> bool:
        """Whether ``value`` must not be printed."""
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return bool(guard.PRIVATE_KEY.search(text)) or any(secret in text for secret in self.secrets)

    def show(self, value: Any) -> str:
        """A short, safe rendering of one leaf value."""
        if self.hides(value):
            return "(secret)"
        if isinstance(value, str):
            if "\n" in value.strip("\n"):
                return f"({len(value.splitlines())} lines of text)"
            text = value if value and value.strip() == value and not value.startswith(("'", '"')) \
                else json.dumps(value)
        else:
            text = json.dumps(value, default=str)
        return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."

    def line(self, change: Change) -> str:
        """``+ path: value``, ``- path: value``, ``~ path: old -> new``, secrets redacted."""
        secret = change.secret or self.hides(change.old) or self.hides(change.new)
        if change.op == "~":
            shown = "(secret changed)" if secret else f"{self.show(change.old)} -> {self.show(change.new)}"
        else:
            value = change.new if change.op == "+" else change.old
            shown = "(secret)" if secret else self.show(value)
        return f"{change.op} {change.dotted}: {shown}"


# --- the plan -----------------------------------------------------------------------------------


@dataclass
class NodePlan:
    """What a promotion would do to one node."""

    node: str
    artefact: str
    state: str  # "changed", "unchanged" (re-rendered, same documents), "new", "removed"
    trigger: str
    changes: list[Change] = field(default_factory=list)


@dataclass
class Plan:
    """The whole plan: bootstrap steps, the nodes that would change, the ones already current."""

    nodes: list[NodePlan]
    up_to_date: list[str]
    total: int
    bootstrap: list[str] = field(default_factory=list)
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def changing(self) -> list[NodePlan]:
        """Nodes whose artefact would be written or removed."""
        return [item for item in self.nodes if item.state != "unchanged"]


def _documents(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]


def _decrypt_all(root: Path, artefacts: list[str]) -> dict[str, str]:
    if not artefacts:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(artefacts))) as pool:
        return dict(zip(artefacts, pool.map(lambda rel: sops.decrypt(rel, root), artefacts), strict=True))


def _new_bases(inventory: Inventory, bundle: dict[str, Any], roles: list[str]) -> dict[str, list[Any]]:
    """Base configs bootstrap would regenerate (cluster settings changed), made in memory."""
    params = bootstrap.cluster_params(inventory)
    return {role: generate_base(role, bundle, params) for role in roles}


def _render(inventory: Inventory, node: Node, bases: dict[str, list[Any]]) -> list[Any]:
    if node.role not in bases:
        return render_node(inventory, node).documents
    documents = apply_patches(copy.deepcopy(bases[node.role]), load_node_patches(inventory, node))
    validate_machine_config(documents, f"node {node.name}")
    return documents


def make_plan(root: Path) -> Plan:
    """Decide, render and diff every node a promotion would redo; needs the key, writes nothing."""
    inventory = load_inventory(root)
    record = ledger.load_ledger(root)
    todo = bootstrap.missing(inventory)
    plan = Plan(nodes=[], up_to_date=[], total=len(inventory.nodes), bootstrap=todo)
    if SOPS_CONFIG in todo or guard.SECRETS_ARTEFACT in todo:
        # Nothing to render against before bootstrap: every node would be made from scratch.
        plan.nodes = [NodePlan(node.name, node_artefact(inventory, node), "new", "bootstrap first")
                      for node in inventory.nodes.values()]
        return plan

    regenerated = [role for role in ROLES if base_artefact(role) in todo]
    pending = [node for node in inventory.nodes.values()
               if node.role in regenerated or not is_current(inventory, record, node)]
    existing = [node_artefact(inventory, node) for node in pending if (root / node_artefact(inventory, node)).is_file()]
    plain = _decrypt_all(root, [guard.SECRETS_ARTEFACT, *existing])
    bundle = yaml.load(plain.pop(guard.SECRETS_ARTEFACT), Loader=_LOADER)
    plan.redactor = Redactor.from_bundle(bundle)
    bases: dict[str, list[Any]] = {}
    if regenerated:
        validate_bundle(bundle, guard.SECRETS_ARTEFACT)
        bases = _new_bases(inventory, bundle, regenerated)

    pending_names = {node.name for node in pending}
    for node in inventory.nodes.values():
        if node.name not in pending_names:
            plan.up_to_date.append(node.name)
            continue
        artefact = node_artefact(inventory, node)
        entry = record.nodes.get(node.name) or {}
        documents = _render(inventory, node, bases)
        if artefact not in plain:
            plan.nodes.append(NodePlan(node.name, artefact, "new", "new", list(_added(documents, ()))))
            continue
        known = entry.get("artefact_sha256") == ledger.sha256_file(root / artefact)
        trigger = describe_trigger(entry, intent_inputs(inventory, node), known)
        if node.role in regenerated:
            trigger = "base config regenerated (cluster settings changed)"
        changes = diff_documents(_documents(plain[artefact]), documents)
        plan.nodes.append(NodePlan(node.name, artefact, "changed" if changes else "unchanged", trigger, changes))

    for name, entry in record.nodes.items():
        artefact = entry.get("artefact") if isinstance(entry, dict) else None
        if name not in inventory.nodes and artefact and (root / artefact).is_file():
            plan.nodes.append(NodePlan(name, artefact, "removed", "no longer in cluster.yaml"))
    return plan


# --- output -------------------------------------------------------------------------------------


def _headline(item: NodePlan) -> str:
    if item.state == "new":
        return f"new artefact {item.artefact}" + (f" ({len(item.changes)} fields)" if item.changes else "")
    if item.state == "removed":
        return f"{item.artefact} would be removed"
    if item.state == "unchanged":
        return "re-rendered to the same documents (artefact kept)"
    return f"{len(item.changes)} field{'s' if len(item.changes) != 1 else ''} change in {item.artefact}"


def _summary(plan: Plan) -> str:
    names = ", ".join(item.node for item in plan.changing)
    return (f"plan: {len(plan.changing)} of {plan.total} nodes would change" + (f" ({names})" if names else "")
            + f" · {len(plan.up_to_date)} up to date · nothing written, nothing encrypted")


def format_text(plan: Plan) -> str:
    """Plain text: a line per node, an indented line per changed field."""
    lines = [f"bootstrap would make {', '.join(plan.bootstrap)}"] if plan.bootstrap else []
    for item in plan.nodes:
        lines.append(f"{item.node}: {item.trigger} -> {_headline(item)}")
        if item.state == "changed":
            lines.extend(f"  {plan.redactor.line(change)}" for change in item.changes)
    lines.append(_summary(plan))
    return "\n".join(lines) + "\n"


def format_markdown(plan: Plan) -> str:
    """Markdown for a pull-request comment: a heading, a section and a diff block per node."""
    lines = [f"### talos-promote plan: {len(plan.changing)} of {plan.total} nodes would change", ""]
    if plan.bootstrap:
        lines += ["Bootstrap would make " + ", ".join(f"`{path}`" for path in plan.bootstrap) + ".", ""]
    if not plan.nodes:
        lines += ["Nothing to promote: every artefact is current.", ""]
    for item in plan.nodes:
        headline = _headline(item).replace(item.artefact, f"`{item.artefact}`")
        lines += [f"#### `{item.node}`: {item.trigger}", "", headline, ""]
        if item.state == "changed":
            body = [plan.redactor.line(change).replace("```", "'''") for change in item.changes]
            lines += ["```diff", *body, "```", ""]
    lines.append(f"_{len(plan.up_to_date)} up to date · secret values are never shown · nothing was written_")
    return "\n".join(lines) + "\n"


FORMATS = {"text": format_text, "markdown": format_markdown}


def render_plan(root: Path, fmt: str = "text") -> str:
    """The plan for the repository at ``root`` in ``fmt`` (text or markdown)."""
    if fmt not in FORMATS:
        raise PipelineError(f"unknown plan format {fmt!r} (known: {', '.join(FORMATS)})")
    return FORMATS[fmt](make_plan(root))
