"""Patch files are jinja2 templates: render them strictly, with errors that point at a line."""

from __future__ import annotations

import re
import sys
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    import jinja2


@cache
def _environment() -> jinja2.Environment:
    # jinja2 is imported on first use: most runs template nothing, or only `{{ a.b }}` lookups.
    import jinja2

    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )


@lru_cache(maxsize=4096)
def _compile(text: str, source: str) -> jinja2.Template:
    # Keyed by text too: an edited file is recompiled, an unchanged one (every node shares
    # resolvers.yaml) is compiled once per process.
    import jinja2

    try:
        return _environment().from_string(text)
    except jinja2.TemplateSyntaxError as error:
        raise PipelineError(f"template syntax error: {error.message}", path=source, line=error.lineno) from None


def _template_line(traceback: Any) -> int | None:
    # jinja2 rewrites tracebacks so that template frames carry the template's own line numbers.
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


# `{{ name.key.key }}` only: jinja2 prints str() of what plain dict lookups find, so a substitution
# gives the same text without compiling a template per node (each node's patch text differs).
_SIMPLE_EXPR = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*) *\}\}")
_JINJA_CONSTANTS = frozenset(("true", "false", "none", "True", "False", "None"))
_PRINTABLE = (str, int, bool, float)


def _lookup(context: dict[str, Any], dotted: str) -> str | None:
    """str() of the value jinja2 would print for ``dotted``, or None when only jinja2 can tell."""
    head, *keys = dotted.split(".")
    if head in _JINJA_CONSTANTS or head not in context:
        return None
    value = context[head]
    for key in keys:
        # jinja2 tries getattr first: a key shadowed by a dict method (items, keys...) is not a lookup.
        if type(value) is not dict or key not in value or hasattr(value, key):
            return None
        value = value[key]
    return str(value) if type(value) in _PRINTABLE else None


def _render_simple(text: str, context: dict[str, Any]) -> str | None:
    if "{%" in text or "{#" in text or "{{{" in text or "\r" in text:
        return None
    parts: list[str] = []
    end = 0
    for match in _SIMPLE_EXPR.finditer(text):
        value = _lookup(context, match.group(1))
        if value is None:
            return None
        parts += (text[end:match.start()], value)
        end = match.end()
    parts.append(text[end:])
    rendered = "".join(parts)
    # Any other `{{` (filters, whitespace control, a syntax error) is jinja2's to render or report.
    return rendered if len(parts) // 2 == text.count("{{") else None


def render_template(text: str, source: str, context: dict[str, Any]) -> str:
    """Render a patch template; undefined variables and syntax errors name the file and line."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        # Most patches are plain YAML: skip jinja2 entirely (it is the dominant cost per node).
        return text
    simple = _render_simple(text, context)
    if simple is not None:
        return simple
    import jinja2

    template = _compile(text, source)
    try:
        return template.render(context)
    except jinja2.UndefinedError as error:
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"undefined template variable: {error.message}", path=source, line=line) from None
    except jinja2.TemplateError as error:
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"template error: {error}", path=source, line=line) from None
    except (TypeError, ValueError, ArithmeticError, RecursionError) as error:
        # A filter or expression misused by the template author is bad input, not a bug.
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"template error: {error}", path=source, line=line) from None
