"""Patch templating: strict jinja2, errors that point at the file and line."""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.talos.templating import render_template

CONTEXT = {"cluster": {"name": "talos-kube"}, "node": {"name": "cp1", "address": "10.0.0.1"},
           "vars": {"gateway": "10.0.0.254"}}


def test_renders_cluster_node_and_vars() -> None:
    text = "hostname: {{ node.name }}-{{ cluster.name }}\ngw: {{ vars.gateway }}\n"
    assert render_template(text, "patches/cp1.yaml", CONTEXT) == "hostname: cp1-talos-kube\ngw: 10.0.0.254\n"


def test_plain_yaml_passes_through_untouched() -> None:
    text = "machine:\n  network: {}\n"
    assert render_template(text, "patches/x.yaml", CONTEXT) is text


def test_undefined_variable_names_file_line_and_variable() -> None:
    text = "a: 1\nb: {{ vars.missing }}\n"
    with pytest.raises(PipelineError) as caught:
        render_template(text, "patches/cp1.yaml", CONTEXT)
    assert caught.value.path == "patches/cp1.yaml"
    assert caught.value.line == 2
    assert "missing" in str(caught.value)


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(PipelineError) as caught:
        render_template("a: 1\nb: {% if %}\n", "patches/w1.yaml", CONTEXT)
    assert str(caught.value).startswith("patches/w1.yaml:2: template syntax error")


def test_loops_and_filters_work() -> None:
    text = "{% for s in ['a', 'b'] %}- {{ s | upper }}\n{% endfor %}"
    assert render_template(text, "p.yaml", CONTEXT) == "- A\n- B\n"
