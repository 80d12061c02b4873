"""Regular expressions compiled on first use, for module-level patterns on the no-op path.

A no-op `doit` imports most of the pipeline but matches almost nothing: compiling a module's large
patterns (unicode classes, long alternations) at import time was a tenth of its start-up.
"""

from __future__ import annotations

import re
from typing import Any


class LazyPattern:
    """A `re.Pattern` stand-in that compiles itself the first time it is used."""

    # The matching methods get a slot each, filled with the compiled pattern's bound method on first use:
    # later calls find it there directly instead of going through __getattr__ (hot loops call them).
    _METHODS = ("search", "match", "fullmatch", "finditer", "findall", "sub", "subn", "split")
    __slots__ = ("_compiled", "flags", "pattern", *_METHODS)

    def __init__(self, pattern: Any, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags
        self._compiled: re.Pattern[Any] | None = None

    def compiled(self) -> re.Pattern[Any]:
        """The real compiled pattern."""
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.compiled(), name)
        if name in LazyPattern._METHODS:
            object.__setattr__(self, name, value)
        return value


def compile(pattern: Any, flags: int = 0) -> Any:
    """``re.compile``, deferred until the pattern is first used."""
    return LazyPattern(pattern, flags)
