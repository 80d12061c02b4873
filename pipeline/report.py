"""The promotion report: one line per promoted node, one line per failure, one summary line.

doit's console reporter prints a line per task, so a no-op on a large cluster is hundreds of
`-- render:nNNN` lines hiding the one that matters. This reporter is the project's default;
doit's own stay available with `-r console`.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from doit.exceptions import BaseFail, TaskFailed


class PromotionReporter:
    """A doit reporter that speaks in nodes, not tasks."""

    desc = "promotion report: promoted nodes, failures, one summary line"

    def __init__(self, outstream: TextIO, options: dict[str, Any]) -> None:
        self.out = outstream
        self.started = time.monotonic()
        self.nodes: set[str] = set()
        self.rewritten: list[str] = []
        self.unchanged: list[str] = []
        self.up_to_date: set[str] = set()
        self.failed: list[str] = []
        self.sops_runs = 0
        self.errors: list[str] = []

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    # --- doit's reporter interface ---------------------------------------------------------

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        self.nodes = {name.split(":", 1)[1] for name in tasks if name.startswith("encrypt:")}

    def get_status(self, task: Any) -> None:
        pass

    def execute_task(self, task: Any) -> None:
        pass

    def add_success(self, task: Any) -> None:
        values = getattr(task, "values", None) or {}
        self.sops_runs += int(values.get("sops_runs", 0))
        if task.name.startswith("encrypt:") and "rewritten" in values:
            node = task.name.split(":", 1)[1]
            (self.rewritten if values["rewritten"] else self.unchanged).append(node)
            state = "rewritten" if values["rewritten"] else "unchanged (same documents, artefact kept)"
            self.write(f"  {node}: {values.get('trigger', 'changed')} -> artefact {state}\n")
        for line in values.get("lines", ()):
            self.write(f"  {line}\n")

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        if not fail.report:
            return
        if task.name.startswith(("render:", "encrypt:")):
            self.failed.append(task.name.split(":", 1)[1])
        if isinstance(fail, TaskFailed):
            # Bad input: the message is the whole story (one line, names the file).
            self.write(f"FAILED {task.name}: {fail.message}\n")
        else:
            # An exception in the pipeline is a bug: keep the traceback for the report.
            self.write(f"ERROR {task.name} (a bug in the pipeline, please report it):\n{fail.get_msg()}\n")

    def skip_uptodate(self, task: Any) -> None:
        if task.name.startswith("encrypt:"):
            self.up_to_date.add(task.name.split(":", 1)[1])

    def skip_ignore(self, task: Any) -> None:
        pass

    def cleanup_error(self, exception: BaseFail) -> None:
        self.write(f"cleanup error: {exception.message}\n")

    def runtime_error(self, msg: str) -> None:
        self.errors.append(msg)

    def teardown_task(self, task: Any) -> None:
        pass

    def complete_run(self) -> None:
        for msg in self.errors:
            self.write(f"doit: {msg}\n")
        promoted = sorted(self.rewritten + self.unchanged)
        names = f" ({', '.join(promoted[:8])}{', ...' if len(promoted) > 8 else ''})" if promoted else ""
        parts = [f"promoted {len(promoted)} of {len(self.nodes)} nodes{names}"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} found unchanged")
        parts.append(f"{len(self.up_to_date)} up to date")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        parts.append(f"{self.sops_runs} sops runs")
        parts.append(f"{time.monotonic() - self.started:.2f} s")
        self.write(" · ".join(parts) + "\n")
