"""`doit watch`: re-promote on every save of the cluster's intent, and never fall over.

A doit command plugin (pyproject.toml, ``[tool.doit.plugins.command] watch``). watchdog observes
the inputs of the task graph (patches/, cluster.yaml, .sops.yaml, the base artefacts in
encrypted/); a burst of editor events is debounced into one rebuild; each rebuild runs the same
incremental graph as `doit`, in this process, so the dodo module, compiled templates and the
decrypted base configs stay loaded and a saved patch costs one sops run.

What the pipeline itself writes (rendered/, node artefacts, the ledger, temp files, the doit
database, the lock) is never an input, and watchdog's read events (`opened`, `closed_no_write`)
are ignored, so a build never triggers another build.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from doit import doit_cmd
from doit.cmd_base import DoitCmdBase, ModuleTaskLoader
from doit.cmdparse import CmdParseError
from doit.control import TaskControl
from doit.exceptions import InvalidCommand, InvalidDodoFile, InvalidTask
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from pipeline.errors import PipelineError
from pipeline.layout import ENCRYPTED_DIR, SECRETS_ARTEFACT, TALOSCONFIG_ARTEFACT, VARS_ARTEFACT, base_artefact
from pipeline.promote import stage as staging
from pipeline.sops.config import SOPS_CONFIG
from pipeline.talos.inventory import INVENTORY_FILE, PATCH_DIR, ROLES, load_inventory
from pipeline.wiring import session as sessions
from pipeline.wiring.action import redacted
from pipeline.wiring.entry import PromotionRun

# Only changes count: watchdog 7 also reports `opened` and `closed_no_write` for a plain read.
TRIGGERING_EVENTS = frozenset({"created", "modified", "moved", "deleted"})
BASE_ARTEFACTS = (SECRETS_ARTEFACT, *(base_artefact(role) for role in ROLES), TALOSCONFIG_ARTEFACT, VARS_ARTEFACT)
ROOT_INPUTS = (INVENTORY_FILE, SOPS_CONFIG)
# Filtered where the events are made too, when this watchdog can (fewer wake-ups on our own reads).
_EVENT_FILTER: list[type[FileSystemEvent]] | None = (
    [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, DirCreatedEvent, DirMovedEvent,
     DirDeletedEvent]
    if "event_filter" in inspect.signature(BaseObserver.schedule).parameters else None
)
# What bootstrap creates when missing: the build's own creation of one is not a change of intent.
BOOTSTRAP_OUTPUTS = (SOPS_CONFIG, *BASE_ARTEFACTS)
WATCHED_DIRS = {PATCH_DIR: True, ENCRYPTED_DIR: False}  # folder -> recursive

DEFAULT_DEBOUNCE_MS = 150
MAX_DELAY = 2.0  # a file written without pause still gets a rebuild this often
GRACE = 1.0  # a stop signal lets a running build finish for this long, then interrupts it
POLL = 0.05

# Editor droppings: swap, backup, lock and temp files (vim, emacs, gedit, kate, JetBrains, ours).
_EDITOR_NOISE = re.compile(
    r"""^\.\#            # emacs lock
      | ^\#.*\#$         # emacs auto-save
      | ~$               # backups (vim, emacs)
      | \.sw[a-z]$       # vim swap files (.swp, .swo, ..., .swx)
      | ^\d+$            # vim's write test (4913, 5036, ...)
      | \.tmp$           # temp files, ours are .NAME.PID.tmp
      | ^\.goutputstream-
      | \.kate-swp$
      | ___jb_(tmp|old)___$
    """,
    re.VERBOSE,
)


def is_editor_noise(name: str) -> bool:
    """Whether a file name is an editor's swap, backup, lock or temp file rather than a patch."""
    return bool(_EDITOR_NOISE.search(name))


def is_input(relpath: str) -> bool:
    """Whether a repo-relative path (posix) is an input of the task graph that a save should rebuild.

    Inputs: cluster.yaml, .sops.yaml, everything under patches/ except editor noise, and the base
    artefacts. Never: rendered/, node artefacts, the ledger, the doit database, the lock.
    """
    if relpath in ROOT_INPUTS or relpath in BASE_ARTEFACTS:
        return True
    parts = relpath.split("/")
    return parts[0] == PATCH_DIR and not any(is_editor_noise(part) for part in parts[1:])


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _say(line: str) -> None:
    # The run's one redaction boundary; a failure may quote anything, so it is checked against every secret.
    print(redacted(line, full="failed" in line), file=sys.stdout, flush=True)


def describe(paths: Iterable[str], limit: int = 3) -> str:
    """A short list of changed paths for the rebuild line."""
    names = sorted(set(paths))
    more = f", +{len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _Interrupted(BaseException):
    """Raised in the main thread to cut a build short on a stop signal (not an Exception: doit lets it through)."""


class IntentChanges(FileSystemEventHandler):
    """Collects changed inputs from watchdog's thread; the main thread waits, debounces and takes them."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = str(root)
        self._lock = threading.Lock()
        self._pending: dict[str, bool] = {}  # changed inputs (in order) -> born in this batch
        self._first = 0.0
        self._last = 0.0
        self._lost: set[str] = set()  # watched folders that were deleted or moved away
        self.arrived = threading.Event()

    def _relative(self, path: str | bytes) -> str | None:
        if not path:
            return None
        rel = os.path.relpath(os.fsdecode(path), self.root)
        if rel == "." or rel.startswith(".."):
            return None
        return Path(rel).as_posix()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Note the inputs an event touches (watchdog's thread)."""
        if event.event_type not in TRIGGERING_EVENTS:
            return
        if event.is_directory and event.event_type == "modified":
            return  # a folder's own mtime: the file event that caused it is what counts
        source = self._relative(event.src_path)
        dest = self._relative(getattr(event, "dest_path", "") or "")
        paths = [path for path in (source, dest) if path is not None]
        inputs = [path for path in paths if is_input(path)]
        lost = event.is_directory and event.event_type in ("deleted", "moved") and source in WATCHED_DIRS
        if not inputs and not lost:
            return
        born = {source if event.event_type == "created" else dest if event.event_type == "moved" else None}
        now = time.monotonic()
        with self._lock:
            if not self._pending:
                self._first = now
            self._last = now
            for path in inputs:
                self._pending.setdefault(path, path in born)
            if lost and source is not None:
                self._lost.add(source)
        self.arrived.set()

    def quiet(self, debounce: float) -> bool:
        """Whether the changes have settled: no event for ``debounce`` s (or waiting too long already)."""
        now = time.monotonic()
        with self._lock:
            return now - self._last >= debounce or now - self._first >= MAX_DELAY

    def take(self) -> tuple[list[str], set[str]]:
        """The changed inputs and lost folders since the last take, and forget them.

        A file born and gone within the batch (an editor's temp file renamed onto a patch) is
        left out: the rename's destination is the change.
        """
        with self._lock:
            pending, lost = dict(self._pending), set(self._lost)
            self._pending.clear()
            self._lost.clear()
            self.arrived.clear()
        root = Path(self.root)
        return [path for path, born in pending.items() if not born or (root / path).exists()], lost


class Watcher:
    """The watch loop: observe, debounce, rebuild, report; stop cleanly on SIGINT or SIGTERM.

    ``rebuild`` runs the graph once and returns doit's exit code; a ``PipelineError`` it raises is
    reported as a failed rebuild. Only ever call :meth:`run` from the main thread.
    """

    def __init__(self, root: Path, rebuild: Callable[[], int], debounce: float = DEFAULT_DEBOUNCE_MS / 1000,
                 banner: str = "") -> None:
        self.root = root
        self.rebuild = rebuild
        self.debounce = debounce
        self.banner = banner
        self.changes = IntentChanges(root)
        self.observer: BaseObserver | None = None
        self.watches: dict[str, ObservedWatch] = {}
        self.builds = 0
        self._own: dict[str, str] = {}  # bootstrap outputs the last build created -> their digest
        self._building = False
        self._stop: int | None = None  # the signal that asked us to stop

    # --- signals ------------------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop is not None and self._building:
            raise _Interrupted  # asked twice: do not wait for the build
        self._stop = signum
        if self._building:
            signal.setitimer(signal.ITIMER_REAL, GRACE)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._building:
            raise _Interrupted

    # --- watching -----------------------------------------------------------------------------

    def _schedule(self, folder: str, recursive: bool) -> None:
        assert self.observer is not None
        path = self.root / folder if folder else self.root
        kwargs: dict[str, Any] = {"recursive": recursive}
        if _EVENT_FILTER is not None:
            kwargs["event_filter"] = _EVENT_FILTER
        self.watches[folder] = self.observer.schedule(self.changes, str(path), **kwargs)

    def ensure_watches(self, lost: Iterable[str] = ()) -> None:
        """Watch the input folders that exist now (patches/ or encrypted/ may appear, or be replaced)."""
        assert self.observer is not None
        for folder in lost:
            watch = self.watches.pop(folder, None)
            if watch is not None:
                with contextlib.suppress(KeyError, OSError):
                    self.observer.unschedule(watch)
        for folder, recursive in WATCHED_DIRS.items():
            if folder not in self.watches and (self.root / folder).is_dir():
                self._schedule(folder, recursive)

    # --- building -----------------------------------------------------------------------------

    def _filter_own(self, paths: list[str]) -> list[str]:
        """Drop bootstrap outputs the last build created itself and nobody touched since."""
        return [path for path in paths
                if path not in self._own or _fingerprint(self.root / path) != self._own[path]]

    def build(self, reason: str) -> None:
        """One rebuild with its timestamp line, the reporter's lines and an elapsed-time line."""
        if self._stop is not None:
            return
        self.builds += 1
        number = self.builds
        _say(f"[{_stamp()}] rebuild {number}: {reason}")
        missing = {path for path in BOOTSTRAP_OUTPUTS if not (self.root / path).exists()}
        started = time.monotonic()
        code: int | None = None
        error = ""
        self._building = True
        try:
            code = self.rebuild()
        except _Interrupted:
            _say(f"[{_stamp()}] rebuild {number} interrupted: stopping")
            raise
        except PipelineError as failure:
            error = str(failure)
        except Exception as failure:  # a bug, or doit refusing the command: report it, keep watching
            error = " ".join(f"{type(failure).__name__}: {failure}".split())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._building = False
        self._own = {path: digest for path in missing if (digest := _fingerprint(self.root / path))}
        elapsed = time.monotonic() - started
        if error:
            _say(f"[{_stamp()}] rebuild {number} failed: {error}")
        elif code == 0:
            _say(f"[{_stamp()}] rebuild {number} done in {elapsed:.2f} s")
        else:
            _say(f"[{_stamp()}] rebuild {number} failed in {elapsed:.2f} s (exit {code})")

    def _wait_for_changes(self) -> list[str] | None:
        """Block until inputs changed and settled; None when asked to stop."""
        while self._stop is None:
            if not self.changes.arrived.wait(POLL):
                continue
            while self._stop is None and not self.changes.quiet(self.debounce):
                time.sleep(POLL / 5)
            if self._stop is not None:
                return None
            paths, lost = self.changes.take()
            self.ensure_watches(lost)
            paths = self._filter_own(paths)
            if paths:
                return paths
        return None

    def run(self) -> int:
        """Watch until SIGINT or SIGTERM; returns the exit status (0 on a signal)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
        try:
            signal.signal(signal.SIGINT, self._on_stop)
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGALRM, self._on_alarm)
            self.observer = Observer()
            try:
                self._schedule("", recursive=False)
                self.ensure_watches()
                self.observer.start()
            except OSError as error:
                _say(f"watch: cannot watch {self.root}: {error}")
                return 3
            self.build("startup")
            self.ensure_watches()
            if self.banner:
                _say(self.banner)
            while (paths := self._wait_for_changes()) is not None:
                self.build(describe(paths))
                self.ensure_watches()
        except (_Interrupted, KeyboardInterrupt):
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        _say(f"[{_stamp()}] watch: stopped")
        return 0

    def _shutdown(self) -> None:
        # Interrupts are ignored from here on: cleanup must run to the end.
        self._building = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if self.observer is not None:
            self.observer.stop()
            if self.observer.is_alive():
                self.observer.join(timeout=1.0)
        if not sessions.current().keep:
            staging.purge_rendered(self.root)


# --- the doit command -------------------------------------------------------------------------

opt_stage = {
    "name": "stage",
    "short": "",
    "long": "stage",
    "type": bool,
    "default": False,
    "help": "git add the changed artefacts after each rebuild, as `doit` does "
            "[default: off: nothing is staged while you edit; run `doit` or git add when done]",
}

opt_debounce = {
    "name": "debounce",
    "short": "",
    "long": "debounce",
    "type": int,
    "default": DEFAULT_DEBOUNCE_MS,
    "help": "quiet period in ms after the last change before rebuilding [default: %(default)s]",
}


class Watch(DoitCmdBase):
    """`doit watch [TASK ...]`: re-promote on every save of patches/, cluster.yaml, .sops.yaml."""

    name = "watch"
    doc_purpose = "re-promote on every save of the cluster's intent (Ctrl-C to stop)"
    doc_usage = "[TASK ...]"
    # doit wraps each line of the description as a paragraph: one paragraph per line here.
    doc_description = (
        "Watches patches/ (recursively), cluster.yaml, .sops.yaml and the base artefacts in encrypted/, and "
        "after every save reruns the same incremental graph as `doit`: only the nodes whose intent changed are "
        "re-rendered and re-encrypted. Task names narrow what is rerun (`doit watch encrypt:cp1`); the default "
        "is doit's default tasks (the promotion). It builds once on start.\n"
        "\n"
        "Each rebuild prints a timestamp line, the nodes redone and the elapsed time, or the one-line error. "
        "Errors never stop the watcher, and leave the previous artefacts as they were.\n"
        "\n"
        "Staging is off while watching: artefacts are promoted but not `git add`ed, so the index holds what you "
        "last promoted on purpose. Run `doit` (which stages) or `git add encrypted/` when you are done, or "
        "watch with --stage to stage after every rebuild.\n"
        "\n"
        "Ctrl-C or SIGTERM stops with status 0 and removes the plaintext under rendered/ (unless keep=1). "
        "Restart the watcher after changing the pipeline's code or dodo.py."
    )

    execute_tasks = True
    cmd_options = (opt_stage, opt_debounce)

    def _execute(self, pos_args: list[str], stage: bool = False, debounce: int = DEFAULT_DEBOUNCE_MS,
                 dep_file: str = ".doit.db", backend: str = "promote") -> int:
        # The graph runs once per rebuild with its own dependency manager: release ours (dbm locks).
        self.dep_manager.close()
        root = Path.cwd()  # doit has moved to the dodo.py folder: the repository
        # doit's variables are set up by DoitMain; through the API they may not be: start them
        # afresh, carrying over the two the graph reads.
        given = {name: doit_cmd.get_var(name, None) for name in ("keep", "stage")}
        doit_cmd.reset_vars()
        for name, value in given.items():
            if value is not None:
                doit_cmd.set_var(name, value)
        if stage:
            doit_cmd.set_var("stage", "1")
        elif doit_cmd.get_var("stage", None) is None:
            doit_cmd.set_var("stage", "0")  # pipeline.wiring.tasks: promote without git add
        self._check_task_names(root)
        namespace = getattr(self.loader, "namespace", None)
        loader = ModuleTaskLoader(namespace) if namespace is not None else self.loader
        run_args = ["--db-file", dep_file, "--backend", backend, *pos_args]
        staging = "staging on (--stage)" if stage else "staging off (run doit or git add when done; --stage to stage)"
        banner = (f"watch: watching {PATCH_DIR}/, {INVENTORY_FILE}, {SOPS_CONFIG} and the base artefacts in "
                  f"{ENCRYPTED_DIR}/ · {staging} · Ctrl-C to stop")

        def rebuild() -> int:
            return self._run_graph(root, loader, run_args)

        return Watcher(root, rebuild, debounce=max(debounce, 0) / 1000, banner=banner).run()

    def _check_task_names(self, root: Path) -> None:
        """Refuse unknown task names up front (exit 3), unless the inventory is broken right now."""
        try:
            load_inventory(root)
        except PipelineError:
            return  # the first rebuild reports it; names come back once it is fixed
        TaskControl(self.task_list).process(self.sel_tasks)

    def _run_graph(self, root: Path, loader: Any, run_args: list[str]) -> int:
        """Run the graph once, as `doit` would, with fresh inventory, ledger and file caches."""
        # Each rebuild goes through the run entry: a new session, and the repository's promotion lock
        # held for the rebuild only (a `doit` in another terminal waits for it, and the watcher waits
        # for that one), taken before doit opens its database.
        run = PromotionRun(task_loader=loader, config=self.config, bin_name=self.bin_name)
        try:
            return run.parse_execute(run_args)
        except (CmdParseError, InvalidDodoFile, InvalidCommand, InvalidTask) as error:
            try:
                load_inventory(root)
            except PipelineError as broken:
                raise broken from None  # why the task is missing: the inventory does not load
            raise PipelineError(" ".join(str(error).split())) from None
