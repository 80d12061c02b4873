"""Rekey: re-wrap every artefact's data key for the recipients its creation rule names (sops updatekeys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.keys.recipients import _explained, describe_keys, recipient_names, target_config
from pipeline.keys.rewrite import (
    Emit,
    _check_result,
    _documents,
    _identities_or_fail,
    _quiet,
    _replace,
    _scratch,
    artefacts,
)
from pipeline.sops import metadata
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, SopsConfig
from pipeline.state import ledger
from pipeline.state.ledger import sha256_bytes
from pipeline.talos.inventory import Inventory


@dataclass
class RekeyPlan:
    """What `doit rekey` would do: the rules, a new `.sops.yaml` if any, and the artefacts to re-wrap."""

    config: SopsConfig
    new_config_text: str | None
    todo: list[tuple[str, tuple[str, ...], tuple[str, ...]]]  # (artefact, has, wants)
    notes: list[str] = field(default_factory=list)


@dataclass
class RekeyReport:
    """What `doit rekey` did."""

    config_written: bool = False
    rekeyed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_rekey(inventory: Inventory) -> RekeyPlan:
    """Compare every artefact's recipients with its creation rule's (keyless, runs no sops)."""
    root = inventory.root
    config, new_text, notes = target_config(inventory)
    todo = []
    for artefact in artefacts(root):
        rule = config.rule_for(artefact)
        if rule is None:
            raise PipelineError("no .sops.yaml creation rule matches this artefact path", path=artefact)
        has = metadata.artefact_recipients((root / artefact).read_text(encoding="utf-8"))
        wants = tuple(sorted(rule.recipients))
        if not wants:
            raise PipelineError("its creation rule names no age recipient", path=artefact)
        if has != wants:
            todo.append((artefact, has, wants))
    return RekeyPlan(config, new_text, todo, notes)


def rekey(inventory: Inventory, emit: Emit = _quiet) -> RekeyReport:
    """Make every artefact's recipients those of its creation rule (`sops updatekeys`), atomically.

    A generated `.sops.yaml` is regenerated from ``recipients:`` first. Nothing to do runs no sops.
    Refuses, before changing anything, when no identity here can open a file that needs re-wrapping,
    or when the new recipients would lock out every identity here (the usual typo).
    """
    root = inventory.root
    plan = plan_rekey(inventory)
    report = RekeyReport(notes=list(plan.notes))
    if plan.new_config_text is None and not plan.todo:
        return report
    names = recipient_names(inventory)
    search = _identities_or_fail([(a, has) for a, has, _ in plan.todo], names, "rekey")
    if not search.external:
        for artefact, _, wants in plan.todo:
            if not set(wants) & set(search.public_keys):
                raise PipelineError(
                    f"refusing to rekey: the new recipients ({describe_keys(wants, names)}) include none of "
                    f"the identities here ({', '.join(search.public_keys)}): you would lock yourself out. "
                    "Run it with a key that stays a recipient (SOPS_AGE_KEY_FILE=...)", path=artefact)
    if plan.new_config_text is not None:
        ledger.atomic_write(root / SOPS_CONFIG, plan.new_config_text.encode())
        report.config_written = True
        emit(f"rekey: {SOPS_CONFIG} regenerated for {describe_keys(plan.config.recipients(), names)}")
    config_text = plan.new_config_text or plan.config.text
    errors: list[PipelineError] = []
    with _scratch("rekey") as scratch:
        (scratch / SOPS_CONFIG).write_text(config_text, encoding="utf-8")
        for artefact, has, wants in plan.todo:
            try:
                _rekey_one(root, scratch, artefact, wants, names)
            except PipelineError as error:
                errors.append(error)
                emit(f"rekey: FAILED {error}")
                continue
            report.rekeyed.append(artefact)
            added = [key for key in wants if key not in has]
            removed = [key for key in has if key not in wants]
            change = "; ".join(part for part in (
                f"+{describe_keys(added, names)}" if added else "",
                f"-{describe_keys(removed, names)}" if removed else "") if part)
            emit(f"rekey: {artefact}: {change}")
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PipelineError(f"{errors[0]}{more}; the other artefacts were rekeyed, run doit rekey again")
    return report


def _scratch_copy(root: Path, scratch: Path, artefact: str) -> tuple[bytes, Path]:
    """Copy ``artefact`` (ciphertext only) to the same relative path under ``scratch``; (its bytes, the copy)."""
    data = (root / artefact).read_bytes()
    copy = scratch / artefact
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(data)
    return data, copy


def _rekey_one(root: Path, scratch: Path, artefact: str, wants: tuple[str, ...], names: dict[str, str]) -> None:
    data, copy = _scratch_copy(root, scratch, artefact)
    before = data.decode()
    # `sops updatekeys` rewrites its file in place and has no --filename-override: it runs on a copy
    # at the same path relative to a copy of .sops.yaml, so the same creation rule applies.
    try:
        sops.run_sops(["--config", str(scratch / SOPS_CONFIG), "updatekeys", "--yes", artefact], scratch, artefact)
        after = copy.read_text(encoding="utf-8")
        _check_result(artefact, after, wants)
        if not _same_payload(before, after):
            raise PipelineError("sops updatekeys changed the encrypted content, artefact left as it was",
                                path=artefact)
        sops.decrypt(artefact, scratch)  # the re-wrapped data key still opens it (MAC checked)
    except PipelineError as error:
        raise _explained(error, before, names) from None
    _replace(root, artefact, sha256_bytes(data), after.encode())


def _same_payload(before: str, after: str) -> bool:
    """Same ENC[] values and MAC: only the wrapping of the data key changed."""
    def payload(text: str) -> list[Any]:
        out = []
        for doc in _documents(text):
            if isinstance(doc, dict):
                meta = doc.get("sops") or {}
                out.append(({k: v for k, v in doc.items() if k != "sops"}, meta.get("mac")))
            else:
                out.append(doc)
        return out
    return payload(before) == payload(after)
