"""Patch files are jinja2 templates: rendered strictly, in a sandbox, with errors that point at a line.

Two fast paths need no jinja2 at all, and are safe because they evaluate nothing: a patch with no
template syntax is returned as is, and a patch whose only expressions are plain lookups
(``{{ node.name }}``, ``{{ vars.a.b }}`` through dicts of str/int/bool/float) is substituted
directly. Everything else, i.e. everything jinja2 renders, goes through
:func:`pipeline.talos.sandbox.render`: the immutable sandbox, an allow-list of filters, bounded
steps, recursion and output, and error texts that never hold a value (see that module).
"""

from __future__ import annotations

import re
from typing import Any

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
        # jinja2 tries getattr first: a key shadowed by a dict method (items, keys...) is not a lookup;
        # a key starting with "_" is the sandbox's to refuse.
        if type(value) is not dict or key not in value or hasattr(value, key) or key.startswith("_"):
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
    # Any other `{{` (filters, whitespace control, a syntax error) is the sandbox's to render or report.
    return rendered if len(parts) // 2 == text.count("{{") else None


def render_template(text: str, source: str, context: dict[str, Any]) -> str:
    """Render a patch template (sandboxed); any template error is one line naming the file and line."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        # Most patches are plain YAML: skip jinja2 entirely (it is the dominant cost per node).
        return text
    simple = _render_simple(text, context)
    if simple is not None:
        return simple
    # Imported here: jinja2 costs start-up time, and most runs template nothing or only lookups.
    from pipeline.talos import sandbox

    return sandbox.render(text, source, context)
