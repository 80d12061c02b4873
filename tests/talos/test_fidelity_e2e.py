"""Issue 16 end to end: real patches read and written as Talos and sops (go-yaml v3) read them, decoded
strictly per Talos version, refused as Talos refuses them, with the patch file:line in every error.

Everything runs the installed `doit` in a real repo with real sops and a real age key (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.talos.yaml import load_documents
from tests.conftest import Repo

ARTEFACT = "encrypted/talos-kube-{node}.encrypted.yaml"


def _write(repo: Repo, name: str, text: str) -> None:
    (repo.path / "patches" / name).write_text(text)


def _add_patch(repo: Repo, name: str, role: str = "worker") -> None:
    cluster = repo.path / "cluster.yaml"
    text = cluster.read_text()
    assert f"  {role}: []" in text
    cluster.write_text(text.replace(f"  {role}: []", f"  {role}: [{name}]"))


def _decrypted_json(repo: Repo, node: str) -> list[Any]:
    """The artefact as the stock sops binary (go-yaml v3) types it: --output-type json shows every type.

    sops writes only the first YAML document as JSON (the v1alpha1 one, which is what these tests look at).
    """
    result = repo.sops("--decrypt", "--output-type", "json", ARTEFACT.format(node=node))
    assert result.returncode == 0, result.stderr
    # sops writes one JSON document per YAML document, one after another.
    decoder = json.JSONDecoder()
    text, documents, index = result.stdout, [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        value, index = decoder.raw_decode(text, index)
        documents.append(value)
    return documents


def _output(result: Any) -> str:
    return result.stdout + result.stderr


SCALARS_PATCH = """\
machine:
  nodeLabels:
    rack: 1e3
    zone: no
    tier: 0x1F
  files:
    - content: |
        [plugins]
      permissions: 0o644
      path: /var/cri/conf.d/extra.toml
      op: create
  sysctls:
    net.core.somaxconn: 65535
    vm.overcommit_memory: 1_0
  kubelet:
    extraArgs:
      rotate-server-certificates: true
      max-pods: 250
"""


def test_go_yaml_scalars_survive_the_whole_pipeline(promoted: Repo) -> None:
    """`permissions: 0o644` is 420 and a label `1e3` stays "1e3" in the artefact, as stock sops decrypts it;
    string fields are written as talosctl writes them (quoted); verify and a second doit are clean."""
    _write(promoted, "scalars.yaml", SCALARS_PATCH)
    _add_patch(promoted, "scalars.yaml")
    result = promoted.doit()
    assert result.returncode == 0, _output(result)

    machine = _decrypted_json(promoted, "w1")[0]["machine"]
    assert machine["files"][0]["permissions"] == 420  # Go's 0o644, not the string "0o644"
    assert machine["nodeLabels"] == {"rack": "1e3", "zone": "no", "tier": "0x1F"}  # the user's spelling
    assert machine["sysctls"] == {"net.core.somaxconn": "65535", "vm.overcommit_memory": "1_0"}
    assert machine["kubelet"]["extraArgs"] == {"rotate-server-certificates": "true", "max-pods": "250"}

    text = promoted.sops("--decrypt", ARTEFACT.format(node="w1")).stdout
    assert 'net.core.somaxconn: "65535"' in text  # talosctl's spelling
    assert 'rotate-server-certificates: "true"' in text
    assert "permissions: 420" in text

    verify = promoted.doit("verify")
    assert verify.returncode == 0, _output(verify)
    again = promoted.doit()
    assert again.returncode == 0 and "promoted 0 of 6" in again.stdout, _output(again)


def test_drill_agrees_with_the_render_on_go_typed_values(promoted: Repo, tmp_path: Path) -> None:
    """The `permissions: 0o644` drift case: the recovery drill reads artefacts as sops and Talos do."""
    _write(promoted, "scalars.yaml", SCALARS_PATCH)
    _add_patch(promoted, "scalars.yaml")
    assert promoted.doit().returncode == 0
    promoted.git("add", "-A")
    promoted.git("commit", "-qm", "scalars")
    key = promoted.home / ".config" / "sops" / "age" / "keys.txt"
    drill = promoted.doit("drill", "--key", str(key))
    assert drill.returncode == 0, _output(drill)
    assert "drifted" not in drill.stdout


@pytest.mark.parametrize(
    ("patch", "needle", "line"),
    [
        ("machine:\n  files:\n    - content: x\n      path: /var/a\n      op: create\n      mountPath: /a\n",
         "machine.files[0].mountPath: unknown keys found during decoding", 6),
        ("cluster:\n  network:\n    proxy:\n      disabled: true\n",
         "cluster.network.proxy: unknown keys found during decoding", 3),
        ("machine:\n  kubelet:\n    extraArgs:\n      a: b\n  sysctl:\n    x: 1\n",
         "machine.sysctl: unknown keys found during decoding", 5),
    ],
    ids=["files-mountPath", "cluster-network-proxy", "typo"],
)
def test_unknown_keys_are_refused_naming_the_patch_line(promoted: Repo, patch: str, needle: str, line: int) -> None:
    before = promoted.artefacts()
    _write(promoted, "bad.yaml", patch)
    _add_patch(promoted, "bad.yaml")
    result = promoted.doit()
    output = _output(result)
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert f"patches/bad.yaml:{line}: " in output and needle in output, output
    assert promoted.artefacts() == before


V112_KINDS = ("HostnameConfig", "LinkAliasConfig", "BondConfig", "DHCPv4Config", "VLANConfig", "Layer2VIPConfig")


@pytest.mark.parametrize("kind", V112_KINDS)
def test_kinds_talos_1_11_does_not_register_are_refused(promoted: Repo, kind: str) -> None:
    before = promoted.artefacts()
    _write(promoted, "kind.yaml", f"# a newer document\napiVersion: v1alpha1\nkind: {kind}\nname: x\n")
    _add_patch(promoted, "kind.yaml")
    result = promoted.doit()
    output = _output(result)
    assert result.returncode == 1, output
    assert f'"{kind}" "v1alpha1": not registered (Talos v1.11)' in output, output
    assert "patches/kind.yaml:2: " in output, output
    assert promoted.artefacts() == before


def test_post_merge_errors_name_the_patch_line(promoted: Repo) -> None:
    """Duplicate inline manifest name: the patch that brought the second one, at its line."""
    _write(promoted, "m1.yaml", "cluster:\n  inlineManifests:\n    - name: cni\n      contents: a\n")
    _write(promoted, "m2.yaml", "# second\ncluster:\n  inlineManifests:\n    - name: cni\n      contents: b\n")
    cluster = promoted.path / "cluster.yaml"
    cluster.write_text(cluster.read_text().replace("  controlplane: []", "  controlplane: [m1.yaml, m2.yaml]"))
    result = promoted.doit()
    output = _output(result)
    assert result.returncode == 1, output
    assert "patches/m2.yaml:4: " in output and "duplicate inline manifest name" in output, output


def test_etcd_on_a_worker_names_the_patch_line(promoted: Repo) -> None:
    _write(promoted, "etcd.yaml", "cluster:\n  etcd:\n    extraArgs:\n      quota-backend-bytes: 1\n")
    _add_patch(promoted, "etcd.yaml", role="worker")
    result = promoted.doit()
    output = _output(result)
    assert result.returncode == 1, output
    assert "patches/etcd.yaml:2: " in output and "etcd config is only allowed on control plane" in output, output


def test_continue_and_parallel_runs_exit_1_on_bad_input(promoted: Repo) -> None:
    _write(promoted, "bad.yaml", "cluster:\n  network:\n    proxy:\n      disabled: true\n")
    _add_patch(promoted, "bad.yaml")
    # Make every node's intent change, so the run has work after the failing render.
    resolvers = promoted.path / "patches" / "resolvers.yaml"
    resolvers.write_text(resolvers.read_text().replace("9.9.9.9", "8.8.4.4"))
    for args in (("--continue",), ("-n", "2"), ("-n", "2", "--continue")):
        result = promoted.doit(*args)
        output = _output(result)
        assert result.returncode == 1, (args, output)
        assert "Traceback" not in output and "patches/bad.yaml:3:" in output, (args, output)


def _on_version(repo: Repo, version: str) -> None:
    """Make the example a cluster of another Talos version (a v1.12+ base carries HostnameConfig auto: stable).

    The example's node patches set machine.network.hostname, which Talos v1.12+ refuses next to that
    document; they set the hostname the v1.12 way instead (HostnameConfig, auto: off).
    """
    cluster = repo.path / "cluster.yaml"
    cluster.write_text(cluster.read_text().replace("talosVersion: v1.11.5", f"talosVersion: {version}"))
    for node in ("cp1", "cp2", "cp3", "w1", "w2", "w3"):
        path = repo.path / "patches" / f"{node}.yaml"
        text = path.read_text().replace("    hostname: {{ node.name }}\n", "")
        hostname = "---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: off\nhostname: {{ node.name }}\n"
        path.write_text(text + hostname)


@pytest.fixture(scope="module", params=["v1.12.0", "v1.13.0"])
def newer_template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Repo:
    from tests.conftest import new_repo

    repo = new_repo(tmp_path_factory.mktemp(f"talos-{request.param}"))
    _on_version(repo, request.param)
    result = repo.doit()
    assert result.returncode == 0, _output(result)
    repo.git("add", "-A")
    repo.git("commit", "-qm", "promote")
    return repo


@pytest.fixture
def newer(newer_template: Repo, tmp_path: Path) -> Repo:
    from tests.conftest import copy_repo

    return copy_repo(newer_template, tmp_path)


def test_newer_versions_promote_and_verify(newer: Repo) -> None:
    documents = load_documents(newer.sops("--decrypt", ARTEFACT.format(node="cp1")).stdout, "cp1")
    hostname = [doc for doc in documents if doc.get("kind") == "HostnameConfig"]
    assert hostname == [{"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "off", "hostname": "cp1"}]
    result = newer.doit("verify")
    assert result.returncode == 0, _output(result)


@pytest.mark.parametrize(
    ("patch", "needle", "line"),
    [
        ("machine:\n  network:\n    hostname: legacy\n",
         "static hostname is already set in v1alpha1 config", 3),
        ("machine:\n  features:\n    stableHostname: true\n",
         "stable hostname is already set in v1alpha1 config", 3),
    ],
    ids=["legacy-hostname", "stableHostname"],
)
def test_hostname_rules_on_newer_bases(newer: Repo, patch: str, needle: str, line: int) -> None:
    """Talos v1.12+ (pkg/machinery/config/types/network/hostname.go): one hostname source only."""
    before = newer.artefacts()
    _write(newer, "host.yaml", patch)
    _add_patch(newer, "host.yaml")
    result = newer.doit()
    output = _output(result)
    assert result.returncode == 1, output
    assert needle in output, output
    assert f"patches/host.yaml:{line}: " in output or "patches/w1.yaml" in output, output
    assert newer.artefacts() == before


def test_hostname_only_patch_onto_auto_stable_is_refused(newer: Repo) -> None:
    """A HostnameConfig patch that sets only `hostname:` merges into the base's `auto: stable`: Talos refuses
    both set at once (pkg/machinery/config/types/network/hostname.go, Validate)."""
    before = newer.artefacts()
    path = newer.path / "patches" / "w1.yaml"
    text = path.read_text()
    assert "auto: off\n" in text
    path.write_text(text.replace("auto: off\n", ""))
    result = newer.doit()
    output = _output(result)
    assert result.returncode == 1, output
    line = text.replace("auto: off\n", "").splitlines().index("hostname: {{ node.name }}") + 1
    assert f"patches/w1.yaml:{line}: " in output, output
    assert "HostnameConfig: hostname: 'auto' and 'hostname' cannot be set at the same time" in output, output
    assert newer.artefacts() == before


def test_rendered_text_reads_back_to_the_rendered_documents(promoted: Repo) -> None:
    """What the pipeline writes is what go-yaml reads (sops decrypts to the same documents)."""
    _write(promoted, "scalars.yaml", SCALARS_PATCH)
    _add_patch(promoted, "scalars.yaml")
    assert promoted.doit().returncode == 0
    text = promoted.sops("--decrypt", ARTEFACT.format(node="w2")).stdout
    json_docs = _decrypted_json(promoted, "w2")
    assert load_documents(text, "w2")[0] == json_docs[0]


def test_watch_reports_exit_1_for_bad_input(promoted: Repo) -> None:
    """`doit watch`: a rebuild refused for a bad patch fails with exit 1 (bad input), naming the line."""
    from tests.wiring.test_watch import Watching

    watcher = Watching(promoted)
    try:
        watcher.ready()
        _write(promoted, "w1.yaml", (promoted.path / "patches" / "w1.yaml").read_text()
               + "cluster:\n  network:\n    proxy:\n      disabled: true\n")
        watcher.rebuilt(2, "failed", timeout=20)
        failed = [line for line in watcher.output.splitlines() if "rebuild 2 failed" in line]
        assert failed and "(exit 1)" in failed[0], watcher.output
        assert "patches/w1.yaml:" in watcher.output and "cluster.network.proxy" in watcher.output, watcher.output
        assert "Traceback" not in watcher.output
    finally:
        watcher.close()
