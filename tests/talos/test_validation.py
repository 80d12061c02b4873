"""Tests of pipeline.talos.validation, plus Talos's JSON schema as a cross-check of a patched base config."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.errors import PipelineError
from pipeline.talos.patching import apply_patches, load_documents, load_patch
from pipeline.talos.validation import validate_machine_config

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "talos-fixtures"
STABILITY = FIXTURES / "stability" / "v1.11"
SCHEMA = FIXTURES / "schema" / "v1.11" / "config.schema.json"


def good(machine_type: str = "controlplane") -> list[dict[str, Any]]:
    control_plane = machine_type != "worker"
    cluster: dict[str, Any] = {
        "controlPlane": {"endpoint": "https://cp.example:6443"},
        "ca": {"crt": "CRT", "key": "KEY" if control_plane else ""},
        "inlineManifests": [{"name": "a", "contents": "x"}, {"name": "b", "contents": "y"}],
    }
    if control_plane:
        cluster["etcd"] = {"ca": {"crt": "C", "key": "K"}}
    return [
        {
            "version": "v1alpha1",
            "debug": False,
            "persist": True,
            "machine": {
                "type": machine_type,
                "ca": {"crt": "CRT", "key": "KEY" if control_plane else ""},
                "install": {"disk": "/dev/sda"},
            },
            "cluster": cluster,
        },
        {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "n1"},
    ]


def fails(documents: list[dict[str, Any]], field: str) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        validate_machine_config(documents, "node n1")
    assert caught.value.path == "node n1"
    assert field in caught.value.message
    return caught.value


@pytest.mark.parametrize("machine_type", ["controlplane", "init", "worker"])
def test_good_config_passes(machine_type: str) -> None:
    validate_machine_config(good(machine_type), "node n1")


def test_disk_selector_is_enough() -> None:
    docs = good()
    docs[0]["machine"]["install"] = {"diskSelector": {"size": ">= 100GB"}}
    validate_machine_config(docs, "node n1")


def test_missing_v1alpha1_document() -> None:
    fails([{"apiVersion": "v1alpha1", "kind": "HostnameConfig"}], "v1alpha1 document")


@pytest.mark.parametrize("section", ["machine", "cluster"])
def test_machine_and_cluster_sections_required(section: str) -> None:
    docs = good()
    docs[0][section] = "nope"
    fails(docs, f"{section}: required section")
    del docs[0][section]
    fails(docs, f"{section}: required section")


@pytest.mark.parametrize("value", [None, "", "master", 1])
def test_machine_type(value: Any) -> None:
    docs = good()
    docs[0]["machine"]["type"] = value
    fails(docs, "machine.type")


@pytest.mark.parametrize(
    "endpoint",
    [None, "", "http://cp:6443", "https://", "https://:6443", "cp.example:6443", "https://cp:notaport", "https://c p"],
)
def test_control_plane_endpoint(endpoint: Any) -> None:
    docs = good()
    docs[0]["cluster"]["controlPlane"]["endpoint"] = endpoint
    fails(docs, "cluster.controlPlane.endpoint")


@pytest.mark.parametrize("machine_type", ["controlplane", "init"])
def test_control_plane_needs_machine_ca_key(machine_type: str) -> None:
    docs = good(machine_type)
    docs[0]["machine"]["ca"]["key"] = ""
    fails(docs, "machine.ca.key")
    del docs[0]["machine"]["ca"]
    fails(docs, "machine.ca.key")


def test_worker_must_not_hold_machine_ca_key() -> None:
    docs = good("worker")
    docs[0]["machine"]["ca"]["key"] = "KEY"
    fails(docs, "machine.ca.key")


def test_worker_must_not_hold_cluster_ca_key() -> None:
    docs = good("worker")
    docs[0]["cluster"]["ca"]["key"] = "KEY"
    fails(docs, "cluster.ca.key")


def test_worker_must_not_have_etcd() -> None:
    docs = good("worker")
    docs[0]["cluster"]["etcd"] = {}
    fails(docs, "cluster.etcd")


@pytest.mark.parametrize("install", [None, {}, {"disk": ""}, {"wipe": False}, {"diskSelector": {}}])
def test_install_disk_required(install: Any) -> None:
    docs = good()
    docs[0]["machine"]["install"] = install
    error = fails(docs, "machine.install.disk: install disk or diskSelector is required")
    assert str(error).startswith("node n1: ")


def test_inline_manifest_names_unique() -> None:
    docs = good()
    docs[0]["cluster"]["inlineManifests"].append({"name": "a", "contents": "z"})
    fails(docs, "cluster.inlineManifests[2].name: duplicate inline manifest name 'a'")


@pytest.mark.parametrize("name", [None, "", "  "])
def test_inline_manifest_names_non_empty(name: Any) -> None:
    docs = good()
    docs[0]["cluster"]["inlineManifests"][0]["name"] = name
    fails(docs, "cluster.inlineManifests[0].name")


def test_persist_must_not_be_false() -> None:
    docs = good()
    docs[0]["persist"] = False
    fails(docs, "persist")


def test_unknown_top_level_key() -> None:
    docs = good()
    docs[0]["machines"] = {}
    fails(docs, "machines: unknown top-level key")


def test_version_must_be_v1alpha1() -> None:
    docs = good()
    docs[0]["version"] = "v2"
    fails(docs, "version")


def test_all_problems_reported_at_once() -> None:
    docs = good("worker")
    docs[0]["machine"]["install"] = {}
    docs[0]["cluster"]["ca"]["key"] = "KEY"
    error = fails(docs, "machine.install.disk")
    assert "cluster.ca.key" in error.message
    assert "\n" not in str(error)


def test_validation_does_not_mutate() -> None:
    docs = good()
    before = copy.deepcopy(docs)
    validate_machine_config(docs, "node n1")
    assert docs == before


# --- the stability base configs, patched, against Talos's published JSON schema


def _schema_validator() -> jsonschema.Draft202012Validator:
    assert SCHEMA.is_file(), f"Talos schema missing: {SCHEMA}"
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    root = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/v1alpha1.Config"}
    jsonschema.Draft202012Validator.check_schema(root)
    return jsonschema.Draft202012Validator(root)


def _patched_base(role: str) -> list[dict[str, Any]]:
    path = STABILITY / f"base-{role}.yaml"
    assert path.is_file(), f"Talos stability fixture missing: {path}"
    base = load_documents(path.read_text(encoding="utf-8"), str(path))
    patch = load_patch("machine:\n  install:\n    disk: /dev/sda\n", "patches/install-disk.yaml")
    return apply_patches(base, [patch])


def _schema_view(doc: dict[str, Any]) -> dict[str, Any]:
    # The published schema lacks `persist`, which talosctl still emits (README quirk).
    return {key: value for key, value in doc.items() if key != "persist"}


@pytest.mark.parametrize("role", ["controlplane", "worker"])
def test_patched_stability_base_passes_schema_and_validation(role: str) -> None:
    documents = _patched_base(role)
    assert documents[0]["machine"]["install"] == {"wipe": False, "disk": "/dev/sda"}
    errors = sorted(_schema_validator().iter_errors(_schema_view(documents[0])), key=str)
    assert not errors, [f"{list(error.absolute_path)}: {error.message}" for error in errors]
    validate_machine_config(documents, f"base-{role}")


def test_unpatched_stability_base_fails_only_on_install_disk() -> None:
    base = load_documents((STABILITY / "base-controlplane.yaml").read_text(encoding="utf-8"), "base")
    error = fails(base, "machine.install.disk")
    assert ";" not in error.message


def test_schema_harness_rejects_bad_documents() -> None:
    # The harness must be able to fail, or the passing test above proves nothing.
    validator = _schema_validator()
    documents = _patched_base("controlplane")
    bad_key = copy.deepcopy(_schema_view(documents[0]))
    bad_key["machine"]["instal"] = {"disk": "/dev/sda"}
    assert list(validator.iter_errors(bad_key))
    bad_type = copy.deepcopy(_schema_view(documents[0]))
    bad_type["machine"]["install"]["disk"] = 42
    assert list(validator.iter_errors(bad_type))
    with_persist = copy.deepcopy(documents[0])
    assert list(validator.iter_errors(with_persist)), "schema quirk changed: persist is now accepted"
