"""The run entry: doit's `run` command, extended with what a promotion needs before doit opens its database.

Registered in pyproject.toml as the `run` command plugin, so a plain `doit` and `doit TASK...` come
through here (doit picks `run` when no command is named). After doit has parsed the command line,
and before it opens `.doit.db` or forks a worker, a run that may write:

- takes the repository's run lock (one promotion at a time; released when the run ends),
- merges ledger journals a killed run left behind (each only if its artefact is still the one it describes),
- and, for a plain `doit`, asks the promotion stamp whether anything changed since the last one.

Read-only runs (`doit check`, `verify`, `plan`, `graph`, `list`...) take no lock and write nothing.
Nothing happens when dodo.py is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from doit.cmd_run import Run

from pipeline.errors import PipelineError
from pipeline.promote import render as rendering
from pipeline.promote import stage as staging
from pipeline.sops import identities
from pipeline.state import journal, stamp
from pipeline.state import lock as runlock
from pipeline.wiring import session as sessions
from pipeline.wiring.action import os_error_line
from pipeline.wiring.session import get_var_or_none

# Tasks that change the repository's state (artefacts, ledger, index, .sops.yaml). Any other task
# (check, verify, plan, graph, hooks, keygen, drill) only reads it.
WRITING_TASKS = frozenset({"promote", "bootstrap", "render", "encrypt", "stage", "rekey", "rotate", "import",
                           "secrets"})


def writes(task_args: list[str]) -> bool:
    """Whether running ``task_args`` (doit's positional arguments: task names and their options) may write.

    No task named means the default task, the promotion.
    """
    names = [arg.split(":", 1)[0] for arg in task_args if not arg.startswith("-")]
    return not names or any(name in WRITING_TASKS for name in names)


def start(root: Path, task_args: list[str], plain: bool) -> sessions.Session:
    """Begin this run's session: for a writing run merge leftover journals, and let the stamp answer a plain `doit`."""
    session = sessions.begin(root, plain=plain, writes=writes(task_args))
    if session.writes:
        # Merged first, so this run's checks see what a killed run promoted.
        with contextlib.suppress(PipelineError, OSError):
            journal.flush_ledger(root)
        if plain:
            session.quiet = stamp.unchanged(root)
    return session


@contextlib.contextmanager
def _scratch_database(root: Path, params: Any) -> Iterator[None]:
    """For a read-only run in a checkout it cannot write (a CI cache, a mounted backup): doit's
    database goes to a temporary folder instead of failing on `.doit.db` with a traceback.

    Read-only tasks keep nothing in it worth keeping; a writable checkout keeps its own database.
    """
    if os.access(root, os.W_OK):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="talos-promote-db-") as scratch:
        params["dep_file"] = str(Path(scratch) / ".doit.db")
        yield


# Backends whose file holds only what the tasks stored. doit's `dbm` is whatever the Python has; its
# `ndbm` page files were seen holding leftover process memory (the plaintext bundle after an import).
SAFE_BACKENDS = ("promote", "json", "sqlite3")


def _check_database_backend(params: Any) -> None:
    """A run refuses a database backend that may write leftover memory (plaintext) to disk."""
    backend = params.get("backend") if hasattr(params, "get") else None
    if backend is not None and backend not in SAFE_BACKENDS:
        raise PipelineError(f"doit's database backend {str(backend)[:20]!r} may write leftover process memory "
                            "(plaintext) into .doit.db: set backend = \"promote\" under [tool.doit] and add "
                            "promote = \"pipeline.wiring.db:PromotionDB\" under [tool.doit.plugins.backend]",
                            path="pyproject.toml")


def finish(root: Path, session: sessions.Session) -> None:
    """After every task and worker of a writing run is done, failed or not: merge journals, purge plaintext.

    Here rather than in doit teardowns, which under `-n N` run when one worker runs out of work,
    while others may still read the plaintext they would remove.
    """
    with contextlib.suppress(PipelineError, OSError):
        journal.flush_ledger(root)
    if not session.keep:
        with contextlib.suppress(OSError):
            staging.purge_rendered(root)


# --- signals ---------------------------------------------------------------------------------
#
# SIGINT (Ctrl-C) and SIGTERM stop a run with one line and the shell's status for a death by that
# signal, 128 + its number: 130 and 143. (doit's own answer, a KeyboardInterrupt traceback and exit
# 3, or a silent death on SIGTERM, left plaintext behind.) Nothing needs undoing: every artefact, the
# ledger and the index are replaced atomically, exactly as for a kill -9, which the pipeline survives
# by design (tests/promote/test_reliability.py). What a signal adds is the cleanup a kill cannot do:
# the plaintext under rendered/ is removed (ledger journals, digests only, stay for the next run to
# merge), and `doit -n N` workers are stopped first so none writes plaintext after the purge.
# `doit watch` has its own handlers (stop between rebuilds, exit 0) and keeps them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    """The SIGINT/SIGTERM handler of one run (installed only where nobody else handles them)."""

    def __init__(self, root: Path, writes: bool) -> None:
        self.root = root
        self.writes = writes
        self.pid = os.getpid()
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM, unless a caller (`doit watch`) already does."""
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                self.previous[sig] = current
                signal.signal(sig, self.handle)

    def uninstall(self) -> None:
        """Give the signals back to whoever had them."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Stop workers, purge plaintext, print one line, exit 128 + signum (never returns)."""
        if os.getpid() != self.pid:
            os._exit(128 + signum)  # a forked `-n N` worker: the parent cleans up after it
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        _stop_workers()
        if self.writes:
            # No `-P thread` worker writes plaintext once this returns (it waits for a write under way).
            rendering.stop_plaintext()
            with contextlib.suppress(OSError):
                staging.purge_plaintext(self.root)
        name = signal.Signals(signum).name
        what = "plaintext under rendered/ removed; " if self.writes else ""
        line = (f"interrupted by {name}: stopped; {what}every artefact is whole (each is replaced atomically); "
                "run it again\n")
        # os.write, not print: the signal may have interrupted a print to stderr (a reentrant call raises).
        with contextlib.suppress(OSError):
            os.write(sys.stderr.fileno(), line.encode())
        os._exit(128 + signum)


def _stop_workers() -> None:
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return
    children = multiprocessing.active_children()
    for child in children:
        with contextlib.suppress(OSError, AttributeError):
            child.terminate()
    for child in children:
        child.join(timeout=2.0)
        if child.is_alive():
            with contextlib.suppress(OSError, AttributeError):
                child.kill()
                child.join(timeout=1.0)


class PromotionRun(Run):
    """doit's `run`, with the repository's run lock and this run's session set up before the database opens."""

    _plain = False

    def parse_execute(self, in_args: list[str]) -> Any:
        # Only here are the raw arguments at hand: a plain `doit` has none (doit took out NAME=VALUE
        # variables already, so those are asked for by name).
        self._plain = not in_args and get_var_or_none("keep") is None and get_var_or_none("stage") is None
        return super().parse_execute(in_args)

    def execute(self, params: Any, args: list[str]) -> Any:
        root = Path.cwd()  # doit has moved to the dodo.py folder: the repository
        for key_file in dict.fromkeys((identities.key_file_target(), identities.default_key_file())):
            identities.warn_if_exposed(key_file)  # every run, as ssh does: until it is fixed
        stop = SignalStop(root, writes(args))
        stop.install()
        try:
            try:
                _check_database_backend(params)  # verify and drill hold plaintext in memory too
            except PipelineError as error:
                print(str(error), file=sys.stderr, flush=True)  # names settings, never values
                return 1
            if not stop.writes:
                sessions.begin(root, writes=False)
                with _scratch_database(root, params):
                    return super().execute(params, args)
            try:
                with runlock.holding(root):
                    session = start(root, args, self._plain)
                    try:
                        return super().execute(params, args)
                    finally:
                        finish(root, session)
            except PipelineError as error:  # another promotion holds the lock: one line, nothing changed
                from pipeline.wiring.action import redacted  # the redaction boundary (only needed here)

                print(redacted(str(error), full=False), file=sys.stderr, flush=True)  # a lock message: no values
                return 1
            except OSError as error:  # the lock file in a read-only checkout, doit's database on a full disk
                print(f"cannot write in this repository: {os_error_line(error, root)}", file=sys.stderr, flush=True)
                return 1
        finally:
            stop.uninstall()
