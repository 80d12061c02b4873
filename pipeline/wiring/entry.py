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
import sys
from pathlib import Path
from typing import Any

from doit.cmd_run import Run

from pipeline.errors import PipelineError
from pipeline.state import journal, stamp
from pipeline.state import lock as runlock
from pipeline.wiring import session as sessions
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
        if not writes(args):
            sessions.begin(root, writes=False)
            return super().execute(params, args)
        try:
            with runlock.holding(root):
                start(root, args, self._plain)
                return super().execute(params, args)
        except PipelineError as error:  # another promotion holds the lock: one line, nothing changed
            from pipeline.wiring.action import redacted  # the redaction boundary (only needed here)

            print(redacted(str(error), full=False), file=sys.stderr, flush=True)  # a lock message: no values
            return 1
