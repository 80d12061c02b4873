"""Property tests: whatever text cluster.yaml holds, the parser answers with an inventory or a
one-line PipelineError naming cluster.yaml, never another exception."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.talos.inventory import parse_inventory

ROOT = Path("/nonexistent-repo")  # no patch file exists: listed patches must be reported, not crash

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
node_names = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
nodes = st.dictionaries(node_names, st.fixed_dictionaries(
    {"role": st.sampled_from(["controlplane", "worker", "etcd", ""])},
    optional={"address": st.one_of(st.ip_addresses().map(str), st.text(max_size=10)),
              "patches": st.lists(st.text(max_size=10), max_size=2),
              "vars": values}), max_size=4)
inventories = st.fixed_dictionaries(
    {"cluster": st.fixed_dictionaries({
        "name": st.one_of(st.just("talos-kube"), st.text(max_size=10)),
        "endpoint": st.one_of(st.just("https://10.0.0.1:6443"), st.text(max_size=20)),
        "talosVersion": st.one_of(st.just("v1.11.5"), st.text(max_size=8)),
        "kubernetesVersion": st.one_of(st.just("v1.34.1"), values)})},
    optional={"nodes": nodes, "patches": st.one_of(st.lists(st.text(max_size=10), max_size=2), values),
              "roles": values, "vars": values, "recipients": values, "renderer": values})


def _parse(text: str) -> None:
    try:
        parse_inventory(text, ROOT)
    except PipelineError as error:
        assert str(error).startswith("cluster.yaml")
        assert "\n" not in str(error)


@settings(max_examples=300, deadline=None)
@given(inventories)
def test_structured_inventories_parse_or_fail_cleanly(data: dict) -> None:
    _parse(yaml.safe_dump(data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    _parse(text)


@settings(max_examples=200, deadline=None)
@given(values)
def test_arbitrary_yaml_values_fail_cleanly(value: object) -> None:
    _parse(yaml.safe_dump(value))
