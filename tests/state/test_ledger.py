"""The ledger: stable text, keyed digests that reveal nothing, conflict detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.state.ledger import Ledger, canonical, keyed_digest, load_ledger, parse_ledger, updating

CONFIG = [{"version": "v1alpha1", "machine": {"token": "abc"}, "cluster": {"id": "i", "secret": "s3cr3t"}}]


def test_canonical_ignores_key_order() -> None:
    assert canonical({"a": 1, "b": {"c": 2, "d": 3}}) == canonical({"b": {"d": 3, "c": 2}, "a": 1})


def test_keyed_digest_depends_on_content_and_key() -> None:
    same = keyed_digest(CONFIG)
    assert same == keyed_digest([dict(CONFIG[0])])
    changed = [{**CONFIG[0], "machine": {"token": "abd"}}]
    assert keyed_digest(changed) != same
    other_key = [{**CONFIG[0], "cluster": {"id": "i", "secret": "other"}}]
    assert keyed_digest(other_key) != same


def test_keyed_digest_never_contains_plaintext_and_is_not_a_plain_hash() -> None:
    import hashlib

    digest = keyed_digest(CONFIG) or ""
    assert "s3cr3t" not in digest and "abc" not in digest
    assert hashlib.sha256(canonical(CONFIG)).hexdigest() not in digest


def test_no_cluster_secret_means_no_keyed_digest() -> None:
    assert keyed_digest([{"machine": {}}]) is None


def test_round_trip_and_write_only_on_change(tmp_path: Path) -> None:
    (tmp_path / "encrypted").mkdir()
    with updating(tmp_path) as ledger:
        ledger.nodes["cp1"] = {"intent": "sha256:1"}
    path = tmp_path / "encrypted" / "ledger.json"
    stamp = path.stat().st_mtime_ns
    with updating(tmp_path) as ledger:
        ledger.nodes["cp1"] = {"intent": "sha256:1"}
    assert path.stat().st_mtime_ns == stamp
    assert load_ledger(tmp_path).nodes == {"cp1": {"intent": "sha256:1"}}


def test_conflict_markers_are_reported_with_a_way_out() -> None:
    text = '{\n<<<<<<< HEAD\n "a": 1\n=======\n "a": 2\n>>>>>>> other\n}\n'
    with pytest.raises(PipelineError, match=r"conflict markers.*re-promote"):
        parse_ledger(text)


def test_text_is_stable() -> None:
    ledger = Ledger(nodes={"b": {"x": 1}, "a": {"y": 2}})
    assert ledger.to_text() == Ledger(nodes={"a": {"y": 2}, "b": {"x": 1}}).to_text()
