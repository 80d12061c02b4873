"""The taint check's quick look (render._collect_plain_texts) sees exactly the texts of _plain_strings.

A clean node is judged from the collected texts alone; only a suspect one is walked again with paths.
So the collector must gather every text the path walk yields (keys included, the rule's regexes
applied the same way), or a secret in a plain field would pass unseen.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.promote import render
from pipeline.redact import WINDOW, SecretSet

NAMES = st.sampled_from(["token", "key", "crt", "hostname", "nodeLabels", "secretish-name", "id", "a", 7, True])
SCALARS = st.one_of(st.text(max_size=24), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(NAMES, inner, max_size=5)), max_leaves=30)
RULES = st.sampled_from([
    {"encrypted_regex": "^(token|key|crt|id)$"},
    {"unencrypted_regex": "^(hostname|nodeLabels|a)$"},
    {"encrypted_regex": "^(token|key)$", "unencrypted_regex": "name"},
    {"encrypted_regex": "(?i)KEY"},
])


def reference_texts(documents: list[Any], patterns: Any, known_clean: frozenset[str]) -> set[str]:
    return {text for doc in documents for _path, text in render._plain_strings(doc, "", *patterns)
            if text not in known_clean and len(text) >= WINDOW}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(NAMES, TREES, max_size=5), min_size=1, max_size=3), RULES, st.data())
def test_collector_matches_the_path_walk(documents: list[Any], rule: dict[str, Any], data: st.DataObject) -> None:
    patterns = render._rule_patterns(rule)
    assert patterns is not None
    every = reference_texts(documents, patterns, frozenset())
    known_clean = frozenset(data.draw(st.sets(st.sampled_from(sorted(every)))) if every else ())
    collected: set[str] = set()
    verdicts = render._key_verdicts(*patterns)
    for doc in documents:
        render._collect_plain_texts(doc, patterns, verdicts, known_clean, collected)
    assert collected == reference_texts(documents, patterns, known_clean)


def test_a_secret_in_a_plain_field_is_named() -> None:
    secret = "S3cr3t-value-0123456789abcdef"
    secrets = SecretSet()
    secrets.add(secret)
    rule = {"encrypted_regex": "^(token|key)$"}
    clean = [{"machine": {"token": secret, "network": {"hostname": "w1"}}}]
    assert render._tainted_path(clean, secrets, rule) is None
    leaked = [{"machine": {"token": secret, "nodeLabels": {"a": f"x{secret[::-1]}"}}}]
    assert render._tainted_path(leaked, secrets, rule) == "machine.nodeLabels.a"
    as_key = [{"machine": {"nodeLabels": {secret: "x"}}}, {"kind": "Other"}]
    assert render._tainted_path(as_key, secrets, rule) == "document 1: machine.nodeLabels (a key)"
    # A text the caller already found clean is not looked at again (the base config's own texts).
    assert render._tainted_path(leaked, secrets, rule, frozenset({f"x{secret[::-1]}"})) is None


def test_texts_found_clean_are_remembered_and_a_secret_is_still_found() -> None:
    secret = "S3cr3t-value-0123456789abcdef"
    secrets = SecretSet()
    secrets.add(secret)
    rule = {"encrypted_regex": "^(token|key)$"}
    seen: set[str] = set()
    clean = [{"machine": {"token": secret, "nodeLabels": {"zone": "zone-a-rack-01"}}}]
    assert render._tainted_path(clean, secrets, rule, frozenset(), seen) is None
    assert seen == {"nodeLabels", "zone-a-rack-01"}  # texts of WINDOW (8) characters or more
    leaked = [{"machine": {"nodeLabels": {"zone": "zone-a-rack-01", "b": secret}}}]
    assert render._tainted_path(leaked, secrets, rule, frozenset(), seen) == "machine.nodeLabels.b"
    assert secret not in seen
