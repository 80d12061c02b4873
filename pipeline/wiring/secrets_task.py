"""`doit secrets set NAME | list | edit`: the encrypted template variables (encrypted/vars.encrypted.yaml).

A value is read from standard input (without echo on a terminal), never from the command line, and
goes to sops on a pipe: no plaintext file, no value in any output. The logic is in
``pipeline.promote.secrets``; here bad input becomes a one-line task failure (exit 1).
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import VARS_ARTEFACT
from pipeline.promote import intent, secrets
from pipeline.promote import stage as staging
from pipeline.sops import runner as sops
from pipeline.talos.inventory import Inventory, load_inventory
from pipeline.wiring import session as sessions
from pipeline.wiring.action import Lines, TaskDict, action
from pipeline.wiring.tasks import NO_ENTRY

USAGE = "usage: doit secrets set NAME (value on stdin) | doit secrets list | doit secrets edit"


def _inventory() -> Inventory:
    if not sessions.current().entered:
        raise NO_ENTRY
    return load_inventory(sessions.current().root)


def _read_value(name: str) -> str:
    """The value: typed without echo on a terminal, else the first line of standard input."""
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return getpass.getpass(f"value for secrets.{name} (not echoed): ")
        except EOFError:
            return ""
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line[:-1] if line.endswith("\n") else line


def _after_change(inventory: Inventory, emit: Lines) -> None:
    # The ledger learns the new keyed digests now, so `doit check` names exactly the nodes to promote.
    intent.refresh_secret_digests(inventory)
    if staging.stage(inventory) is None:
        emit("stage: not a git repository, nothing staged")


def secrets_action(pos: list[str], emit: Lines) -> dict[str, Any]:
    """The `secrets` action: set NAME, list, or edit."""
    verb, *rest = pos or ["list"]
    root = sessions.current().root
    if verb == "list" and not rest:
        names = secrets.vars_names(root)
        for name in names:
            emit(name)
        if not names:
            emit(f"no secret variables yet ({VARS_ARTEFACT}): doit secrets set NAME")
        return {}
    if verb == "set" and len(rest) == 1:
        name = rest[0]
        if not secrets.NAME.match(name):
            raise PipelineError(f"secret name {name[:40]!r}: letters, digits and _ only, not starting with a digit")
        inventory = _inventory()
        changed = secrets.set_secret(root, name, _read_value(name))
        if changed:
            _after_change(inventory, emit)
        emit(f"secrets: {name} set in {VARS_ARTEFACT}" if changed else f"secrets: {name} unchanged")
        emit(f"use it in a patch as {{{{ secrets.{name} }}}}, then run doit")
        return {}
    if verb == "edit" and not rest:
        inventory = _inventory()
        if sys.stdin is None or not sys.stdin.isatty() or not sys.stdout.isatty():
            raise PipelineError("doit secrets edit opens your editor through sops and needs a terminal; "
                                "without one use: doit secrets set NAME (value on stdin)")
        before = (root / VARS_ARTEFACT).read_bytes() if (root / VARS_ARTEFACT).is_file() else None
        if before is None:
            secrets.write_vars(root, {})  # sops edit of a new file would start from its own sample
        result = subprocess.run([sops.sops_binary(), "edit", VARS_ARTEFACT], cwd=root, check=False,
                                env={**sops.CHILD_ENV, **os.environ})
        if result.returncode not in (0, 200):  # 200: sops saw no change
            raise PipelineError(f"sops edit failed (exit {result.returncode}); the file is as it was",
                                path=VARS_ARTEFACT)
        secrets.after_edit(root)
        _after_change(inventory, emit)
        emit(f"secrets: {len(secrets.vars_names(root))} variable(s) in {VARS_ARTEFACT}")
        return {}
    raise PipelineError(USAGE)


def task_secrets() -> TaskDict:
    """Your secret template variables: doit secrets set NAME (value on stdin) | list | edit (sops edit)."""
    return {
        "actions": [action(_secrets, writes=True)],
        "pos_arg": "pos",
        "doc": task_secrets.__doc__,
        "verbosity": 2,
    }


def _secrets(pos: list[str], emit: Lines) -> dict[str, Any]:
    return secrets_action(pos, emit)
