"""The promotion report: one line per promoted node, one line per failure, one summary line.

doit's console reporter prints a line per task, so a no-op on a large cluster is hundreds of
`-- render:nNNN` lines hiding the one that matters. This reporter is the project's default
(doit's own stay available with `-r console`). It speaks in nodes:

    cp1: patches/cp1.yaml changed -> artefact rewritten
    promoted 1 of 6 nodes (cp1) · 5 up to date · 2 sops runs · 0.41 s

On a terminal (and with ``CI`` unset) lines are coloured and, while more than
:data:`PROGRESS_THRESHOLD` nodes are being processed, a live progress bar (rich) sits below
them. With no terminal or in CI the output is plain lines without an escape code.

Everything a run knows lives on the reporter instance, which doit makes anew for every run,
so running doit repeatedly in one process (``doit watch``) starts each report from zero.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from doit.exceptions import BaseFail, TaskFailed, UnmetDependency

from pipeline.wiring.action import redacted

# A live progress bar appears once more than this many nodes are being processed.
PROGRESS_THRESHOLD = 5
# How many node names a summary lists before it says "+N more".
NAMES_SHOWN = 8
NODE_STEPS = ("render", "encrypt")


class _AfterBadInput(UnmetDependency, TaskFailed):
    """A step not run because an earlier step of this run failed on bad input.

    doit counts an unmet dependency as an error (exit 2, "a bug"); with ``--continue`` or ``-n N`` the
    steps after a refused render would turn a bad patch into exit 2. Being also a TaskFailed, doit's
    runner counts it as the failure it follows from (exit 1); after a real error the run stays 2.
    """


def wants_plain_output(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether to print plain lines: no terminal, ``CI`` set, or a dumb terminal.

    ``CI`` counts as set unless it is empty, ``0`` or ``false``.
    """
    env = os.environ if environ is None else environ
    if env.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    if env.get("TERM", "") == "dumb":
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return not (callable(isatty) and isatty())
    except (ValueError, OSError):  # a closed or odd stream
        return True


def split_node_task(name: str) -> tuple[str, str] | None:
    """``"encrypt:cp1"`` -> ``("encrypt", "cp1")``; None for a task that is not a node's step."""
    step, sep, node = name.partition(":")
    if sep and node and step in NODE_STEPS:
        return step, node
    return None


def _names(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:NAMES_SHOWN])
    more = f", +{len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return f" ({shown}{more})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def one_line(message: str) -> str:
    """A failure message folded onto one line."""
    return " ".join(part.strip() for part in message.strip().splitlines() if part.strip())


@dataclass
class Tally:
    """What one run did, node by node; turns into the summary line."""

    nodes: list[str] = field(default_factory=list)  # the nodes in this run's selection, inventory order
    encrypting: bool = False  # whether the selection encrypts (else it only renders)
    promoted: list[str] = field(default_factory=list)  # artefact rewritten
    unchanged: list[str] = field(default_factory=list)  # redone, same documents, artefact kept
    up_to_date: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    rendered: set[str] = field(default_factory=set)  # rendered (and not encrypted in this run)
    tasks_ran: list[str] = field(default_factory=list)  # other tasks that ran
    tasks_up_to_date: list[str] = field(default_factory=list)
    tasks_failed: list[str] = field(default_factory=list)
    sops_runs: int = 0

    def _in_order(self, names: Iterable[str]) -> list[str]:
        wanted = set(names)
        return [node for node in self.nodes if node in wanted]

    def summary(self, seconds: float) -> str:
        """The closing line, e.g. ``promoted 2 of 200 nodes (cp1, w7) · 198 up to date · 2 sops runs · 0.31 s``."""
        parts: list[str] = []
        if self.nodes:
            only_rendered = [node for node in self.nodes if node in self.rendered
                             and node not in self.promoted and node not in self.unchanged]
            if self.encrypting:
                parts.append(f"promoted {len(self.promoted)} of {len(self.nodes)} nodes"
                             f"{_names(self._in_order(self.promoted))}")
            if self.unchanged:
                parts.append(f"{len(self.unchanged)} unchanged{_names(self._in_order(self.unchanged))}")
            if only_rendered or not self.encrypting:
                parts.append(f"rendered {len(only_rendered)} of {len(self.nodes)} nodes{_names(only_rendered)}")
            done = set(self.promoted) | set(self.unchanged) | set(self.failed) | set(only_rendered)
            up_to_date = self.up_to_date - done
            parts.append(f"{len(up_to_date)} up to date")
            if self.failed:
                parts.append(f"{len(self.failed)} failed{_names(self._in_order(self.failed))}")
            not_run = len(self.nodes) - len(done) - len(up_to_date)
            if not_run > 0:
                parts.append(f"{not_run} not reached")
        else:
            if self.tasks_ran:
                parts.append(f"ran {', '.join(self.tasks_ran)}")
            if self.tasks_up_to_date:
                parts.append(f"{', '.join(self.tasks_up_to_date)} up to date")
            if not parts and not self.tasks_failed:
                parts.append("nothing to do")
        parts.extend(f"{name} failed" for name in self.tasks_failed)
        if self.nodes or self.sops_runs:
            parts.append(_plural(self.sops_runs, "sops run"))
        parts.append(f"{seconds:.2f} s")
        return " · ".join(parts)


# The node line's "which case it was" for a rewritten artefact (pipeline/promote/encrypt.py CASES).
_WRITE_CASES = {
    "reused": "data key kept: only changed values",
    "new artefact": "fresh data key: new artefact",
    "unknown artefact": "fresh data key: artefact unknown to the ledger",
    "recipients changed": "fresh data key: recipients changed",
    "rule changed": "fresh data key: creation rule changed",
    "previous unreadable": "fresh data key: previous artefact unreadable here",
}


class PromotionReporter:
    """A doit reporter that speaks in nodes, not tasks (see the module docstring)."""

    desc = "promotion report: promoted nodes, failures, one summary line"

    def __init__(self, outstream: TextIO, options: dict[str, Any]) -> None:
        self.out = outstream
        self.options = options
        self.started = time.monotonic()
        self.tally = Tally()
        self.runtime_errors: list[str] = []
        self.plain = wants_plain_output(outstream)
        self._console: Any = None  # rich.console.Console, on a terminal only
        self._progress: Any = None  # rich.progress.Progress while the bar is shown
        self._bar: Any = None  # its TaskID
        self._steps_total = 0
        self._steps_done: set[str] = set()
        self._nodes_done = 0  # encrypt steps finished (a count: `-P thread` reports from several threads)
        self._active: set[str] = set()  # nodes with a step that started executing
        self._lock = threading.Lock()  # `doit -P thread` calls execute_task from worker threads
        if not self.plain:
            from rich.console import Console

            self._console = Console(file=outstream, highlight=False, soft_wrap=True)

    # --- output ---------------------------------------------------------------------------

    def write(self, text: str, style: str | None = None) -> None:
        """Write one line (no newline in ``text``); coloured with ``style`` on a terminal."""
        if self._console is None:
            self.out.write(text + "\n")
            self.out.flush()
            return
        from rich.text import Text

        console = self._progress.console if self._progress is not None else self._console
        # A styled Text, not print(style=...): that style would also tint the bar redrawn below.
        console.print(Text(text, style=style or ""), highlight=False)

    def _node_line(self, node: str, values: dict[str, Any]) -> None:
        trigger = values.get("trigger") or "changed"
        if values.get("rewritten"):
            case = _WRITE_CASES.get(str(values.get("case") or ""), "")
            self.write(f"{node}: {trigger} -> artefact rewritten{f' ({case})' if case else ''}", "green")
        else:
            self.write(f"{node}: {trigger} -> same documents, artefact kept", "cyan")
        self._fallback_note(str(values.get("fallback") or ""))

    def _fallback_note(self, why: str) -> None:
        """Say once per run that the sops binary wrote artefacts the in-process engine cannot."""
        if why and not getattr(self, "_fallback_said", False):
            self._fallback_said = True
            self.write(f"sops engine: falling back to the sops binary ({why[:160]})", "yellow")

    # --- progress bar ---------------------------------------------------------------------

    def _step_finished(self, task_name: str) -> None:
        with self._lock:
            self._count_step(task_name)

    def _count_step(self, task_name: str) -> None:
        if split_node_task(task_name) is None:
            return
        if task_name in self._steps_done:
            return
        self._steps_done.add(task_name)
        self._nodes_done += task_name.startswith("encrypt:")
        if self._progress is not None:
            self._progress.update(self._bar, completed=len(self._steps_done), nodes_done=self._nodes_done)

    def _step_started(self, task_name: str) -> None:
        parsed = split_node_task(task_name)
        if parsed is None:
            if self._progress is not None and not task_name.startswith("_"):
                self._progress.update(self._bar, description=task_name)  # e.g. promote: check, stage
            return
        if self._console is None:
            return
        step, node = parsed
        self._active.add(node)
        if self._progress is None and len(self._active) > PROGRESS_THRESHOLD:
            self._start_bar()
        if self._progress is not None:
            self._progress.update(self._bar, description=f"{step} {node}")

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            TextColumn("{task.fields[nodes_done]}/{task.fields[nodes_total]} nodes"),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._bar = self._progress.add_task("promoting", total=max(self._steps_total, 1),
                                            completed=len(self._steps_done), nodes_done=self._nodes_done,
                                            nodes_total=len(self.tally.nodes))
        self._progress.start()

    def close(self) -> None:
        """Stop the progress bar, if one is shown (idempotent)."""
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()

    # --- doit's reporter interface ---------------------------------------------------------

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        """Find the node steps this run may execute: everything the selected tasks depend on."""
        seen: set[str] = set()
        pending = [name for name in selected_tasks if name in tasks]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            task = tasks[name]
            pending.extend(dep for dep in [*task.task_dep, *task.setup_tasks] if dep in tasks)
        nodes: set[str] = set()
        for name in seen:
            parsed = split_node_task(name)
            if parsed:
                nodes.add(parsed[1])
                self._steps_total += 1
                self.tally.encrypting |= parsed[0] == "encrypt"
        # Inventory order: doit keeps the order the tasks were created in.
        self.tally.nodes = [parsed[1] for name in tasks if (parsed := split_node_task(name))
                            and parsed[0] == "encrypt" and parsed[1] in nodes]
        self.tally.nodes += sorted(nodes - set(self.tally.nodes))

    def get_status(self, task: Any) -> None:
        """Called when doit checks whether a task is up to date: nothing to say."""

    def execute_task(self, task: Any) -> None:
        """A task starts: move the progress bar (with many nodes on a terminal)."""
        with self._lock:
            self._step_started(task.name)

    def add_success(self, task: Any) -> None:
        """A task succeeded: a line for an encrypted node, and the lines the action asked for."""
        values = getattr(task, "values", None) or {}
        self.tally.sops_runs += int(values.get("sops_runs", 0) or 0)
        quiet = values.get("up_to_date_nodes")
        if isinstance(quiet, list):  # a plain `doit` with nothing changed (pipeline/state/stamp.py): no node tasks
            self.tally.nodes, self.tally.encrypting = [str(node) for node in quiet], True
            self.tally.up_to_date.update(self.tally.nodes)
        parsed = split_node_task(task.name)
        if parsed is None:
            if task.actions and not task.name.startswith("_"):
                self.tally.tasks_ran.append(task.name)
        elif parsed[0] == "render":
            self.tally.rendered.add(parsed[1])
        elif "rewritten" in values:
            node = parsed[1]
            (self.tally.promoted if values["rewritten"] else self.tally.unchanged).append(node)
            self._node_line(node, values)
        for line in values.get("lines", ()) or ():
            self.write(redacted(str(line), full=False))  # the action redacted them; lines from elsewhere too
        self._step_finished(task.name)

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        """A task failed: bad input is one line; an exception (a bug) keeps its traceback."""
        self._step_finished(task.name)
        if isinstance(fail, UnmetDependency):
            if self.tally.failed or self.tally.tasks_failed:
                # doit decides the exit code after this call, from the failure's class (see _AfterBadInput).
                fail.__class__ = _AfterBadInput
            return  # a step after one that failed (`doit -c`): the first failure said it all
        parsed = split_node_task(task.name)
        if parsed is not None:
            if parsed[1] not in self.tally.failed:
                self.tally.failed.append(parsed[1])
            label = f"{parsed[1]} ({parsed[0]})"
        else:
            self.tally.tasks_failed.append(task.name)
            label = task.name
        if not fail.report:
            return
        if isinstance(fail, TaskFailed):
            self.write(f"FAILED {label}: {redacted(one_line(fail.message))}", "bold red")
        else:
            self.write(f"ERROR {label} (a bug in the pipeline, please report it):", "bold red")
            self.write(redacted(fail.get_msg().rstrip()))  # a traceback quotes values too

    def skip_uptodate(self, task: Any) -> None:
        """A task was up to date: counted, not printed."""
        parsed = split_node_task(task.name)
        if parsed is None:
            if task.actions and not task.name.startswith("_"):
                self.tally.tasks_up_to_date.append(task.name)
        else:
            # render and encrypt share one up-to-date test: either step skipped says it for the node
            self.tally.up_to_date.add(parsed[1])
        self._step_finished(task.name)

    def skip_ignore(self, task: Any) -> None:
        """A task the user ignored (`doit ignore`): counted as not run."""
        self._step_finished(task.name)

    def cleanup_error(self, exception: BaseFail) -> None:
        """A teardown action failed (e.g. purging plaintext): say so, with the detail."""
        self.write(f"ERROR in cleanup: {redacted(one_line(exception.message))}", "bold red")
        detail = exception.get_msg().strip()
        if detail and detail != exception.message.strip():
            self.write(redacted(detail))

    def runtime_error(self, msg: str) -> None:
        """An error from doit itself (not a task): printed before the summary."""
        self.runtime_errors.append(msg)

    def teardown_task(self, task: Any) -> None:
        """A teardown starts: nothing to say."""

    def complete_run(self) -> None:
        """The run is over: remove the bar, print doit's own errors and the summary line."""
        try:
            self.close()
        finally:
            for msg in self.runtime_errors:
                self.write(f"doit: {redacted(one_line(msg))}", "bold red")
            failed = bool(self.tally.failed or self.tally.tasks_failed)
            self.write(self.tally.summary(time.monotonic() - self.started), "bold red" if failed else "bold")
