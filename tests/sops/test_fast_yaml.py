"""The engine's fast YAML paths against the go-yaml port they shortcut (no sops process: thousands of examples).

The port itself is proven against stock sops byte for byte in test_engine.py; these prove that the
line-by-line writer gives the port's text whenever it answers, and that it answers for a fleet's files.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.sops import goyaml
from tests.sops.test_engine import DOCUMENTS

EXAMPLES = int(os.environ.get("FAST_YAML_EXAMPLES", "500"))


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
