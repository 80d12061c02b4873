"""Rendering through the whole pipeline, judged by Talos's published schema and by sops -d."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest
import yaml

from tests.conftest import Repo

NODES = ("cp1", "cp2", "cp3", "w1", "w2", "w3")


def decrypted(repo: Repo, artefact: str) -> list[dict]:
    result = repo.sops("-d", artefact)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def test_every_rendered_node_validates_against_talos_schema(promoted: Repo, fixtures_dir) -> None:
    schema = json.loads((fixtures_dir / "schema" / "v1.11" / "config.schema.json").read_text())
    validator = jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/v1alpha1.Config"})
    for node in NODES:
        config = next(doc for doc in decrypted(promoted, f"encrypted/talos-kube-{node}.encrypted.yaml")
                      if "machine" in doc)
        config.pop("persist", None)  # talosctl emits it; the published schema does not list it
        errors = sorted(error.message for error in validator.iter_errors(config))
        assert errors == [], f"{node}: {errors[:3]}"


def test_delete_an_interface_and_add_a_vlan_through_doit(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "w2.yaml"
    patch.write_text(
        "machine:\n"
        "  network:\n"
        "    hostname: w2\n"
        "    interfaces:\n"
        "      - interface: eth0\n"
        "        addresses: [192.168.1.112/24]\n"
        "      - interface: eth1\n"
        "        dhcp: true\n"
        "---\n"
        "# second document of the same patch file: drop eth0, give eth1 a storage VLAN\n"
        "machine:\n"
        "  network:\n"
        "    interfaces:\n"
        "      - interface: eth0\n"
        "        $patch: delete\n"
        "      - interface: eth1\n"
        "        vlans:\n"
        "          - vlanId: 120\n"
        "            addresses: [10.20.0.12/24]\n"
        "            mtu: 9000\n"
    )
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    config = next(doc for doc in decrypted(promoted, "encrypted/talos-kube-w2.encrypted.yaml") if "machine" in doc)
    assert config["machine"]["network"]["interfaces"] == [
        {"interface": "eth1", "dhcp": True,
         "vlans": [{"vlanId": 120, "addresses": ["10.20.0.12/24"], "mtu": 9000}]},
    ]
    assert config["machine"]["network"]["hostname"] == "w2"
    assert config["machine"]["network"]["nameservers"] == ["1.1.1.1", "9.9.9.9"]


def test_json6902_patch_through_doit(promoted: Repo) -> None:
    (promoted.path / "patches" / "sysctl.yaml").write_text(
        "- op: add\n  path: /machine/sysctls\n  value:\n    net.core.somaxconn: \"65535\"\n")
    cluster = promoted.path / "cluster.yaml"
    cluster.write_text(cluster.read_text().replace("  worker: []", "  worker: [sysctl.yaml]"))
    assert promoted.doit().returncode == 0
    for node in ("w1", "w3"):
        config = decrypted(promoted, f"encrypted/talos-kube-{node}.encrypted.yaml")[0]
        assert config["machine"]["sysctls"] == {"net.core.somaxconn": "65535"}
    assert "sysctls" not in decrypted(promoted, "encrypted/talos-kube-cp1.encrypted.yaml")[0]["machine"]


def test_talosctl_renderer_without_talosctl_is_a_clear_error(promoted: Repo) -> None:
    if shutil.which("talosctl"):
        pytest.skip("talosctl is installed here")
    cluster = promoted.path / "cluster.yaml"
    cluster.write_text(cluster.read_text().replace("\nnodes:\n", "\nrenderer: talosctl\nnodes:\n"))
    before = promoted.artefacts()
    result = promoted.doit()
    assert result.returncode == 1
    assert "talosctl is not on PATH" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert promoted.artefacts() == before
