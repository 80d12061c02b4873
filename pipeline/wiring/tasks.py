"""The doit task graph: bootstrap -> render:<node> -> encrypt:<node> -> check -> stage.

Each task wraps plain functions from the stage modules. Up-to-dateness comes from the committed
ledger, never from rendered/ files or the local doit database, so a purge or a fresh clone
costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from functools import cache, wraps
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from pipeline.errors import PipelineError
from pipeline.guard import scan as guard
from pipeline.promote import bootstrap as bootstrap_stage
from pipeline.promote import encrypt as promotion
from pipeline.promote import render as rendering
from pipeline.promote.render import RENDERED_DIR
from pipeline.sops import runner as sops
from pipeline.state import lock as runlock
from pipeline.state import stamp
from pipeline.state.ledger import Ledger, load_ledger
from pipeline.talos.inventory import Inventory, load_inventory
from pipeline.wiring.report import PromotionReporter

DOIT_CONFIG: dict[str, Any] = {
    "default_tasks": ["promote"],
    # Also in pyproject.toml's [tool.doit]; repeated so a dodo.py without it behaves the same.
    "dep_file": ".doit.db",
    "check_file_uptodate": "md5",
    "action_string_formatting": "new",
    "reporter": PromotionReporter,
}

TaskDict = dict[str, Any]


def _root() -> Path:
    # doit runs from the folder of dodo.py: that is the repository.
    return Path.cwd()


@cache
def _inventory() -> Inventory | PipelineError:
    try:
        return load_inventory(_root())
    except PipelineError as error:
        return error


@cache
def _ledger() -> Ledger | PipelineError:
    try:
        return load_ledger(_root())
    except PipelineError as error:
        return error


_VERDICTS: dict[str, bool] = {}  # node -> current?, shared by its render and encrypt tasks


def _current(name: str, last_render: dict[str, Any] | None = None) -> bool:
    """Whether node ``name`` is current; ``last_render``: its render task's values from doit's database."""
    if name not in _VERDICTS:
        inventory, record = _inventory(), _ledger()
        if isinstance(inventory, PipelineError) or isinstance(record, PipelineError):
            return False
        _VERDICTS[name] = promotion.is_current(inventory, record, inventory.nodes[name], last_render)
    return _VERDICTS[name]


def _render_current(task: Any, values: dict[str, Any], name: str) -> bool:
    # doit hands an uptodate callable the task and the values its action returned last time.
    return _current(name, values)


def reset_caches() -> None:
    """Forget what this process knows about the repo (`doit watch` reloads the graph per rebuild)."""
    _run_lock.cache_clear()
    _quiet.cache_clear()
    _inventory.cache_clear()
    _ledger.cache_clear()
    _VERDICTS.clear()
    rendering.forget_file_cache()


# doit commands and tasks that never write: they must not wait for (or block) a promotion.
_READ_ONLY_COMMANDS = frozenset({"list", "help", "info", "dumpdb", "forget", "ignore", "clean", "strace",
                                 "tabcompletion", "reset-dep", "auto", "watch"})
_READ_ONLY_TASKS = frozenset({"check", "verify", "plan", "graph", "hooks", "keygen", "drill"})
_OPTIONS_WITH_VALUE = frozenset({"-n", "--process", "-r", "--reporter", "-f", "--file", "-d", "--dir",
                                 "--db-file", "--backend", "--check_file_uptodate", "-P", "--parallel-type",
                                 "-o", "--output-file", "-v", "--verbosity", "--codec-cls", "-s", "--single"})


def wants_run_lock(argv: list[str]) -> bool:
    """Whether this doit invocation may write (and so must hold the repository's run lock)."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and "=" not in arg:
            words.append(arg)
    if words and words[0] in _READ_ONLY_COMMANDS:
        return False
    if words and words[0] == "run":
        words = words[1:]
    if not words:
        return True  # the default task: promote
    return any(word.split(":", 1)[0] not in _READ_ONLY_TASKS for word in words)


def _invoked_by_doit() -> bool:
    program = sys.argv[0] if sys.argv else ""
    return Path(program).name == "doit" or program.endswith(os.path.join("doit", "__main__.py"))


@cache
def _run_lock() -> PipelineError | None:
    # Taken when dodo.py is imported: before doit opens its dependency database and before any
    # worker process is forked, so the lock covers every read and write of the run.
    if not _invoked_by_doit() or not wants_run_lock(sys.argv[1:]):
        return None
    try:
        runlock.acquire(_root())
    except PipelineError as error:
        return error
    # Ledger entries journaled by a run that was killed are merged first, so this run's checks
    # see them (each is merged only if its artefact is still the one it describes).
    with contextlib.suppress(PipelineError, OSError):
        promotion.flush_ledger(_root())
    return None


def _plain_doit() -> bool:
    """Whether this is `doit` with no task, option or variable: the default promotion, as is."""
    return _invoked_by_doit() and not sys.argv[1:]


@cache
def _quiet() -> list[str] | None:
    """The nodes, when a plain `doit` finds nothing changed since the last one succeeded (see stamp.py)."""
    if not _plain_doit() or _run_lock() is not None:
        return None
    return stamp.unchanged(_root())


def say(message: str) -> None:
    """A user-facing progress line (stderr: doit captures an action's stdout)."""
    print(message, file=sys.stderr, flush=True)


def _user_errors(func: Callable[..., Any], *, node_step: bool = False) -> Callable[..., Any]:
    """Turn bad input into a task failure (exit 1, one line) instead of a traceback (exit 2).

    A successful action returns a dict of values for the report (including sops runs). Any action
    but a node's render/encrypt (``node_step``) first writes the ledger entries encrypt deferred.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        runs = sops.runs_in_this_thread()
        try:
            if not node_step:
                promotion.flush_ledger(_root())
            result = func(*args, **kwargs)
        except PipelineError as error:
            return TaskFailed(str(error))
        except OSError as error:
            # The environment refused (read-only folder, full disk, HOME not writable): one line.
            return TaskFailed(_os_error_line(error))
        values = dict(result) if isinstance(result, dict) else {}
        values["sops_runs"] = sops.runs_in_this_thread() - runs
        return values

    return wrapper


def _os_error_line(error: OSError) -> str:
    name = error.filename
    if name:
        with contextlib.suppress(ValueError):
            name = Path(name).resolve().relative_to(_root().resolve()).as_posix()
        return f"{name}: {error.strerror or error}"
    return f"{error.strerror or error}"


def _broken(basename: str, error: PipelineError, doc: str) -> TaskDict:
    """A task that reports bad input (the graph cannot be built from a broken inventory)."""
    return {"basename": basename, "doc": doc, "actions": [lambda: TaskFailed(str(error))],
            "verbosity": 2}


def _needs_inventory(basename: str, doc: str) -> Inventory | TaskDict:
    busy = _run_lock()
    if busy is not None:
        return _broken(basename, busy, doc)
    inventory = _inventory()
    if isinstance(inventory, PipelineError):
        return _broken(basename, inventory, doc)
    return inventory


# --- the promotion path ---------------------------------------------------------------------


def task_bootstrap() -> TaskDict:
    """Make what is missing: age key, .sops.yaml, secrets bundle, base configs (never overwrites)."""
    doc = task_bootstrap.__doc__ or ""
    if _quiet() is not None:
        return {"actions": [], "doc": doc, "verbosity": 2}
    inventory = _needs_inventory("bootstrap", doc)
    if isinstance(inventory, dict):
        return inventory

    @_user_errors
    def run() -> dict[str, Any]:
        report = bootstrap_stage.bootstrap(inventory)
        reset_caches()  # base digests just changed
        lines = [f"bootstrap: made {path}" + (" (review it, then commit it)" if path == ".sops.yaml" else "")
                 for path in report.made]
        return {"lines": lines}

    def up_to_date() -> bool:
        try:
            return not bootstrap_stage.missing(inventory)
        except PipelineError:
            return False

    return {"actions": [run], "uptodate": [up_to_date], "doc": doc, "verbosity": 2}


def task_render() -> Iterator[TaskDict]:
    """Render a node: base(role) + shared, role and node patches -> rendered/ (plaintext, 0600)."""
    doc = task_render.__doc__ or ""
    if _quiet() is not None:
        yield {"basename": "render", "name": None, "doc": doc}
        return
    inventory = _needs_inventory("render", doc)
    if isinstance(inventory, dict):
        yield inventory
        return
    yield {"basename": "render", "name": None, "doc": doc}
    keep = promotion.keep_rendered()
    for node in inventory.nodes.values():
        stem = inventory.artefact_name(node)
        yield {
            "name": node.name,
            "doc": f"render {node.name} ({node.role}) to {RENDERED_DIR}/{stem}.yaml",
            # The values (digests of the sources and intent) let the next run's uptodate skip templating.
            "actions": [_user_errors(lambda node=node: promotion.render_values(inventory, node), node_step=True)],
            "task_dep": ["bootstrap"],
            "uptodate": [(_render_current, [], {"name": node.name})],
            # Teardown runs at the end of the run, even after a failure: plaintext never lingers.
            "teardown": [] if keep else [lambda stem=stem: promotion.purge_rendered(_root(), [stem])],
            "verbosity": 2,
        }


def task_encrypt() -> Iterator[TaskDict]:
    """Encrypt a node's rendered config with sops into encrypted/ (skipped if already current)."""
    doc = task_encrypt.__doc__ or ""
    if _quiet() is not None:
        yield {"basename": "encrypt", "name": None, "doc": doc}
        return
    inventory = _needs_inventory("encrypt", doc)
    if isinstance(inventory, dict):
        yield inventory
        return
    yield {"basename": "encrypt", "name": None, "doc": doc}
    for node in inventory.nodes.values():

        def run(node: Any = node) -> dict[str, Any]:
            # One ledger write per run, not per node (see promotion.flush_ledger).
            outcome = promotion.encrypt(inventory, node, defer_ledger=True)
            return {"rewritten": outcome.rewritten, "trigger": outcome.trigger}

        yield {
            "name": node.name,
            "doc": f"encrypt {node.name} to encrypted/{inventory.artefact_name(node)}.encrypted.yaml",
            "actions": [_user_errors(run, node_step=True)],
            "task_dep": [f"render:{node.name}"],
            "uptodate": [lambda name=node.name: _current(name)],
            # The deferred ledger entries reach the file at the end of the run, even after a failure.
            "teardown": [lambda: promotion.flush_ledger(_root())],
            "verbosity": 2,
        }


def task_stage() -> TaskDict:
    """git add the artefacts that changed and the ledger (the versioned-state stage)."""
    doc = task_stage.__doc__ or ""
    if _quiet() is not None:
        return {"actions": [], "doc": doc, "verbosity": 2}  # not selected by a plain `doit`
    inventory = _needs_inventory("stage", doc)
    if isinstance(inventory, dict):
        return inventory

    @_user_errors
    def run() -> dict[str, Any]:
        return {"lines": _stage_lines(inventory)}

    return {"actions": [run], "doc": doc, "verbosity": 2}


def task_promote() -> TaskDict:
    """Promote intent to versioned state: bootstrap, render, encrypt, check, stage, purge plaintext."""
    doc = task_promote.__doc__ or ""
    quiet = _quiet()
    if quiet is not None:
        # Nothing changed since the last plain `doit` succeeded: that verdict still stands.
        return {"actions": [lambda: {"up_to_date_nodes": quiet}], "task_dep": ["bootstrap", "render", "encrypt"],
                "doc": doc, "verbosity": 2}
    inventory = _needs_inventory("promote", doc)
    if isinstance(inventory, dict):
        return inventory
    keep = promotion.keep_rendered()

    @_user_errors
    def run() -> dict[str, Any]:
        # Judge only what changed since the pipeline last scanned it (`doit check` judges everything).
        _check_or_raise(trusted=_trusted_artefacts())
        lines = _stage_lines(inventory, stage=_staging())
        if _plain_doit():
            # Last, after staging: the git index is one of the files the stamp records.
            named = {source for node in inventory.nodes.values() for source in inventory.patches_for(node)}
            with contextlib.suppress(OSError):  # only a shortcut for the next run: never fail a promotion
                stamp.record(_root(), list(inventory.nodes), named)
        return {"lines": lines}

    return {
        "actions": [run],
        "task_dep": ["bootstrap", "render", "encrypt"],
        # Also clears plaintext a killed run left behind.
        "teardown": [] if keep else [lambda: promotion.purge_rendered(_root())],
        "doc": doc,
        "verbosity": 2,
    }


def _staging() -> bool:
    """Whether `promote` ends with git add: off with `doit stage=0` or PROMOTE_NO_STAGE=1 (`doit watch`'s default)."""
    from doit import get_var

    value = get_var("stage", None)
    if value is None:
        return os.environ.get("PROMOTE_NO_STAGE", "").lower() not in ("1", "true", "yes", "on")
    return str(value).lower() not in ("0", "false", "no", "off")


def _stage_lines(inventory: Inventory, stage: bool = True) -> list[str]:
    lines = [f"removed {path} (node no longer in cluster.yaml)" for path in promotion.prune_removed_nodes(inventory)]
    if not stage:
        return lines
    staged = promotion.stage(inventory)
    if staged is None:
        lines.append("stage: not a git repository, nothing staged")
    return lines


def _trusted_artefacts() -> dict[str, str]:
    """Artefact path -> SHA-256 the ledger records: bytes the pipeline scanned when it wrote (or kept) them."""
    try:
        record = load_ledger(_root())  # read again: this run's encrypt tasks have just updated it
    except PipelineError:
        return {}
    return {entry["artefact"]: entry["artefact_sha256"] for entry in record.nodes.values()
            if isinstance(entry, dict) and isinstance(entry.get("artefact"), str)
            and isinstance(entry.get("artefact_sha256"), str)}


def _check_or_raise(trusted: dict[str, str] | None = None) -> None:
    findings = guard.check(_root(), trusted=trusted)
    if findings:
        more = f" (+{len(findings) - 20} more)" if len(findings) > 20 else ""
        raise PipelineError("; ".join(findings[:20]) + more)


_run_lock()
