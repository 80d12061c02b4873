"""`doit plan`: what a promotion would change, node by node and field by field, secrets redacted.

The plan renders in memory and decrypts in memory: it writes no file under rendered/, changes no
artefact and no ledger entry, and runs no encryption. Values under a sensitive key (and any value
that holds a secret of the bundle or a private key) are shown only as ``(secret)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import SECRETS_ARTEFACT, base_artefact, node_artefact
from pipeline.promote import bootstrap
from pipeline.promote.intent import describe_trigger, intent_inputs, is_current, load_node_patches, user_secret_values
from pipeline.promote.render import render_node
from pipeline.review.docdiff import Change, Redactor, added, diff_documents
from pipeline.review.verify import decrypt_many
from pipeline.sops.config import SOPS_CONFIG
from pipeline.state import ledger
from pipeline.talos.baseconfig import generate_base
from pipeline.talos.contracts import contract
from pipeline.talos.inventory import ROLES, Inventory, Node, load_inventory
from pipeline.talos.patching import apply_patches_traced
from pipeline.talos.validation import check_node_config, check_patches
from pipeline.talos.yaml import load_documents, load_one

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
    return [doc for doc in load_documents(text, "artefact") if doc is not None]


def _new_bases(inventory: Inventory, bundle: dict[str, Any], roles: list[str]) -> dict[str, list[Any]]:
    """Base configs bootstrap would regenerate (cluster settings changed), made in memory."""
    params = bootstrap.cluster_params(inventory)
    return {role: generate_base(role, bundle, params) for role in roles}


def _render(inventory: Inventory, node: Node, bases: dict[str, list[Any]]) -> list[Any]:
    if node.role not in bases:
        return render_node(inventory, node).documents
    # As render_node does it: strict decoding, the merge with provenance, Talos's types, schema and rules.
    patches = load_node_patches(inventory, node)
    version = contract(inventory.cluster.talos_version)
    check_patches(patches, version, ("strategic",))
    documents, provenance = apply_patches_traced(copy.deepcopy(bases[node.role]), patches)
    check_patches(patches, version, ("json6902",))
    return check_node_config(documents, node.name, version, provenance)


def make_plan(root: Path) -> Plan:
    """Decide, render and diff every node a promotion would redo; needs the key, writes nothing."""
    inventory = load_inventory(root)
    record = ledger.load_ledger(root)
    todo = bootstrap.missing(inventory)
    plan = Plan(nodes=[], up_to_date=[], total=len(inventory.nodes), bootstrap=todo)
    if SOPS_CONFIG in todo or SECRETS_ARTEFACT in todo:
        # Nothing to render against before bootstrap: every node would be made from scratch.
        plan.nodes = [NodePlan(node.name, node_artefact(inventory, node), "new", "bootstrap first")
                      for node in inventory.nodes.values()]
        return plan

    regenerated = [role for role in ROLES if base_artefact(role) in todo]
    pending = [node for node in inventory.nodes.values()
               if node.role in regenerated or not is_current(inventory, record, node)]
    if not pending:
        plan.up_to_date = list(inventory.nodes)  # decided from the ledger alone: nothing decrypted
        plan.nodes = _removed_nodes(inventory, record)
        return plan
    existing = [node_artefact(inventory, node) for node in pending if (root / node_artefact(inventory, node)).is_file()]
    plain = decrypt_many(root, [SECRETS_ARTEFACT, *existing])
    failed = next((text for text in plain.values() if isinstance(text, PipelineError)), None)
    if failed is not None:
        raise failed
    bundle = load_one(str(plain.pop(SECRETS_ARTEFACT)), SECRETS_ARTEFACT)
    plan.redactor = Redactor.from_bundle(bundle)
    plan.redactor.secrets |= user_secret_values(inventory)  # `secrets.` variables and encrypted patches
    bases: dict[str, list[Any]] = {}
    if regenerated:
        from pipeline.talos.secrets_bundle import validate_bundle  # cryptography: only when a base is regenerated

        validate_bundle(bundle, SECRETS_ARTEFACT)
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
            plan.nodes.append(NodePlan(node.name, artefact, "new", "new", list(added(documents, ()))))
            continue
        known = entry.get("artefact_sha256") == ledger.sha256_file(root / artefact)
        trigger = describe_trigger(entry, intent_inputs(inventory, node), known)
        if node.role in regenerated:
            trigger = "base config regenerated (cluster settings changed)"
        changes = diff_documents(_documents(str(plain[artefact])), documents)
        plan.nodes.append(NodePlan(node.name, artefact, "changed" if changes else "unchanged", trigger, changes))

    plan.nodes += _removed_nodes(inventory, record)
    return plan


def _removed_nodes(inventory: Inventory, record: ledger.Ledger) -> list[NodePlan]:
    out = []
    for name, entry in record.nodes.items():
        artefact = entry.get("artefact") if isinstance(entry, dict) else None
        if name not in inventory.nodes and artefact and (inventory.root / artefact).is_file():
            out.append(NodePlan(name, artefact, "removed", "no longer in cluster.yaml"))
    return out


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
