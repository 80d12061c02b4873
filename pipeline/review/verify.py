"""`doit verify`: with a key, prove every artefact opens (MAC intact) and holds what intent renders today.

Every artefact is decrypted (sops checks each MAC), every node is re-rendered from intent, and the
two are compared as parsed documents. Findings name the file or the node and the dotted paths that
differ; no value is ever printed. Plaintext stays in memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.guard import scan as guard
from pipeline.layout import ENCRYPTED_DIR, node_artefact
from pipeline.promote.render import render_node
from pipeline.review.docdiff import Change, diff_documents
from pipeline.sops import identities as keys
from pipeline.sops import runner as sops
from pipeline.state import ledger
from pipeline.talos.inventory import load_inventory
from pipeline.talos.yaml import load_documents

PATHS_SHOWN = 8


@dataclass
class Verification:
    """What `verify` found: one line per problem, and what it proved."""

    findings: list[str] = field(default_factory=list)
    decrypted: int = 0
    nodes_ok: int = 0
    nodes: int = 0

    def summary(self) -> str:
        """The closing line of a successful run."""
        return (f"verify: {self.decrypted} artefacts decrypt with their MACs intact; "
                f"{self.nodes_ok} of {self.nodes} nodes match what their intent renders today")


def require_identity() -> None:
    """A clear one-line error when no age identity is available at all."""
    search = keys.find_identities()
    if not search.public_keys and not search.external:
        raise PipelineError(f"this needs an age key and none was found (looked at {', '.join(search.looked_at)}); "
                            "set SOPS_AGE_KEY or SOPS_AGE_KEY_FILE")


def decrypt_many(root: Path, artefacts: list[str]) -> dict[str, str | PipelineError]:
    """Decrypt artefacts in parallel (plaintext stays in memory); each result is text or its error."""

    def one(rel: str) -> tuple[str | PipelineError, int]:
        before = sops.runs_in_this_thread()
        try:
            text: str | PipelineError = sops.decrypt(rel, root)
        except PipelineError as error:
            text = error
        return text, sops.runs_in_this_thread() - before

    if not artefacts:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(artefacts))) as pool:
        results = list(pool.map(one, artefacts))
    sops.credit_runs(sum(runs for _text, runs in results))  # the report counts them for this action
    return {rel: text for rel, (text, _runs) in zip(artefacts, results, strict=True)}


def _paths(changes: list[Change], limit: int = PATHS_SHOWN) -> str:
    names = list(dict.fromkeys(change.dotted or "(document)" for change in changes))
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def verify(root: Path) -> Verification:
    """Decrypt every artefact, re-render every node, compare; never prints a value."""
    require_identity()
    inventory = load_inventory(root)
    record = ledger.load_ledger(root)
    result = Verification(nodes=len(inventory.nodes))
    files = guard.artefact_files(root)
    plain = decrypt_many(root, files)
    for text in plain.values():
        if isinstance(text, PipelineError):
            result.findings.append(str(text))
        else:
            result.decrypted += 1

    for node in inventory.nodes.values():
        artefact = node_artefact(inventory, node)
        text = plain.get(artefact)
        if text is None:
            result.findings.append(f"node {node.name}: no artefact ({artefact}): run doit to promote it")
            continue
        if isinstance(text, PipelineError):
            continue  # already named above
        try:
            rendered = render_node(inventory, node).documents
            # Read as Talos and sops read it (go-yaml v3): `0o644` is 420 on both sides.
            stored = [doc for doc in load_documents(text, artefact) if doc is not None]
        except PipelineError as error:
            result.findings.append(str(error))  # e.g. a tampered base: the same line for every node
            continue
        changes = diff_documents(stored, rendered)
        if changes:
            result.findings.append(f"node {node.name}: {artefact} differs from what its intent renders today at "
                                   f"{_paths(changes)}: run doit to promote it")
        else:
            result.nodes_ok += 1

    known = {node_artefact(inventory, node) for node in inventory.nodes.values()}
    prefix = f"{ENCRYPTED_DIR}/{inventory.cluster.name}-"
    for rel in files:
        if rel.startswith(prefix) and rel.endswith(".encrypted.yaml") and rel not in known:
            name = rel[len(prefix):-len(".encrypted.yaml")]
            hint = "run doit to remove it" if name in record.nodes else "git rm it, or add the node back"
            result.findings.append(f"node {name}: not in cluster.yaml, but {rel} exists: {hint}")
    result.findings = list(dict.fromkeys(result.findings))
    return result
