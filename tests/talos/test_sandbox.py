"""Patch templates run in a sandbox: no escapes, no runaway templates, no values in errors."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.talos.sandbox import ALLOWED_FILTERS, MAX_OUTPUT, render

SECRET = "Zq7VXuObsdLdy_bHmz6hlMHZ3p8"  # identifier-shaped: slices of it look like names
TOKEN = "abcdef.0123456789abcdef"


def context() -> dict:
    return {"vars": {"x": "HeLLo", "port": 6443, "names": ["b", "a", "b"], "secretish": SECRET},
            "secrets": {"token": TOKEN, "password": SECRET}, "node": {"name": "cp-1"}}


def failure(text: str, source: str = "patches/p.yaml") -> str:
    with pytest.raises(PipelineError) as info:
        render(text, source, context())
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{source}")
    assert "template error: " in message
    for value in (SECRET, TOKEN, SECRET.lower(), SECRET[::-1], SECRET[2:], SECRET[3:11], "HeLLo"):
        assert value not in message
    return message


# --- escapes ------------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('touch {marker}').read() }}",
    "{{ range.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ vars.__class__.__init__.__globals__['os'].popen('touch {marker}') }}",
    "{{ (vars.items | attr('__self__')) }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(vars) }}",
    "{% set x = vars.update({'a': 1}) %}{{ vars.a }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{% if c.__name__ == 'Popen' %}"
    "{{ c(['touch', '{marker}']) }}{% endif %}{% endfor %}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
]


@pytest.mark.parametrize("payload", ESCAPES)
def test_escapes_fail_in_one_line_and_run_nothing(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    text = "machine:\n  network:\n    hostname: " + payload.replace("{marker}", str(marker)) + "\n"
    message = failure(text)
    assert message.startswith("patches/p.yaml:3: ") or message.startswith("patches/p.yaml: ")
    assert not marker.exists()


def test_a_recursive_macro_fails_quickly() -> None:
    start = time.perf_counter()
    message = failure("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}\n")
    assert time.perf_counter() - start < 1.0
    assert "nest too deep" in message


@pytest.mark.parametrize(("text", "words"), [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "too many steps"),
    ("{{ 'x' * 100000000 }}", "larger than the output limit"),
    ("{{ 9 ** 99999999 }}", "exponent"),
    ("{{ '%999999999s' % 'a' }}", "format width"),
    ("{{ '{:999999999}'.format(1) }}", "str.format"),
    ("{{ 'xx' | replace('', 'y' * 1000000) }}", "output limit"),
    ("{{ range(10000000) | list }}", "range too big"),
    ("{% for i in range(2000) %}{{ 'y' * 1000 }}{% endfor %}", f"output larger than {MAX_OUTPUT}"),
])
def test_runaway_templates_stop_quickly(text: str, words: str) -> None:
    start = time.perf_counter()
    assert words in failure(text)
    assert time.perf_counter() - start < 1.0


# --- strictness and filters ---------------------------------------------------------------------


def test_an_undefined_variable_names_file_and_line() -> None:
    message = failure("machine:\n  network:\n    hostname: {{ vars.hostnme }}\n", "patches/net.yaml")
    assert message.startswith("patches/net.yaml:3: template error: ") and "hostnme" in message
    message = failure("a: 1\n\n\nb: {{ secrets.missing }}\n", "patches/s.yaml")
    assert message.startswith("patches/s.yaml:4: ") and "missing" in message


def test_a_syntax_error_names_the_line() -> None:
    assert failure("a: 1\nb: {% if vars.x %}\n", "patches/x.yaml").startswith("patches/x.yaml:2: ")


@pytest.mark.parametrize("name", ["attr", "format", "pprint", "xmlattr", "urlize", "center", "wordwrap", "safe",
                                  "filesizeformat", "dictsort", "groupby", "batch", "random", "sum"])
def test_filters_outside_the_list_are_errors(name: str) -> None:
    assert name not in ALLOWED_FILTERS
    assert f"No filter named '{name}'" in failure(f"v: {{{{ vars.x | {name} }}}}\n")


def test_allowed_filters_work() -> None:
    assert render("{{ vars.x | lower }}\n", "p.yaml", context()) == "hello\n"
    assert render("{{ vars.x | upper }}-{{ vars.missing | default('d') }}", "p", context()) == "HELLO-d"
    assert render("{{ vars.names | unique | sort | join(',') }}", "p", context()) == "a,b"
    assert render("{{ vars.names | first }}{{ vars.names | last }}{{ vars.names | length }}", "p",
                  context()) == "bb3"
    assert render("{{ vars.names | map('upper') | list }}", "p", context()) == "['B', 'A', 'B']"
    assert render("{{ vars.names | select('equalto', 'a') | list }}", "p", context()) == "['a']"
    assert render("{{ vars.names | reject('equalto', 'a') | list }}", "p", context()) == "['b', 'b']"
    assert render("{{ ' x ' | trim }}|{{ '12' | int + 1 }}|{{ 5 | string }}", "p", context()) == "x|13|5"
    assert render("{{ vars.x | replace('L', 'l') }}", "p", context()) == "Hello"
    assert render("k:\n{{ 'a: 1\nb: 2' | indent(2, true) }}", "p", context()) == "k:\n  a: 1\n  b: 2"
    assert json.loads(render("{{ vars.names | to_json }}", "p", context())) == ["b", "a", "b"]
    assert json.loads(render("{{ {'a': node.name} | tojson }}", "p", context())) == {"a": "cp-1"}
    assert base64.b64decode(render("{{ vars.x | b64encode }}", "p", context())) == b"HeLLo"
    text = "port: {{ vars.port }}\n{% for i in range(2) %}- {{ i }}\n{% endfor %}"
    assert render(text, "p", context()) == "port: 6443\n- 0\n- 1\n"


def test_errors_never_show_a_context_value() -> None:
    failure("{{ vars[secrets.token] }}")  # the looked-up key is a value
    failure("{{ vars[secrets.password | lower] }}")
    failure("{{ vars[secrets.password[::-1]] }}")
    failure("{{ vars[secrets.password[2:]] }}")
    failure("{{ vars[secrets.password[3:11]] }}")
    failure("{{ vars[secrets.password[3:11] | upper] }}")
    failure("{{ secrets.password + 1 }}")
    failure("{{ secrets.password.nothing }}")
    failure("{{ 1 + secrets.password }}")
    failure("{% if secrets.password > 1 %}x{% endif %}")


def test_plain_text_and_trailing_newline_are_kept() -> None:
    assert render("a: 1\n", "p", {}) == "a: 1\n"
    assert render("a: '<b>&'\n", "p", {}) == "a: '<b>&'\n"  # no HTML escaping
    assert render("{{ '<b>' }}\n\n", "p", {}) == "<b>\n\n"
