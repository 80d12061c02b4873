"""The promotion path end to end: real doit, real sops, real age keys, real git."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Repo

NODES = ("cp1", "cp2", "cp3", "w1", "w2", "w3")


def decrypt(repo: Repo, artefact: str, env: dict[str, str] | None = None) -> list[dict]:
    result = repo.sops("-d", artefact, env=env)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def v1alpha1(documents: list[dict]) -> dict:
    return next(doc for doc in documents if "machine" in doc)


def test_fresh_clone_with_empty_home_promotes_every_node(fresh: Repo) -> None:
    result = fresh.doit()
    assert result.returncode == 0, result.stderr
    assert "Back it up NOW" in result.stderr  # a new root of trust is announced loudly
    key_file = fresh.home / ".config" / "sops" / "age" / "keys.txt"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for node in NODES:
        config = v1alpha1(decrypt(fresh, f"encrypted/talos-kube-{node}.encrypted.yaml"))
        assert config["machine"]["network"]["hostname"] == node
        interface = config["machine"]["network"]["interfaces"][0]
        assert interface["addresses"][0].startswith("192.168.1.1")
        assert config["machine"]["network"]["nameservers"] == ["1.1.1.1", "9.9.9.9"]  # shared patch
        assert config["machine"]["type"] == ("controlplane" if node.startswith("cp") else "worker")
    for base in ("secrets", "controlplane", "worker", "talosconfig"):
        assert decrypt(fresh, f"encrypted/{base}.encrypted.yaml")


def test_rendered_config_is_base_plus_patches(promoted: Repo) -> None:
    base = v1alpha1(decrypt(promoted, "encrypted/controlplane.encrypted.yaml"))
    node = v1alpha1(decrypt(promoted, "encrypted/talos-kube-cp2.encrypted.yaml"))
    assert node["cluster"] == base["cluster"]
    assert node["machine"]["ca"] == base["machine"]["ca"]
    assert "hostname" not in base["machine"].get("network", {})
    assert node["machine"]["network"]["hostname"] == "cp2"
    assert node["machine"]["time"]["servers"] == ["time.cloudflare.com"]


def test_second_run_is_a_noop(promoted: Repo) -> None:
    before = promoted.artefacts()
    result = promoted.doit()
    assert result.returncode == 0, result.stderr
    assert promoted.sops_runs() == []
    assert promoted.artefacts() == before
    assert promoted.git("status", "--porcelain") == ""


def test_editing_one_patch_rewrites_only_that_artefact(promoted: Repo) -> None:
    before = promoted.artefacts()
    patch = promoted.path / "patches" / "cp1.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    result = promoted.doit()
    assert result.returncode == 0, result.stderr
    after = promoted.artefacts()
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"encrypted/talos-kube-cp1.encrypted.yaml", "encrypted/ledger.json"}
    # One encryption of cp1: in process with the engine (no sops at all), `sops edit` with the binary alone.
    writes = [run for run in promoted.sops_runs() if run.startswith(("--encrypt", "edit"))]
    assert writes == (["edit --input-type"] if os.environ.get("PROMOTE_SOPS_ENGINE") == "binary" else [])
    assert v1alpha1(decrypt(promoted, "encrypted/talos-kube-cp1.encrypted.yaml"))["machine"]["install"]["wipe"]
    staged = set(promoted.git("diff", "--cached", "--name-only").split())
    assert staged == changed
    # and the run after it does nothing
    again = promoted.doit()
    assert again.returncode == 0 and promoted.sops_runs() == []


def test_shared_patch_change_rewrites_every_node_but_a_comment_rewrites_none(promoted: Repo) -> None:
    shared = promoted.path / "patches" / "resolvers.yaml"
    original = shared.read_text()
    before = promoted.artefacts()
    shared.write_text("# a comment that changes nothing\n" + original)
    assert promoted.doit().returncode == 0
    assert promoted.artefacts() == before
    assert not any(run.startswith("--encrypt") for run in promoted.sops_runs())

    shared.write_text(original.replace("9.9.9.9", "8.8.8.8"))
    assert promoted.doit().returncode == 0
    after = promoted.artefacts()
    for node in NODES:
        name = f"encrypted/talos-kube-{node}.encrypted.yaml"
        assert after[name] != before[name]
        assert v1alpha1(decrypt(promoted, name))["machine"]["network"]["nameservers"] == ["1.1.1.1", "8.8.8.8"]
    for base in ("secrets", "controlplane", "worker", "talosconfig"):
        assert after[f"encrypted/{base}.encrypted.yaml"] == before[f"encrypted/{base}.encrypted.yaml"]


def test_fresh_clone_without_doit_db_rewrites_nothing(promoted: Repo, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(promoted.path), str(clone)], check=True)
    repo = Repo(clone, promoted.home, promoted.env)
    before = repo.artefacts()
    assert not list(clone.glob(".doit.db*"))
    result = repo.doit()
    assert result.returncode == 0, result.stderr
    assert repo.artefacts() == before
    assert repo.sops_runs() == []
    assert repo.doit().returncode == 0 and repo.sops_runs() == []


def test_deleting_doit_db_changes_nothing(promoted: Repo) -> None:
    for path in promoted.path.glob(".doit.db*"):
        path.unlink()
    before = promoted.artefacts()
    assert promoted.doit().returncode == 0
    assert promoted.artefacts() == before
    assert promoted.sops_runs() == []


def test_after_a_promotion_no_plaintext_remains_and_only_artefacts_are_staged(fresh: Repo) -> None:
    assert fresh.doit().returncode == 0
    assert not (fresh.path / "rendered").exists()
    status = fresh.git("status", "--porcelain", "--untracked-files=all").splitlines()
    untracked = [line[3:] for line in status if line.startswith("??")]
    assert all(not path.startswith("rendered/") for path in untracked)
    assert untracked == [".sops.yaml"]  # policy for the user to review and commit
    staged = fresh.git("diff", "--cached", "--name-only").split()
    assert staged and all(path.startswith("encrypted/") for path in staged)


def test_keep_leaves_plaintext_private(promoted: Repo) -> None:
    (promoted.path / "patches" / "w2.yaml").write_text(
        (promoted.path / "patches" / "w2.yaml").read_text().replace("{{ vars.prefix }}", "16"))
    assert promoted.doit("keep=1").returncode == 0
    rendered = promoted.path / "rendered"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o700
    plain = rendered / "talos-kube-w2.yaml"
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    assert "192.168.1.112/16" in plain.read_text()
    assert promoted.doit().returncode == 0
    assert not rendered.exists()  # the next promotion purges what was kept


def test_parallel_promotion_records_every_node_and_leaves_only_configs_in_rendered(promoted: Repo) -> None:
    # Workers hand render facts to each other on the rendered file and journal ledger entries
    # per process: all of it must reach the ledger, and nothing but the configs may be left.
    shared = promoted.path / "patches" / "resolvers.yaml"
    shared.write_text(shared.read_text().replace("9.9.9.9", "9.9.9.12"))
    result = promoted.doit("-n", "2", "keep=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "promoted 6 of 6 nodes" in result.stdout
    rendered = promoted.path / "rendered"
    assert sorted(path.name for path in rendered.iterdir()) == [f"talos-kube-{node}.yaml" for node in NODES]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in rendered.iterdir())
    again = promoted.doit()
    assert again.returncode == 0, again.stderr
    assert "promoted 0 of 6 nodes · 6 up to date · 0 sops runs" in again.stdout  # every entry was recorded
    assert promoted.sops_runs() == []


def test_bootstrap_never_regenerates_secrets(promoted: Repo) -> None:
    secrets = promoted.path / "encrypted" / "secrets.encrypted.yaml"
    before = secrets.read_bytes()
    (promoted.path / "encrypted" / "worker.encrypted.yaml").unlink()
    result = promoted.doit()
    assert result.returncode == 0, result.stderr
    assert secrets.read_bytes() == before
    assert (promoted.path / "encrypted" / "worker.encrypted.yaml").is_file()
    # the regenerated base comes from the same bundle: worker nodes keep their identity
    cp = v1alpha1(decrypt(promoted, "encrypted/controlplane.encrypted.yaml"))
    worker = v1alpha1(decrypt(promoted, "encrypted/worker.encrypted.yaml"))
    assert worker["cluster"]["secret"] == cp["cluster"]["secret"]
    assert promoted.doit("bootstrap").returncode == 0
    assert secrets.read_bytes() == before


def test_age_keygen_key_works_like_ours(fresh: Repo) -> None:
    if not shutil.which("age-keygen"):
        pytest.skip("age-keygen is not installed (apt-get install age)")
    key_dir = fresh.home / ".config" / "sops" / "age"
    key_dir.mkdir(parents=True)
    subprocess.run(["age-keygen", "-o", str(key_dir / "keys.txt")], check=True, capture_output=True)
    result = fresh.doit()
    assert result.returncode == 0, result.stderr
    assert "Back it up NOW" not in result.stderr  # the user's key was used, none was made
    public = (key_dir / "keys.txt").read_text().split("public key: ")[1].split()[0]
    assert public in (fresh.path / ".sops.yaml").read_text()
    assert v1alpha1(decrypt(fresh, "encrypted/talos-kube-w1.encrypted.yaml"))["machine"]["type"] == "worker"


def test_not_a_git_repository_promotes_and_says_so(fresh: Repo) -> None:
    shutil.rmtree(fresh.path / ".git")
    result = fresh.doit()
    assert result.returncode == 0, result.stderr
    assert "not a git repository" in result.stdout
    assert (fresh.path / "encrypted" / "talos-kube-cp1.encrypted.yaml").is_file()


def test_changing_the_endpoint_regenerates_bases_from_the_same_secrets(promoted: Repo) -> None:
    before = promoted.artefacts()
    cluster = promoted.path / "cluster.yaml"
    cluster.write_text(cluster.read_text().replace("https://192.168.1.100:6443", "https://10.0.0.10:6443"))
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    after = promoted.artefacts()
    assert after["encrypted/secrets.encrypted.yaml"] == before["encrypted/secrets.encrypted.yaml"]
    assert after["encrypted/controlplane.encrypted.yaml"] != before["encrypted/controlplane.encrypted.yaml"]
    for node in NODES:
        config = v1alpha1(decrypt(promoted, f"encrypted/talos-kube-{node}.encrypted.yaml"))
        assert config["cluster"]["controlPlane"]["endpoint"] == "https://10.0.0.10:6443"
    assert "base config changed" in result.stdout
    assert promoted.doit().returncode == 0 and promoted.sops_runs() == []


def test_removing_a_node_removes_its_artefact_and_stages_the_deletion(promoted: Repo) -> None:
    cluster = promoted.path / "cluster.yaml"
    cluster.write_text(cluster.read_text().replace("  w3: {role: worker, address: 192.168.1.113}\n", ""))
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (promoted.path / "encrypted" / "talos-kube-w3.encrypted.yaml").exists()
    assert "removed encrypted/talos-kube-w3.encrypted.yaml" in result.stdout
    staged = promoted.git("diff", "--cached", "--name-status").splitlines()
    assert "D\tencrypted/talos-kube-w3.encrypted.yaml" in staged
    assert "w3" not in (promoted.path / "encrypted" / "ledger.json").read_text()
