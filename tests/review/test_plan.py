"""`doit plan`: per node, field by field, what a promotion would change; secrets never shown; writes nothing."""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.review.docdiff import Redactor, diff_documents
from tests.conftest import Repo
from tests.guard.test_guard import edit, keyless


def plan(repo: Repo, *args: str) -> str:
    result = repo.doit("plan", *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    return output


def bundle_secrets(repo: Repo) -> set[str]:
    """Every value of the decrypted secrets bundle (the strings the plan must never print)."""
    result = repo.sops("-d", "encrypted/secrets.encrypted.yaml")
    assert result.returncode == 0, result.stderr
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif value not in (None, "") and len(str(value)) >= 6:
            found.add(str(value))

    walk(yaml.safe_load(result.stdout))
    assert len(found) >= 10
    return found


def test_patch_edit_lists_the_node_and_its_changed_paths(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "cp1.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    edit(patch, "{{ node.name }}", "{{ node.name }}-edge")
    before = promoted.artefacts()
    output = plan(promoted)
    assert "cp1: patches/cp1.yaml changed" in output
    assert "~ machine.install.wipe: false -> true" in output
    assert "~ machine.network.hostname: cp1 -> cp1-edge" in output
    assert "1 of 6 nodes would change (cp1)" in output
    assert "cp2:" not in output
    # It wrote nothing and encrypted nothing.
    assert promoted.artefacts() == before
    assert not (promoted.path / "rendered").exists()
    assert promoted.git("status", "--porcelain").split() == ["M", "patches/cp1.yaml"]
    assert not [run for run in promoted.sops_runs() if run.startswith("--encrypt")]


def test_no_change_is_an_empty_plan(promoted: Repo) -> None:
    output = plan(promoted)
    assert "0 of 6 nodes would change" in output
    assert promoted.sops_runs() == []  # deciding that needs no decryption


def test_no_secret_of_the_bundle_in_either_format(promoted: Repo) -> None:
    """A role change touches every CA key and token of the node; a patch adds a registry password."""
    edit(promoted.path / "cluster.yaml", "cp3: {role: controlplane", "cp3: {role: worker")
    (promoted.path / "patches" / "registry.yaml").write_text(
        "machine:\n  registries:\n    config:\n      ghcr.io:\n        auth:\n          password: hunter2-s3cret\n")
    edit(promoted.path / "cluster.yaml", "  w1: {", "  w1: {patches: [w1.yaml, registry.yaml], ")
    secrets = bundle_secrets(promoted) | {"hunter2-s3cret"}
    text = plan(promoted)
    markdown = plan(promoted, "--format", "markdown")
    for output in (text, markdown):
        assert "cp3" in output and "w1" in output
        assert "(secret changed)" in output or "(secret)" in output
        leaked = [secret for secret in secrets if secret in output]
        assert not leaked, f"{len(leaked)} secret values printed"
    assert "+ machine.registries.config.ghcr.io.auth.password: (secret)" in text
    assert "~ machine.type: controlplane -> worker" in text
    assert markdown.startswith("### talos-promote plan: 2 of 6 nodes would change")
    assert "```diff\n" in markdown


def test_markdown_to_a_file(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "w2.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    target = promoted.home / "plan.md"
    plan(promoted, "--format", "markdown", "--output", str(target))
    body = target.read_text()
    assert "#### `w2`: patches/w2.yaml changed" in body
    assert "~ machine.install.wipe: false -> true" in body


def test_new_and_removed_nodes(promoted: Repo) -> None:
    edit(promoted.path / "cluster.yaml", "  w3: {role: worker, address: 192.168.1.113}\n",
         "  w4: {role: worker, address: 192.168.1.114}\n")
    output = plan(promoted)
    assert "w4: new -> new artefact encrypted/talos-kube-w4.encrypted.yaml" in output
    assert "w3: no longer in cluster.yaml -> encrypted/talos-kube-w3.encrypted.yaml would be removed" in output


def test_plan_without_a_key_is_one_clear_line(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "w2.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    result = promoted.doit("plan", env=keyless(promoted))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    failures = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 1 and "encrypted/" in failures[0], output


# --- the diff itself ----------------------------------------------------------------------------


def test_diff_aligns_lists_and_redacts() -> None:
    old = [{"machine": {"certSANs": ["a", "b"], "token": "t0ken-value", "ca": {"key": "k1"}, "x": 1}}]
    new = [{"machine": {"certSANs": ["z", "a", "b"], "token": "t0ken-other", "ca": {"key": "k2"}, "y": True}}]
    redactor = Redactor({"t0ken-value"})
    lines = [redactor.line(change) for change in diff_documents(old, new)]
    assert "+ machine.certSANs[0]: z" in lines  # an insertion, not three changes
    assert "~ machine.token: (secret changed)" in lines
    assert "~ machine.ca.key: (secret changed)" in lines
    assert "- machine.x: 1" in lines and "+ machine.y: true" in lines
    assert not [line for line in lines if "k1" in line or "k2" in line or "t0ken" in line]


def test_redactor_hides_known_secrets_and_private_keys_anywhere() -> None:
    redactor = Redactor({"supersecretvalue"})
    assert redactor.show("prefix supersecretvalue suffix") == "(secret)"
    assert redactor.show("-----BEGIN EC PRIVATE KEY-----\nabc\n") == "(secret)"
    assert redactor.show("LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t") == "(secret)"
    assert redactor.show("line one\nline two\n") == "(2 lines of text)"
    assert redactor.show("plain") == "plain"


def test_the_format_choices_doit_offers_are_the_plan_formats() -> None:
    # ci_tasks lists them without importing plan (dodo.py imports ci_tasks on every run).
    from pipeline.review import plan
    from pipeline.wiring import ci_tasks

    assert list(ci_tasks.PLAN_FORMATS) == list(plan.FORMATS)
