"""The doit task graph: bootstrap -> preflight -> render:<node> -> encrypt:<node> -> promote (check, stage).

Each task wraps plain functions from the stage packages through the one action wrapper. Up-to-dateness
comes from the committed ledger, never from rendered/ files or the local doit database, so a purge
or a fresh clone costs nothing. Per-run state lives in the session (``session.py``), set up by the
run entry (``entry.py``) before doit opens its database; importing this module does nothing.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from pipeline.errors import PipelineError
from pipeline.guard import scan as guard
from pipeline.layout import RENDERED_DIR
from pipeline.promote import bootstrap as bootstrap_stage
from pipeline.promote import encrypt as encrypting
from pipeline.promote import intent
from pipeline.promote import render as rendering
from pipeline.promote import stage as staging
from pipeline.state import stamp
from pipeline.state.ledger import load_ledger
from pipeline.talos.inventory import Inventory
from pipeline.wiring import session as sessions
from pipeline.wiring.action import TaskDict, action, failing
from pipeline.wiring.report import PromotionReporter

DOIT_CONFIG: dict[str, Any] = {
    "default_tasks": ["promote"],
    # Also in pyproject.toml's [tool.doit]; repeated so a dodo.py without it behaves the same.
    "dep_file": ".doit.db",
    "check_file_uptodate": "md5",
    "action_string_formatting": "new",
    "reporter": PromotionReporter,
}


# What a repository made from an earlier version lacks: doit then runs its stock `run` command,
# without the run lock. A writing task refuses rather than promote unguarded.
NO_ENTRY = PipelineError("doit ran without talos-promote's run entry: add `run = \"pipeline.wiring.entry:"
                          "PromotionRun\"` under [tool.doit.plugins.command] (see this project's pyproject.toml)",
                          path="pyproject.toml")


def _needs_inventory(basename: str, doc: str) -> Inventory | TaskDict:
    session = sessions.current()
    if not session.entered:
        return failing(basename, NO_ENTRY, doc)
    inventory = session.inventory()
    if isinstance(inventory, PipelineError):
        return failing(basename, inventory, doc)
    return inventory


def _render_current(task: Any, values: dict[str, Any], name: str) -> bool:
    # doit hands an uptodate callable the task and the values its action returned last time.
    return sessions.current().current(name, values)


def _encrypt_current(task: Any, values: dict[str, Any], name: str) -> bool:
    return sessions.current().current(name)


# doit asks inspect.signature() of every uptodate callable of every task on every run (a fleet has a
# thousand): given here once, it is found at once.
for _check in (_render_current, _encrypt_current):
    _check.__signature__ = inspect.signature(_check)  # type: ignore[attr-defined]


# --- the promotion path ---------------------------------------------------------------------


def task_bootstrap() -> TaskDict:
    """Make what is missing: age key, .sops.yaml, secrets bundle, base configs (never overwrites)."""
    doc = task_bootstrap.__doc__ or ""
    if sessions.current().quiet is not None:
        return {"actions": [], "doc": doc, "verbosity": 2}
    inventory = _needs_inventory("bootstrap", doc)
    if isinstance(inventory, dict):
        return inventory

    def run(new_cluster: bool = False) -> dict[str, Any]:
        report = bootstrap_stage.bootstrap(inventory, new_cluster=new_cluster)
        sessions.current().forget_parsed()  # base digests just changed
        lines = [f"bootstrap: made {path}" + (" (review it, then commit it)" if path == ".sops.yaml" else "")
                 for path in report.made]
        return {"lines": lines}

    def up_to_date(task: Any, values: dict[str, Any]) -> bool:
        if (task.options or {}).get("new_cluster"):
            return False  # asked for explicitly: the action says yes or why not
        try:
            return not bootstrap_stage.missing(inventory)
        except PipelineError:
            return False

    return {"actions": [action(run, writes=True)], "uptodate": [up_to_date], "doc": doc, "verbosity": 2,
            # The one way to a new secrets bundle (a new cluster identity); never implied by a missing file.
            "params": [{"name": "new_cluster", "long": "new-cluster", "type": bool, "default": False,
                        "help": "generate a NEW cluster identity (secrets bundle, base configs) where none is"}]}


def task_preflight() -> TaskDict:
    """The guard before the work: the recorded secrets bundle, a .sops.yaml that parses, a rule per artefact."""
    doc = task_preflight.__doc__ or ""
    if sessions.current().quiet is not None:
        return {"actions": [], "doc": doc, "verbosity": 2}
    inventory = _needs_inventory("preflight", doc)
    if isinstance(inventory, dict):
        return inventory

    def run() -> None:
        findings = guard.before_promotion(inventory)
        if findings:
            more = f" (+{len(findings) - 5} more)" if len(findings) > 5 else ""
            raise PipelineError("; ".join(findings[:5]) + more)
        if intent.refresh_secret_digests(inventory):  # your own secrets changed: ledger digests first
            sessions.current().forget_parsed()

    return {"actions": [action(run)], "task_dep": ["bootstrap"], "doc": doc, "verbosity": 2}


def task_render() -> Iterator[TaskDict]:
    """Render a node: base(role) + shared, role and node patches -> rendered/ (plaintext, 0600)."""
    doc = task_render.__doc__ or ""
    session = sessions.current()
    if session.quiet is not None:
        yield {"basename": "render", "name": None, "doc": doc}
        return
    inventory = _needs_inventory("render", doc)
    if isinstance(inventory, dict):
        yield inventory
        return
    yield {"basename": "render", "name": None, "doc": doc}
    # One action for every node, given the node's name: one wrapper (and one signature) for the fleet.
    # The plaintext reaches rendered/ only when asked to stay there (`doit keep=1`): otherwise the
    # run removes it at its end, and encrypt takes it from memory.
    to_disk = session.keep
    render_one = action(lambda name: rendering.render_values(inventory, inventory.nodes[name], to_disk=to_disk))
    for node in inventory.nodes.values():
        stem = inventory.artefact_name(node)
        yield {
            "name": node.name,
            "doc": f"render {node.name} ({node.role}) to {RENDERED_DIR}/{stem}.yaml",
            # The values (digests of the sources and intent) let the next run's uptodate skip templating.
            "actions": [(render_one, [], {"name": node.name})],
            "task_dep": ["preflight"],
            "uptodate": [(_render_current, [], {"name": node.name})],
            # No per-node teardown: under `-n N` doit runs a worker's teardowns when that worker runs
            # out of work, while another may still be encrypting this node's plaintext (a failure
            # elsewhere then failed healthy nodes). The run entry purges rendered/ once every worker
            # has finished, failure or not (pipeline/wiring/entry.py).
            "verbosity": 2,
        }


def task_encrypt() -> Iterator[TaskDict]:
    """Encrypt a node's rendered config with sops into encrypted/ (skipped if already current)."""
    doc = task_encrypt.__doc__ or ""
    if sessions.current().quiet is not None:
        yield {"basename": "encrypt", "name": None, "doc": doc}
        return
    inventory = _needs_inventory("encrypt", doc)
    if isinstance(inventory, dict):
        yield inventory
        return
    yield {"basename": "encrypt", "name": None, "doc": doc}

    def run(name: str) -> dict[str, Any]:
        # One ledger write per run, not per node (see state/journal.py).
        outcome = encrypting.encrypt(inventory, inventory.nodes[name], defer_ledger=True)
        return {"rewritten": outcome.rewritten, "trigger": outcome.trigger, "case": outcome.case,
                "fallback": outcome.fallback}

    encrypt_one = action(run)
    for node in inventory.nodes.values():
        yield {
            "name": node.name,
            "doc": f"encrypt {node.name} to encrypted/{inventory.artefact_name(node)}.encrypted.yaml",
            "actions": [(encrypt_one, [], {"name": node.name})],
            "task_dep": [f"render:{node.name}"],
            "uptodate": [(_encrypt_current, [], {"name": node.name})],
            # The journaled ledger entries reach the file at the end of the run, even after a failure:
            # the run entry merges them once every worker is done (no teardown, see task_render).
            "verbosity": 2,
        }


def task_stage() -> TaskDict:
    """git add the artefacts that changed and the ledger (the versioned-state stage), after the guard passed."""
    doc = task_stage.__doc__ or ""
    if sessions.current().quiet is not None:
        return {"actions": [], "doc": doc, "verbosity": 2}  # not selected by a plain `doit`
    inventory = _needs_inventory("stage", doc)
    if isinstance(inventory, dict):
        return inventory

    def run() -> dict[str, Any]:
        _check_or_raise(inventory)
        return {"lines": _stage_lines(inventory)}

    return {"actions": [action(run, writes=True)], "doc": doc, "verbosity": 2}


def task_promote() -> TaskDict:
    """Promote intent to versioned state: bootstrap, render, encrypt, check, stage, purge plaintext."""
    doc = task_promote.__doc__ or ""
    session = sessions.current()
    quiet = session.quiet
    if quiet is not None:
        # Nothing changed since the last plain `doit` succeeded: that verdict still stands.
        return {"actions": [lambda: {"up_to_date_nodes": quiet}], "task_dep": ["bootstrap", "render", "encrypt"],
                "doc": doc, "verbosity": 2}
    inventory = _needs_inventory("promote", doc)
    if isinstance(inventory, dict):
        return inventory
    stage = session.stage

    def run() -> dict[str, Any]:
        # Judge only what changed since the pipeline last scanned it (`doit check` judges everything).
        _check_or_raise(inventory, trusted=_trusted_artefacts(inventory))
        lines = _stage_lines(inventory, stage=stage)
        lines += guard.notes(inventory.root)
        if session.plain:
            # Last, after staging: the git index is one of the files the stamp records.
            named = {source for node in inventory.nodes.values() for source in inventory.patches_for(node)}
            with contextlib.suppress(OSError):  # only a shortcut for the next run: never fail a promotion
                stamp.record(inventory.root, list(inventory.nodes), named)
        return {"lines": lines}

    return {
        "actions": [action(run, writes=True)],
        "task_dep": ["bootstrap", "render", "encrypt"],
        # Plaintext (also a killed run's) is purged by the run entry after the run, not by a teardown:
        # under `-n N` a worker with nothing left to do ran every teardown, while promote's own
        # ledger merge or another worker's encrypt was still under way.
        "doc": doc,
        "verbosity": 2,
    }


def _stage_lines(inventory: Inventory, stage: bool = True) -> list[str]:
    lines = [f"removed {path} (node no longer in cluster.yaml)" for path in staging.prune_removed_nodes(inventory)]
    if not stage:
        return lines
    staged = staging.stage(inventory)
    if staged is None:
        lines.append("stage: not a git repository, nothing staged")
    return lines


def _trusted_artefacts(inventory: Inventory) -> dict[str, str]:
    """Artefact path -> SHA-256 the ledger records: bytes the pipeline scanned when it wrote (or kept) them."""
    try:
        record = load_ledger(inventory.root)  # read again: this run's encrypt tasks have just updated it
    except PipelineError:
        return {}
    return {entry["artefact"]: entry["artefact_sha256"] for entry in record.nodes.values()
            if isinstance(entry, dict) and isinstance(entry.get("artefact"), str)
            and isinstance(entry.get("artefact_sha256"), str)}


def _check_or_raise(inventory: Inventory, trusted: dict[str, str] | None = None) -> None:
    findings = guard.check(inventory.root, trusted=trusted)
    if findings:
        more = f" (+{len(findings) - 20} more)" if len(findings) > 20 else ""
        raise PipelineError("; ".join(findings[:20]) + more)
