"""Patch files are jinja2 templates: render them strictly, with errors that point at a line."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

import jinja2

from pipeline.errors import PipelineError

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # YAML, not HTML
)


@lru_cache(maxsize=4096)
def _compile(text: str, source: str) -> jinja2.Template:
    # Keyed by text too: an edited file is recompiled, an unchanged one (every node shares
    # resolvers.yaml) is compiled once per process.
    try:
        return _ENV.from_string(text)
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


def render_template(text: str, source: str, context: dict[str, Any]) -> str:
    """Render a patch template; undefined variables and syntax errors name the file and line."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        # Most patches are plain YAML: skip jinja2 entirely (it is the dominant cost per node).
        return text
    template = _compile(text, source)
    try:
        return template.render(context)
    except jinja2.UndefinedError as error:
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"undefined template variable: {error.message}", path=source, line=line) from None
    except jinja2.TemplateError as error:
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"template error: {error}", path=source, line=line) from None
    except (TypeError, ValueError, ArithmeticError) as error:
        # A filter or expression misused by the template author is bad input, not a bug.
        line = _template_line(sys.exc_info()[2])
        raise PipelineError(f"template error: {error}", path=source, line=line) from None
