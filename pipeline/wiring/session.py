"""Per-run state: everything one doit run knows about the repository, in one object with one reset.

doit imports dodo.py once per process but `doit watch` runs the graph many times in it; the
inventory, the ledger and each node's verdict belong to one run. The run entry (``entry.py``)
begins a session before doit opens its database; task creators and actions read it.
Pure, content-keyed memos (parsed patches, decrypted bases keyed by digest) stay in their modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doit import get_var

from pipeline.errors import PipelineError
from pipeline.promote import intent
from pipeline.state.ledger import Ledger, load_ledger
from pipeline.talos.inventory import Inventory, load_inventory

_TRUE = ("1", "true", "yes", "on")


def _flag(variable: str, environment: str, default: bool) -> bool:
    """A `doit NAME=1` command-line variable, else an environment variable, else ``default``."""
    value = get_var_or_none(variable)
    if value is None:
        value = os.environ.get(environment)
    if value is None or value == "":
        return default
    return str(value).strip().lower() in _TRUE


@dataclass
class Session:
    """One run: the repository, what the entry decided (lock, stamp) and what the run has parsed."""

    root: Path
    plain: bool = False  # `doit` with no task, option or variable: the stamp may answer
    writes: bool = False  # the run holds the repository's run lock
    quiet: list[str] | None = None  # the stamp's verdict: nothing changed since the last plain `doit`
    entered: bool = False  # begun by the run entry (not a default made for `doit list` and the like)
    verdicts: dict[str, bool] = field(default_factory=dict)  # node -> current?, shared by render and encrypt
    _inventory: Inventory | PipelineError | None = None
    _ledger: Ledger | PipelineError | None = None

    def inventory(self) -> Inventory | PipelineError:
        """cluster.yaml, parsed once per run (bad input is kept, to be reported by a task)."""
        if self._inventory is None:
            try:
                self._inventory = load_inventory(self.root)
            except PipelineError as error:
                self._inventory = error
        return self._inventory

    def ledger(self) -> Ledger | PipelineError:
        """encrypted/ledger.json as the run found it."""
        if self._ledger is None:
            try:
                self._ledger = load_ledger(self.root)
            except PipelineError as error:
                self._ledger = error
        return self._ledger

    def current(self, name: str, last_render: dict[str, Any] | None = None) -> bool:
        """Whether node ``name`` is current (ledger only); ``last_render``: its render task's saved values."""
        if name not in self.verdicts:
            inventory, record = self.inventory(), self.ledger()
            if isinstance(inventory, PipelineError) or isinstance(record, PipelineError):
                return False
            self.verdicts[name] = intent.is_current(inventory, record, inventory.nodes[name], last_render)
        return self.verdicts[name]

    def forget_parsed(self) -> None:
        """Drop the inventory, ledger and verdicts (bootstrap just made the base configs)."""
        self._inventory = self._ledger = None
        self.verdicts.clear()
        intent.forget_file_cache()

    @property
    def keep(self) -> bool:
        """Keep the plaintext under rendered/ after the run: `doit keep=1` or PROMOTE_KEEP=1."""
        return _flag("keep", "PROMOTE_KEEP", False)

    @property
    def stage(self) -> bool:
        """End a promotion with git add: off with `doit stage=0` or PROMOTE_NO_STAGE=1 (watch's default)."""
        value = get_var_or_none("stage")
        if value is None:
            return os.environ.get("PROMOTE_NO_STAGE", "").strip().lower() not in _TRUE
        return str(value).strip().lower() not in ("0", "false", "no", "off")


def get_var_or_none(name: str) -> str | None:
    """A doit command-line variable (`doit keep=1`), or None."""
    return get_var(name, None)


_SESSION: Session | None = None


def current() -> Session:
    """This run's session; a default one (no lock, no stamp) when doit was not started through the entry."""
    global _SESSION
    if _SESSION is None or _SESSION.root != Path.cwd():
        _SESSION = Session(Path.cwd())
    return _SESSION


def begin(root: Path, *, plain: bool = False, writes: bool = False) -> Session:
    """Start a new run: forget everything the previous one knew."""
    global _SESSION
    intent.forget_file_cache()
    _SESSION = Session(root, plain=plain, writes=writes, entered=True)
    return _SESSION
