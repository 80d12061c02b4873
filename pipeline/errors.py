"""User-facing errors: one line that names the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Bad input or a failed external step, reported to the user in one line.

    Never raised for a bug in the pipeline itself: those stay ordinary
    exceptions so that doit reports them (exit 2) with a traceback.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        text = " ".join(self.message.split("\n"))
        return f"{where}: {text}" if where else text
