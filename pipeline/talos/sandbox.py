"""The jinja2 environment for patch templates: sandboxed, strict, bounded, and quiet about values.

Patches come from pull requests, and ``doit check``/``doit graph`` render them in CI without a key,
so a template is untrusted code. :func:`render` runs it in jinja2's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`:

- no attribute starting with ``_`` (no ``__class__``, ``__globals__``, ``_TemplateReference__context``),
  no mutating method of a list or dict, no ``str.format`` (its format specs are unbounded);
- no globals but ``range`` (at most 100000 items, counted against the render's budget); no
  ``cycler``/``joiner``/``lipsum``/``namespace``/``dict``; no ``include``/``import``/``extends``
  (there is no loader);
- only the filters in :data:`ALLOWED_FILTERS` (others are an error when the template is compiled);
- bounded: macros nest at most :data:`MAX_DEPTH` deep, a render makes at most :data:`MAX_STEPS`
  calls and loop iterations over ``range``, ``*``/``**``/``%`` cannot build a huge value, and the
  output is at most :data:`MAX_OUTPUT` characters;
- :class:`~jinja2.StrictUndefined`: an undefined variable is an error; no autoescape (YAML, not
  HTML); a trailing newline is kept.

Every failure is a :class:`PipelineError` ``"template error: ..."`` naming the file and the template
line, whose text never holds a value from the context (values found in it are replaced by
``(value)``, quoted literals by ``'...'``).
"""

from __future__ import annotations

import base64
import contextvars
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any

import jinja2
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from pipeline.errors import PipelineError

MAX_DEPTH = 32
MAX_STEPS = 200_000
MAX_OUTPUT = 1 << 20  # characters of rendered text
MAX_RANGE = 100_000
_MAX_EXPONENT = 256
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+)|\.(\d+)")


def _to_json(value: Any, indent: int | None = None) -> str:
    """JSON text of a value (keys in order given, non-ASCII kept): a YAML-safe scalar or flow value."""
    return json.dumps(value, indent=indent, ensure_ascii=False)


def _b64encode(value: Any) -> str:
    """Standard base64 of the UTF-8 text of ``value`` (what Talos expects in ``crt``/``key``-style fields)."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    if len(text) + hits * max(0, len(new) - len(old)) > MAX_OUTPUT:
        raise SecurityError("replace would build a text larger than the output limit")
    return text.replace(old, new, -1 if count is None else count)


def _indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    prefix = width if isinstance(width, str) else " " * min(int(width), 256)
    text = str(value)
    if len(text) + (text.count("\n") + 1) * len(prefix) > MAX_OUTPUT:
        raise SecurityError("indent would build a text larger than the output limit")
    return jinja2.filters.do_indent(text, prefix, first, blank)


_BUILTIN = jinja2.Environment().filters
# The only filters a patch template may use.
ALLOWED_FILTERS: dict[str, Any] = {
    **{name: _BUILTIN[name] for name in ("default", "lower", "upper", "trim", "join", "int", "string", "length",
                                         "first", "last", "sort", "unique", "map", "select", "reject", "list")},
    "replace": _replace,
    "indent": _indent,
    "to_json": _to_json,
    "tojson": _to_json,
    "b64encode": _b64encode,
}


@dataclass
class _Budget:
    depth: int = 0
    steps: int = 0

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_STEPS:
            raise SecurityError(f"the template takes too many steps (more than {MAX_STEPS} calls and iterations)")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


class _CountedRange:
    """``range`` for templates: bounded, and each item taken counts against the render's budget."""

    def __init__(self, *args: int) -> None:
        self._range = range(*args)
        if len(self._range) > MAX_RANGE:
            raise SecurityError(f"range too big (more than {MAX_RANGE} items)")

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self) -> Any:
        budget = _BUDGET.get()
        for item in self._range:
            if budget is not None:
                budget.step()
            yield item


def _template_range(*args: int) -> _CountedRange:
    return _CountedRange(*args)


def _no_str_format(*_args: Any, **_kwargs: Any) -> str:
    raise SecurityError("str.format is not available in templates")


class _PatchEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with call/operator limits (see the module docstring)."""

    intercepted_binops = frozenset(("*", "**", "%"))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        budget.step()
        if not isinstance(__obj, Macro):
            return super().call(__context, __obj, *args, **kwargs)
        budget.depth += 1
        try:
            if budget.depth > MAX_DEPTH:
                raise SecurityError(f"macros nest too deep (more than {MAX_DEPTH} levels)")
            return super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1

    def wrap_str_format(self, value: Any) -> Any:
        # str.format's field widths are unbounded (one call can build gigabytes): not offered.
        if getattr(value, "__name__", None) in ("format", "format_map") and isinstance(
                getattr(value, "__self__", None), str):
            return _no_str_format
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_OUTPUT:
                    raise SecurityError("repetition would build a value larger than the output limit")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent larger than {_MAX_EXPONENT}")
        elif operator == "%" and isinstance(left, str):
            widths = [int(number) for match in _FORMAT_WIDTH.finditer(left) for number in match.groups() if number]
            if any(width > 10_000 for width in widths):
                raise SecurityError("format width too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> _PatchEnvironment:
    env = _PatchEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML
        keep_trailing_newline=True,
        loader=None,
    )
    env.filters.clear()
    env.filters.update(ALLOWED_FILTERS)
    env.globals.clear()
    env.globals["range"] = _template_range
    return env


_ENV = _environment()


@lru_cache(maxsize=1024)
def _compile(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


# --- error texts --------------------------------------------------------------------------------

_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_SAFE_QUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}( object)?|.{0,2}")


def _context_strings(value: Any, found: set[str], depth: int = 0) -> None:
    if isinstance(value, str):
        if len(value) >= 4:
            found.add(value)
    elif depth < 32 and isinstance(value, dict):
        for key, item in value.items():
            _context_strings(item, found, depth + 1)
            if isinstance(key, str) and len(key) >= 16:
                found.add(key)
    elif depth < 32 and isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _context_strings(item, found, depth + 1)


def _quiet(message: str, context: dict[str, Any]) -> str:
    """``message`` on one line, with no value from ``context`` (nor its case or reversal) and no odd quoted text."""
    values: set[str] = set()
    _context_strings(context, values)
    for value in sorted(values, key=len, reverse=True):
        for form in {value, value[::-1]}:
            message = re.sub(re.escape(form), "(value)", message, flags=re.IGNORECASE)
    folded = [value.lower() for value in values]

    def quoted(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1]
        if not _SAFE_QUOTED.fullmatch(inner):
            return "'...'"
        part = inner.lower()
        if len(part) >= 4 and not part.endswith(" object") and any(
                part in value or part[::-1] in value for value in folded):
            return "'...'"  # a piece of a value (a slice, a key built from one)
        return match.group(0)

    message = _QUOTED.sub(quoted, message)
    return " ".join(message.split())


def _template_line(traceback: TracebackType | None) -> int | None:
    # jinja2 rewrites tracebacks: template frames carry the template's own line numbers.
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _describe(error: BaseException) -> str:
    if isinstance(error, jinja2.UndefinedError):
        return f"undefined: {error.message}"
    if isinstance(error, SecurityError):
        return f"not allowed: {error}"
    if isinstance(error, RecursionError):
        return "recursion too deep"
    if isinstance(error, jinja2.TemplateError):
        return error.message or type(error).__name__
    text = str(error)
    literal = re.match(r"(invalid literal for \w+\(\) with base \d+|could not convert string to \w+)", text)
    return f"{type(error).__name__}: {literal.group(1) if literal else text}"


# --- rendering ----------------------------------------------------------------------------------


def render(text: str, source: str, context: dict[str, Any]) -> str:
    """Render a patch template ``text`` (read from ``source``) with ``context``, in the sandbox.

    Raises :class:`PipelineError` ``"template error: ..."`` with ``path=source`` and the template line
    for a syntax error, an undefined variable, a disallowed filter or attribute, or a limit reached.
    """
    try:
        template = _compile(text)
    except jinja2.TemplateSyntaxError as error:
        # Both wordings: "template syntax error" (what users grep for) and "template error:" (every one).
        detail = _quiet(error.message or "syntax error", context)
        raise PipelineError(f"template syntax error (template error: {detail})", path=source,
                            line=error.lineno) from None
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"output larger than {MAX_OUTPUT} characters")
            parts.append(chunk)
        return "".join(parts)
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError,
            AttributeError) as error:
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"template error: {_quiet(_describe(error), context)}", path=source,
                            line=line) from None
    finally:
        _BUDGET.reset(token)
