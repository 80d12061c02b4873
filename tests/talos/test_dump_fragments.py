"""dump_documents' fragment memo against the whole-document dump it replaces, byte for byte.

``_reference_dump`` is the encoder as it was before the memo (one PyYAML dump per document). Every
check dumps twice: the first call may fill the memo, the second is served from it. The memo is
process-wide and kept between tests (only the concurrency test empties it, to start cold), so
fragments cached by one test are reused by the next: a memo key that conflated two different values
would show up as a mismatch somewhere.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.promote.bootstrap import cluster_params
from pipeline.promote.intent import load_node_patches
from pipeline.talos import baseconfig
from pipeline.talos.baseconfig import (
    _FRAGMENTS,
    _direct_item,
    _dump_one,
    _FragmentMemo,
    _is_plain_tree,
    _reference_dump,
    dump_documents,
    generate_base,
)
from pipeline.talos.inventory import load_inventory
from pipeline.talos.patching import apply_patches, load_documents
from pipeline.talos.secrets_bundle import generate_bundle

PROJECT = Path(__file__).resolve().parents[2]
# CI clones the repository elsewhere with shared/ beside it.
FIXTURES = PROJECT.parent / "shared" / "talos-fixtures"
FIXTURE_FILES = sorted(
    path.relative_to(FIXTURES).as_posix()
    for path in FIXTURES.rglob("*")
    if path.suffix in (".yaml", ".json")
)


def outcome(documents: Any, dump: Any) -> tuple[Any, ...]:
    """What ``dump`` does with ``documents``: its text, or its exception's type and message."""
    try:
        return ("text", dump(documents))
    except RecursionError:
        return ("error", RecursionError)  # its message names whichever call hit the limit
    except Exception as error:
        return ("error", type(error), str(error))


def assert_same(documents: Any) -> None:
    """The fragment dump is the reference dump (or raises the same error), cold and from the memo."""
    expected = outcome(documents, _reference_dump)
    # for_sops=False: the sops-hazard refusal is tested on its own; here only the text is compared.
    assert outcome(documents, _unchecked_dump) == expected
    assert outcome(documents, _unchecked_dump) == expected


# --- (a) Talos's own files -----------------------------------------------------------------------


def test_fixtures_are_there() -> None:
    # Their absence is a failure, never a silent pass with nothing compared.
    assert len(FIXTURE_FILES) > 30, f"Talos fixtures missing under {FIXTURES}"


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_files(name: str) -> None:
    path = FIXTURES / name
    text = path.read_text()
    readings: list[list[Any]] = [list(yaml.safe_load_all(text))]  # YAML 1.1 types: yes/no as booleans
    if path.suffix == ".json":
        readings.append([json.loads(text)])
    # The project's own reading of a machine config (a JSON patch, or one document several times,
    # is not one).
    with contextlib.suppress(PipelineError):
        readings.append(load_documents(text, name))
    for documents in readings:
        assert_same(documents)


@pytest.mark.parametrize("version", ["v1.11", "v1.12", "v1.13"])
def test_stability_configs_take_the_fragment_path(version: str) -> None:
    # The comparisons above would pass trivially if Talos configs always fell back to the full dump.
    for role in ("controlplane", "worker"):
        text = (FIXTURES / "stability" / version / f"base-{role}.yaml").read_text()
        documents = load_documents(text, role)
        assert all(_is_plain_tree(document) for document in documents)
        assert dump_documents(documents) == text


# --- (b) the shipped example cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def example_configs() -> dict[str, list[dict[str, Any]]]:
    """The example's base configs (from a fresh secrets bundle, no sops) and its nodes' rendered configs."""
    inventory = load_inventory(PROJECT)
    bundle = generate_bundle(inventory.cluster.talos_version)
    params = cluster_params(inventory)
    configs = {f"base-{role}": generate_base(role, bundle, params) for role in ("controlplane", "worker")}
    for node in inventory.nodes.values():
        configs[node.name] = apply_patches(configs[f"base-{node.role}"], load_node_patches(inventory, node))
    return configs


def test_example_cluster(example_configs: dict[str, list[dict[str, Any]]]) -> None:
    assert {"base-controlplane", "base-worker", "cp1", "w1"} <= set(example_configs)
    for documents in example_configs.values():
        assert all(_is_plain_tree(document) for document in documents)
        assert_same(documents)


def test_example_fleet(example_configs: dict[str, list[dict[str, Any]]]) -> None:
    # Many nodes of one role: shared fragments come from the memo, per-node ones are fresh.
    for index in range(40):
        documents = apply_patches(example_configs["w1"], [])
        machine = documents[0]["machine"]
        machine["network"]["hostname"] = f"w{index:03d}"
        machine["network"]["interfaces"][0]["addresses"] = [f"10.0.{index}.7/24"]
        machine["nodeLabels"] = {"zone": f"z{index % 3}", "rack": str(index)}
        machine["certSANs"] = [f"10.0.{index}.7"] if index % 2 else []
        assert_same(documents)


# --- (c) properties --------------------------------------------------------------------------------

AWKWARD = [
    "", " ", "  ", "lead", " lead", "trail ", "\n", "\n\n", "a\n", "a\n\n", "a\n\n\n", "\na", " a\nb",
    "  a\n  b\n", "a\n   \nb\n", "a\n\n  \n", "a\nb", "a \nb", "a\tb", "\ta\n", "1", "-1", "1.0", "1e3",
    "0x1F", "0o17", "010", ".inf", "NaN", "true", "False", "yes", "no", "on", "off", "y", "~", "null",
    "...", "---", "--- a", "... a", "a\n...\n", "a\n---\n", "- a", "#", "a #b", "a: b", ": ", "?", "&a",
    "*a", "!t", "|", ">", "%", "@", "`", "'", '"', "{}", "[]", "ünïcode", "日本", "\u2028", "a\u2028b\n",
    "a\x85b\n", "a\u2029\nb", "\x85", "\ufeff", "\x00", "\x7f", "é\n\n", "x" * 130, "k" * 127,
]
KEYS = st.one_of(st.sampled_from(AWKWARD), st.text(alphabet="abk \n:-1", max_size=4))
TEXT = st.one_of(
    st.sampled_from(AWKWARD),
    st.text(alphabet=st.sampled_from("ab. \n\t:#-é\u2028\u2029\x85\"'"), max_size=12),
    st.text(max_size=6),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(), TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
# Top-level values are often non-empty mappings: those are cut into second-level fragments.
DOCUMENTS = st.dictionaries(KEYS, VALUES | st.dictionaries(KEYS, VALUES, min_size=1, max_size=4), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(DOCUMENTS | VALUES, min_size=1, max_size=3))
def test_random_documents(documents: list[Any]) -> None:
    assert_same(documents)


# --- edge cases, one by one -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [1, True, 1.0, "1", "true", None, "null", [1], {"1": 1}, {}, []],
        [0, False, 0.0, -0.0, "0", "", [], {}],
        [float("nan"), float("inf"), float("-inf"), 1e16, 10**16, "1e+16"],
    ],
)
def test_values_that_python_or_json_would_conflate(values: list[Any]) -> None:
    # The same key and place each time, so a lossy memo key would hand one value's text to another.
    for value in values:
        assert_same([{"top": value}, {"machine": {"k": value, "z": 0}}])
        assert_same([{"machine": {"k": [value]}}])


def test_key_types_are_not_conflated() -> None:
    for key in ["1", 1, True, "true", None, "null", 1.0, (1, 2)]:
        assert_same([{key: "v"}, {"machine": {key: "v"}}, {"machine": {"list": [{key: "v"}]}}])


class Text(str):
    """A str subclass: same repr as a str, but PyYAML's safe dumper refuses it."""


def test_types_the_safe_dumper_refuses_still_fail_the_same_way() -> None:
    assert_same([{"machine": {"k": "a"}}])  # the plain version goes into the memo first
    assert_same([{"machine": {"k": Text("a")}}])
    assert_same([{"machine": {"k": OrderedDict(a=1)}}])
    assert_same([{"machine": {Text("k"): "a"}}])
    assert_same([{"machine": {"k": {1, 2}}}])
    assert_same([OrderedDict(machine={"k": "a"})])


def test_tuples_dump_as_lists_in_both() -> None:
    assert_same([{"machine": {"k": [1, 2]}}])
    assert_same([{"machine": {"k": (1, 2)}}])


def _unchecked_dump(documents: Any) -> str:
    return dump_documents(documents, for_sops=False)


def test_shared_and_recursive_containers_are_written_without_anchors() -> None:
    shared = ["x"]
    assert_same([{"machine": {"a": shared, "b": shared}}])
    assert_same([{"machine": {"a": shared}, "cluster": {"b": shared}}])
    assert_same([{"a": shared, "b": {"c": shared}}])
    loop: list[Any] = ["x"]
    loop.append(loop)
    assert_same([{"machine": {"a": loop}}])
    # No anchors: a value used twice is written twice (go-yaml, sops and Talos read it the same either way).
    text = dump_documents([{"machine": {"a": shared}, "cluster": {"b": shared}}])
    assert "&" not in text and text.count("- x") == 2


def test_deep_nesting() -> None:
    for depth in (63, 64, 65, 100):
        value: Any = "leaf"
        for _ in range(depth):
            value = {"k": value}
        assert_same([{"machine": {"deep": value}}])
    value = "leaf"
    for _ in range(5000):
        value = [value]
    assert_same([{"machine": {"deep": value}}])  # RecursionError in both


def test_int_beyond_the_digit_limit() -> None:
    assert_same([{"machine": {"big": 10**5000}}])


@pytest.mark.parametrize(
    "documents",
    [
        [{"a": "x\n\n"}],  # a keep-chomped literal last: the document ends with "..."
        [{"a": "x\n\n", "b": 1}],  # ... but not when something follows it
        [{"a": {"b": "x\n\n"}}],
        [{"a": {"b": "x\n\n", "c": "y\n\n"}, "d": {"e": 1}}],
        [{"a": {"b": "x\n\n"}}, {"c": "\n"}, {"d": {"e": ["\n\n"]}}],
        [{"a": {"b": {"c": "x\n\n"}}}],
    ],
)
def test_document_end_marker(documents: list[Any]) -> None:
    assert_same(documents)


@pytest.mark.parametrize(
    "value",
    [
        "a\n\nb\n",  # an empty line inside a literal block has no indentation
        "a\n   \nb\n",  # a line of spaces keeps the block's indentation
        "  indented\nfirst line\n",  # indentation indicator
        "\nleading break\n",
        "a\u2028b\n\u2029c\x85d\n",  # other line breaks written inside the block
        "a\n\u2028\nb\n",
        "trailing spaces   \nx",
        "no final break\nx",
    ],
)
def test_literal_blocks_at_every_level(value: str) -> None:
    assert_same([{"top": value, "machine": {"k": value, "list": [value, {"k": value}]}}])


@pytest.mark.parametrize("key", ["k" * 127, "k" * 128, "k" * 200, "two\nlines", "...", "---", "", "? x", "a: b"])
def test_keys_written_in_other_forms(key: str) -> None:
    assert_same([{key: {"a": 1, "b": {"c": [1]}}, "machine": {key: {"x": 1}, "y": {key: 2}}}])


def test_documents_that_are_not_mappings() -> None:
    assert_same([{}, [], None, "text", 1, ["a", {"b": 1}], {"a": {}}, {"a": []}, {"a": {"b": {}}}])


def test_memo_is_bounded_and_least_recently_used() -> None:
    memo = _FragmentMemo(3)
    made: list[str] = []

    def get(key: str) -> Any:
        def make() -> tuple[str, bool]:
            made.append(key)
            return key, False

        return memo.get((key,), make)

    for key in "abc":
        get(key)
    assert get("a") == ("a", False)  # held: not made again, and now the most recently used
    get("d")  # evicts b, the least recently used
    assert len(memo) == 3
    for key in "acdb":
        get(key)
    assert made == ["a", "b", "c", "d", "b"]
    dump_documents([{"machine": {"k": "v"}}])
    assert 0 < len(_FRAGMENTS) <= _FRAGMENTS._size <= 10_000


def test_concurrent_dumps(example_configs: dict[str, list[dict[str, Any]]]) -> None:
    # Renders run on worker threads: many threads filling and reading the memo at once.
    configs = list(example_configs.values()) * 4
    expected = [_reference_dump(documents) for documents in configs]
    _FRAGMENTS.clear()
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(dump_documents, configs)) == expected


# --- the direct emitter -----------------------------------------------------------------------------


def direct_matches_dump(key: str, value: Any) -> bool:
    """Whether ``_direct_item`` handled ``key: value``; where it did, its text is the dump's, at both levels."""
    top = _direct_item(key, value, 0)
    nested = _direct_item(key, value, 4)
    assert (top is None) == (nested is None)
    if top is None:
        return False
    assert top == _dump_one({key: value})
    header = "parent:\n"
    whole = _dump_one({"parent": {key: value}})
    assert whole.startswith(header)
    assert nested == whole[len(header) :]
    return True


def realistic_network(index: int) -> dict[str, Any]:
    return {
        "hostname": f"w{index:03d}",
        "nameservers": ["1.1.1.1", "9.9.9.9"],
        "interfaces": [
            {
                "interface": "eth0",
                "dhcp": False,
                "addresses": [f"10.0.{index}.7/24", f"fd00::{index:x}/64"],
                "routes": [{"network": "0.0.0.0/0", "gateway": "10.0.0.1", "metric": 1024}],
                "vlans": [{"vlanId": 120, "addresses": [f"10.20.{index}.7/24"], "mtu": 9000}],
                "bond": None,
            },
            {"deviceSelector": {"hardwareAddr": "00:1a:2b:*", "driver": "e1000e"}, "ignore": True},
        ],
        "extraHostEntries": [{"ip": "10.0.0.5", "aliases": ["registry.local", "registry"]}],
    }


def test_direct_emitter_takes_a_node_network_section(example_configs: dict[str, list[dict[str, Any]]]) -> None:
    for index in (0, 7, 199):
        assert direct_matches_dump("network", realistic_network(index))
    labels = {"topology.kubernetes.io/zone": "zone-a", "example.com/rack": "r01", "example.com/revision": "0"}
    assert direct_matches_dump("nodeLabels", labels)  # "0" double-quoted, written directly too
    assert direct_matches_dump("network", example_configs["w1"][0]["machine"]["network"])


def test_a_fresh_node_network_never_reaches_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted where the fragments call PyYAML: a fresh node's network and labels are written directly.
    machine = {"type": "worker", "network": realistic_network(4242), "nodeLabels": {"rack": "r4242"}}
    documents = [{"version": "v1alpha1", "machine": machine}]
    expected = _reference_dump(documents)
    dumped: list[Any] = []

    def counting_dump(document: Any) -> str:
        dumped.append(document)
        return _dump_one(document)

    monkeypatch.setattr(baseconfig, "_dump_one", counting_dump)
    assert dump_documents(documents) == expected
    assert not [document for document in dumped if "network" in str(document) or "r4242" in str(document)]


@pytest.mark.parametrize(
    "value",
    [
        {}, [], [[1]], ["a", []], [{}], "a\nb", "x\n\n", "tab\there", '"hi', " back\\slash", "\u2028",
        "é ", "\x85", {"k": "v\n"}, {"": 1}, {"a\nb": 1}, {"k" * 101: 1}, {"é ": 1},
    ],
)
def test_direct_emitter_leaves_the_rest_to_pyyaml(value: Any) -> None:
    assert _direct_item("k", value, 0) is None
    assert_same([{"k": value, "machine": {"k": value}}])


@pytest.mark.parametrize("value", ["", "0", "true", "null", "~", "- a", "a: b", "'", "{}", " x ", 1.5, 1e17, None])
def test_direct_emitter_quotes_what_pyyaml_quotes(value: Any) -> None:
    assert direct_matches_dump("k", value)
    assert direct_matches_dump("k", {"k": value, "l": [value, {value if type(value) is str and value else "v": value}]})


@pytest.mark.parametrize("length", [99, 100, 101, 121, 122, 123, 124, 127, 128])
def test_keys_around_the_simple_key_limit(length: int) -> None:
    key = "k" * length
    assert_same([{key: 1, "machine": {key: {key: [{key: 1}]}}}])
    assert (_direct_item(key, 1, 0) is not None) == (length <= 100)


TRICKY = [
    " ", "  x", "x ", "a b", "a  b", "a: b", "a:b", "a:", ":a", "a #b", "a#b", "#a", "- a", "-a", "-", "--", "---",
    "...", "? a", "?a", "{a", "a{", "}", "[a", "a]", "*a", "&a", "!a", "%a", "@a", "`a", "a`", "'a", "a'", '"a', 'a"',
    "|", ">", ",", "a,b", "1", "-1", "+1", "1.0", "1e3", "1_000", "0x1F", "0o17", "017", "0b11", "1:30", ".inf",
    "-.inf", ".nan", "NaN", "true", "True", "TRUE", "false", "yes", "Yes", "no", "NO", "on", "On", "off", "y", "n",
    "~", "null", "Null", "<<", "=", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2002-12-14 21:59:43", "ünï",
    "日本語", "é", "a\u00a0b", "\ufeff", "\x7f", "\x00", "\t", "a\tb", "a\\b", "x" * 300, "10.0.0.1/24",
    "fd00::1/64", "00:1a:2b:3c", "registry.local:5000/x", "https://a.example:6443", "a=b", "key=value:NoSchedule",
]
FAST_TEXT = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from(" ab1.:#-{}[]*&!%@`'\",?|>=~é日"), min_size=1, max_size=10),
    st.text(min_size=1, max_size=6),
)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what sops can encrypt (the dumper refuses more)
FAST_SCALARS = st.one_of(st.none(), st.booleans(), INT64, st.floats(), FAST_TEXT)
FAST_KEYS = st.one_of(FAST_TEXT, st.sampled_from(["k" * 100, "k" * 101, "key with spaces", "a b: c"]))
FAST_MAPPINGS = st.deferred(
    lambda: st.dictionaries(FAST_KEYS, FAST_SCALARS | FAST_MAPPINGS | FAST_LISTS, min_size=1, max_size=4)
)
FAST_LISTS = st.lists(FAST_SCALARS | FAST_MAPPINGS, min_size=1, max_size=4)  # no list directly in a list
FAST_VALUES = FAST_SCALARS | FAST_MAPPINGS | FAST_LISTS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FAST_KEYS, FAST_VALUES)
def test_direct_emitter_matches_pyyaml(key: str, value: Any) -> None:
    direct_matches_dump(key, value)
    assert_same([{key: value, "machine": {key: value}}])
