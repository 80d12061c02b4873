"""The one action wrapper: every task's action goes through it, so every failure reads the same.

Bad input (PipelineError), an environment that refuses (OSError: a read-only folder, a full disk,
a path that is not a directory) and Ctrl-C become a task failure: one line, exit 1, never a
traceback. A successful action returns a dict of values for the reporter, with the sops runs it
made. A writing action first merges the ledger entries this run's encrypt tasks journaled, so it
sees them; read-only actions never write the ledger.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from pipeline.errors import PipelineError
from pipeline.sops import runner as sops
from pipeline.state import journal

TaskDict = dict[str, Any]


def say(message: str) -> None:
    """A user-facing progress line (stderr: doit captures an action's stdout)."""
    print(message, file=sys.stderr, flush=True)


class Lines:
    """An action's report lines: printed by the reporter on success, to stderr before a failure's line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def flush_to_stderr(self) -> None:
        """Print what was collected (the steps done before a failure)."""
        for line in self.lines:
            say(f"  {line}")


def os_error_line(error: OSError, root: Path | None = None) -> str:
    """An OSError as one line naming the file (relative to the repository when inside it)."""
    name = error.filename
    reason = error.strerror or error.__class__.__name__
    if name:
        if root is not None:
            with contextlib.suppress(ValueError, OSError):
                name = Path(name).resolve().relative_to(root.resolve()).as_posix()
        return f"{name}: {reason}"
    return reason


def action(func: Callable[..., Any], *, writes: bool = False) -> Callable[..., Any]:
    """Wrap ``func`` as a doit action (see the module docstring).

    ``writes``: merge journaled ledger entries before running. A ``func`` with an ``emit``
    parameter gets a :class:`Lines` collector, whose lines become the report's.
    """
    signature = inspect.signature(func)
    wants_emit = "emit" in signature.parameters

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = Path.cwd()
        runs = sops.runs_in_this_thread()
        lines = Lines()
        if wants_emit:
            kwargs["emit"] = lines
        try:
            if writes:
                journal.flush_ledger(root)
            result = func(*args, **kwargs)
        except PipelineError as error:
            lines.flush_to_stderr()
            return TaskFailed(str(error))
        except OSError as error:
            lines.flush_to_stderr()
            return TaskFailed(os_error_line(error, root))
        except KeyboardInterrupt:
            lines.flush_to_stderr()
            return TaskFailed("interrupted: every artefact is whole (each is replaced atomically); run it again")
        values = dict(result) if isinstance(result, dict) else {}
        values["lines"] = [*lines.lines, *values.get("lines", [])]
        values["sops_runs"] = sops.runs_in_this_thread() - runs
        return values

    # doit passes an action the task options its signature names: hide `emit`, which the wrapper supplies.
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "emit"])
    return wrapper


def failing(basename: str, error: PipelineError, doc: str) -> TaskDict:
    """A task that reports bad input: the graph cannot be built from a broken inventory."""
    return {"basename": basename, "doc": doc, "actions": [lambda: TaskFailed(str(error))], "verbosity": 2}
