"""The inventory parser: pure, no subprocess; every error names cluster.yaml and a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.talos.inventory import parse_inventory

GOOD = """\
cluster:
  name: talos-kube
  endpoint: https://192.168.1.100:6443
  talosVersion: v1.11.5
  kubernetesVersion: v1.34.1
patches: [resolvers.yaml]
roles:
  worker: [workers.yaml]
nodes:
  cp1: {role: controlplane, address: 192.168.1.101}
  w1: {role: worker, address: 192.168.1.111, patches: [w1.yaml, gpu.yaml]}
vars: {gateway: 192.168.1.1}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    patches = tmp_path / "patches"
    patches.mkdir()
    for name in ("resolvers.yaml", "workers.yaml", "cp1.yaml", "w1.yaml", "gpu.yaml"):
        (patches / name).write_text("machine: {}\n")
    return tmp_path


def error_of(text: str, root: Path) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        parse_inventory(text, root)
    return caught.value


def test_patch_order_is_shared_then_role_then_node(repo: Path) -> None:
    inventory = parse_inventory(GOOD, repo)
    w1 = inventory.nodes["w1"]
    assert inventory.patches_for(w1) == [
        "patches/resolvers.yaml", "patches/workers.yaml", "patches/w1.yaml", "patches/gpu.yaml"]


def test_node_patch_defaults_to_its_own_file_when_present(repo: Path) -> None:
    inventory = parse_inventory(GOOD, repo)
    assert inventory.patches_for(inventory.nodes["cp1"]) == ["patches/resolvers.yaml", "patches/cp1.yaml"]


def test_node_without_own_file_gets_only_shared_patches(repo: Path) -> None:
    (repo / "patches" / "cp1.yaml").unlink()
    inventory = parse_inventory(GOOD, repo)
    assert inventory.patches_for(inventory.nodes["cp1"]) == ["patches/resolvers.yaml"]


def test_artefact_names_follow_the_contract(repo: Path) -> None:
    inventory = parse_inventory(GOOD, repo)
    assert inventory.artefact_name(inventory.nodes["cp1"]) == "talos-kube-cp1"


def test_template_context_merges_node_vars_over_global(repo: Path) -> None:
    text = GOOD.replace("address: 192.168.1.101}", "address: 192.168.1.101, vars: {gateway: 10.0.0.1}}")
    inventory = parse_inventory(text, repo)
    context = inventory.template_context(inventory.nodes["cp1"])
    assert context["vars"]["gateway"] == "10.0.0.1"
    assert context["node"]["address"] == "192.168.1.101"
    assert context["cluster"]["name"] == "talos-kube"


@pytest.mark.parametrize(
    ("edit", "expected", "line"),
    [
        (lambda t: "- just\n- a list\n", "must be a mapping", 1),
        (lambda t: t + "colour: blue\n", "colour: unknown top-level key", 13),
        (lambda t: t.replace("role: controlplane", "role: etcd"), "unknown role 'etcd'", 10),
        (lambda t: t.replace("{role: controlplane, ", "{"), "nodes.cp1.role: required", 10),
        (lambda t: t.replace("address: 192.168.1.101", "address: 999.1.1.1"), "not an IP address", 10),
        (lambda t: t.replace("gpu.yaml", "missing.yaml"), "patches/missing.yaml (used by node w1) does not exist", 11),
        (lambda t: t.replace("gpu.yaml", "../escape.yaml"), "must stay inside patches/", 11),
        (lambda t: t.replace("https://192", "http://192"), "must be an https:// URL", 3),
        (lambda t: t.replace("v1.34.1", "latest"), "is not a version", 5),
        (lambda t: t.replace("talos-kube", "Talos_Kube"), "must be a DNS label", 2),
        (lambda t: t + "nodes:\n  w9: {role: worker}\n", "duplicate key 'nodes'", 13),
        (lambda t: t.replace("  w1: {", "  cp1: {"), "duplicate key 'cp1'", 11),
        (lambda t: t.replace("nodes:\n", "nodes: [\n"), "invalid YAML", None),
        (lambda t: t.replace("  name: talos-kube\n", ""), "cluster.name: required", 1),
    ],
    ids=["not-a-mapping", "unknown-key", "unknown-role", "no-role", "bad-address", "missing-patch",
         "escaping-patch", "http-endpoint", "bad-version", "bad-name", "duplicate-top-level",
         "duplicate-node", "yaml-syntax", "no-cluster-name"],
)
def test_bad_inventory_is_one_line_naming_file_and_line(repo: Path, edit, expected: str, line: int | None) -> None:
    error = error_of(edit(GOOD), repo)
    text = str(error)
    assert "\n" not in text
    assert text.startswith("cluster.yaml:")
    assert expected in text
    if line is not None:
        assert error.line == line
