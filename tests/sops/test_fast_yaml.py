"""The fast YAML paths against what they shortcut (no sops process, so many examples).

The go-yaml port is proven against stock sops byte for byte in test_engine.py. These prove that the
line-by-line writer gives the port's text whenever it answers, that the line reader reads everything
that writer writes as the YAML parser reads it, that it never misreads an altered text (it answers
None, or the parser's reading), and that the guard judges a file the same on either path.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.sops import engine, goyaml, metadata
from tests.sops.test_engine import DOCUMENTS

EXAMPLES = int(os.environ.get("FAST_YAML_EXAMPLES", "200"))


def _port(documents: list[dict[str, Any]], indent: int = 4, strict: bool = False) -> str | None:
    emitter = goyaml._Emitter(indent=indent, strict=strict)
    try:
        for i, doc in enumerate(documents):
            emitter.document(doc, first=i == 0)
    except goyaml.EngineUnsupported:
        return None
    return emitter.finish()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(DOCUMENTS, st.sampled_from([2, 4]))
def test_fast_writer_writes_what_the_port_writes(docs: list[dict[str, Any]], indent: int) -> None:
    fast = goyaml._fast_emit(docs, indent)
    if fast is not None:
        assert fast == _port(docs, indent)


TALOS_LIKE = {
    "version": "v1alpha1",
    "machine": {
        "type": "controlplane",
        "token": "ENC[AES256_GCM,data:abc=,iv:def=,tag:ghi==,type:str]",
        "certSANs": [],
        "network": {"interfaces": [{"interface": "eth0", "addresses": ["10.0.0.1/24"],
                                    "vlans": [{"vlanId": 120, "mtu": 9000}]}],
                    "nameservers": ["1.1.1.1"]},
        "nodeLabels": {"example.com/rack": "r01", "example.com/revision": "0", "zone": ""},
        "files": [{"content": "line one\nline two\n", "path": "/var/x", "op": "create"}],
        "kubelet": {"extraArgs": {"rotate-server-certificates": "true"}, "nodeIP": {}},
    },
    "sops": {
        "age": [{"recipient": "age1xyz",
                 "enc": "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"}],
        "lastmodified": "2026-12-02T06:00:00Z",
        "mac": "ENC[AES256_GCM,data:m=,iv:i=,tag:t==,type:str]",
        "encrypted_regex": "^(token|key|secret)$",
        "version": "3.11.0",
    },
}


@pytest.mark.parametrize("docs", [[TALOS_LIKE], [TALOS_LIKE, {"b": [[1, 2], [], {}], "c": None}]])
def test_fast_writer_answers_for_a_talos_artefact(docs: list[dict[str, Any]]) -> None:
    fast = goyaml._fast_emit(docs, 4)
    assert fast is not None
    assert fast == _port(docs)
    assert "    files:\n        - content: |\n            line one\n" in fast



def _parsed(text: str) -> list[dict[str, Any]] | None:
    """What the YAML parser path reads (None: it refuses the text)."""
    try:
        return engine._parse(text, "t")
    except (engine.PipelineError, goyaml.EngineUnsupported):
        return None


GUARD_NAMES = ("encrypted/n.encrypted.yaml", "encrypted/secrets.encrypted.yaml")
ARMORED = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"
META = st.fixed_dictionaries({
    "age": st.lists(st.fixed_dictionaries({"recipient": st.sampled_from(["age1abc", "1", "null", "", "a b"]),
                                           "enc": st.sampled_from([ARMORED, "x"])}), max_size=2),
    "mac": st.sampled_from(["ENC[AES256_GCM,data:m=,iv:i=,tag:t==,type:str]", "", None, "x", 0]),
})
ENC = st.sampled_from(["ENC[AES256_GCM,data:YQ==,iv:aXY=,tag:dGFn,type:str]",
                       "ENC[AES256_GCM,data:,iv:,tag:,type:int]"])


def _sopsy(docs: list[dict[str, Any]], meta: dict[str, Any], data: st.DataObject) -> list[dict[str, Any]]:
    """Documents shaped like artefacts: sensitive keys with ENC values or plaintext, and sops metadata."""
    out = [dict(doc) for doc in docs]
    for doc in out:
        for key in data.draw(st.lists(st.sampled_from(["token", "key", "secret", "crt"]), max_size=2)):
            doc[key] = data.draw(st.one_of(ENC, st.just("plain"), st.just(""), st.none(), st.just({"key": "x"})))
    out[0]["sops"] = meta
    return out


def _judged_alike(text: str) -> None:
    for name in GUARD_NAMES:
        assert metadata.inspect_artefact(text, name) == metadata.inspect_artefact(text, name, parse=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(DOCUMENTS, META, st.data())
def test_line_reader_reads_what_the_writer_writes(docs: list[dict[str, Any]], meta: dict[str, Any],
                                                 data: st.DataObject) -> None:
    docs = _sopsy([{k: v for k, v in d.items() if k != "sops"} for d in docs], meta, data)
    text = goyaml._fast_emit(docs, 4)
    if text is None:
        return
    read = goyaml.read_written(text)
    assert read is not None, text
    assert read == _parsed(text)
    assert goyaml.emit_yaml(read) == text
    _judged_alike(text)


EDITS = st.sampled_from(["drop char", "add space", "dedent", "duplicate line", "drop line", "swap lines",
                         "insert", "tab", "comment", "crlf"])
INSERTS = st.sampled_from([" ", ":", "- ", "#", "'", '"', "\\", "|", ">", "&a ", "*a", "!!str ", "? ", "{", "[",
                           "---", "...", "\t", "~", "null", ": x", "- - ", "x: y", "\ufeff"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(DOCUMENTS, META, st.data(), st.lists(st.tuples(EDITS, st.integers(0, 10_000), INSERTS), min_size=1, max_size=3))
def test_line_reader_never_misreads_an_altered_file(docs: list[dict[str, Any]], meta: dict[str, Any],
                                                    data: st.DataObject, edits: list[tuple[str, int, str]]) -> None:
    docs = _sopsy([{k: v for k, v in d.items() if k != "sops"} for d in docs], meta, data)
    text = goyaml._fast_emit(docs, 4)
    if text is None:
        return
    lines = text.split("\n")
    for edit, at, insert in edits:
        n = at % max(len(lines) - 1, 1)
        line = lines[n]
        col = at % (len(line) + 1)
        if edit == "drop char" and line:
            lines[n] = line[:col] + line[col + 1 :]
        elif edit == "add space":
            lines[n] = line[:col] + " " + line[col:]
        elif edit == "dedent":
            lines[n] = line[2:] if line.startswith("  ") else line
        elif edit == "duplicate line":
            lines.insert(n, line)
        elif edit == "drop line" and len(lines) > 2:
            del lines[n]
        elif edit == "swap lines" and n + 1 < len(lines) - 1:
            lines[n], lines[n + 1] = lines[n + 1], line
        elif edit == "insert":
            lines[n] = line[:col] + insert + line[col:]
        elif edit == "tab":
            lines[n] = "\t" + line
        elif edit == "comment":
            lines[n] = line + " # note"
        elif edit == "crlf":
            lines[n] = line + "\r"
    altered = "\n".join(lines)
    read = goyaml.read_written(altered)
    if read is not None:
        assert read == _parsed(altered)
    _judged_alike(altered)


def test_a_mapping_as_a_key_is_a_finding_not_a_crash() -> None:
    # A hand-made file can hide a field inside a complex key; sops never writes one.
    text = "? token: plain\n: null\nsops:\n    mac: x\n"
    assert goyaml.read_written(text) is None
    findings = metadata.scan_artefact(text, "encrypted/n.encrypted.yaml")
    assert findings == ["encrypted/n.encrypted.yaml: not a SOPS file (a mapping key that is a list or mapping)"]


@pytest.mark.parametrize("escape", ["\\U00110000", "\\uD800", "\\q"])
def test_an_escape_that_is_no_character_is_left_to_the_parser(escape: str) -> None:
    text = f'"k{escape}": 1\nsops:\n    mac: x\n'
    assert goyaml.read_written(text) is None
    metadata.scan_artefact(text, "encrypted/n.encrypted.yaml")  # judged on the parser's path, no crash
