"""`doit import` from talosctl files, end to end: fresh clone, empty HOME, real sops, real git.

Each test follows the README's "Adopting an existing cluster" section as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.adopt.helpers import (
    assert_identity,
    assert_no_plaintext,
    checked_and_verified,
    decrypt,
    fixture_bundle,
    key_file,
    stability_bundle,
    talosconfig_verifies,
    talosctl_files,
)
from tests.conftest import Repo


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def commit(repo: Repo, message: str) -> None:
    """README: git add .sops.yaml && git commit -m MESSAGE (doit staged the artefacts)."""
    repo.git("add", ".sops.yaml")
    repo.git("commit", "-qm", message)
    assert repo.git("status", "--porcelain") == ""


def test_secrets_bundle_alone_is_adopted_and_every_node_renders_with_it(fresh: Repo, tmp_path: Path) -> None:
    bundle = stability_bundle()
    files = talosctl_files(tmp_path / "talos", bundle)
    # README: cp ~/talos/secrets.yaml . is not needed; the import reads it where it is.
    result = fresh.doit("import", "--secrets", str(files["secrets"]))
    assert result.returncode == 0, output(result)
    text = output(result)
    assert f"now remove the plaintext inputs: rm {files['secrets']}" in text
    assert "encrypted/talosconfig.encrypted.yaml" in text  # made from the imported OS CA
    assert_no_plaintext(fresh, bundle, text)
    ledger = json.loads((fresh.path / "encrypted/ledger.json").read_text())
    assert ledger["adoptions"][0]["deliberate"] == "doit import" and ledger["adoptions"][0]["from"] is None

    fresh.doit(check=True)
    commit(fresh, "adopt the cluster")
    assert_identity(fresh, bundle)
    assert talosconfig_verifies(fresh, bundle)
    assert not talosconfig_verifies(fresh, fixture_bundle())  # the check can fail
    checked_and_verified(fresh)
    assert_no_plaintext(fresh, bundle)


def test_from_config_with_bases_and_talosconfig_keeps_each_one(fresh: Repo, tmp_path: Path) -> None:
    bundle = fixture_bundle()
    files = talosctl_files(tmp_path / "talos", bundle)
    result = fresh.doit("import", "--from-config", str(files["controlplane"]), "--controlplane",
                        str(files["controlplane"]), "--worker", str(files["worker"]), "--talosconfig",
                        str(files["talosconfig"]))
    assert result.returncode == 0, output(result)
    assert output(result).count(str(files["controlplane"])) >= 2  # adopted from it, and named once in rm
    for role in ("controlplane", "worker"):
        assert decrypt(fresh, f"encrypted/{role}.encrypted.yaml") == list(yaml.safe_load_all(files[role].read_text()))
    assert decrypt(fresh, "encrypted/talosconfig.encrypted.yaml")[0] == yaml.safe_load(files["talosconfig"].read_text())
    assert decrypt(fresh, "encrypted/secrets.encrypted.yaml")[0] == bundle

    fresh.doit(check=True)
    commit(fresh, "adopt")
    assert_identity(fresh, bundle)
    assert talosconfig_verifies(fresh, bundle)
    checked_and_verified(fresh)


def test_sops_encrypted_bundle_is_read_and_not_called_plaintext(fresh: Repo, tmp_path: Path) -> None:
    # talhelper's talsecret.sops.yaml: the bundle encrypted with the user's own key, outside the repo.
    bundle = stability_bundle()
    files = talosctl_files(tmp_path / "talos", bundle)
    assert fresh.doit("keygen", "--out", str(tmp_path / "k.txt")).returncode == 0
    key = tmp_path / "k.txt"
    public = next(line.split()[-1] for line in key.read_text().splitlines() if "public key" in line)
    home_key = key_file(fresh)
    home_key.parent.mkdir(parents=True)
    shutil.copy(key, home_key)
    encrypted = tmp_path / "talos" / "talsecret.sops.yaml"
    made = fresh.sops("--encrypt", "--age", public, str(files["secrets"]))
    assert made.returncode == 0, made.stderr
    encrypted.write_text(made.stdout)
    files["secrets"].unlink()

    result = fresh.doit("import", "--secrets", str(encrypted))
    assert result.returncode == 0, output(result)
    assert "remove the plaintext inputs" not in output(result)
    fresh.doit(check=True)
    assert_identity(fresh, bundle)


def test_inputs_of_two_clusters_are_refused_naming_fields_not_values(fresh: Repo, tmp_path: Path) -> None:
    ours, theirs = stability_bundle(), fixture_bundle()
    files = talosctl_files(tmp_path / "ours", ours)
    other = talosctl_files(tmp_path / "theirs", theirs)
    result = fresh.doit("import", "--secrets", str(files["secrets"]), "--controlplane", str(files["controlplane"]),
                        "--worker", str(other["worker"]), "--talosconfig", str(other["talosconfig"]))
    assert result.returncode == 1
    failure = [line for line in output(result).splitlines() if line.startswith("FAILED")]
    assert len(failure) == 1
    line = failure[0]
    print(line)
    assert "not of one cluster" in line
    for name in ("cluster.id", "cluster.token", "machine.token", "machine.ca.crt", "cluster.ca.crt"):
        assert name in line
    assert f"{other['talosconfig']}: contexts.talos-kube.ca;" in line
    assert f"{other['talosconfig']}: contexts.talos-kube.crt is not signed by certs.os" in line
    assert_no_plaintext(fresh, ours, output(result))
    assert_no_plaintext(fresh, theirs, output(result))
    assert not (fresh.path / "encrypted").exists() and not (fresh.path / ".sops.yaml").exists()
    # A base given as the other role is named too.
    swapped = fresh.doit("import", "--secrets", str(files["secrets"]), "--controlplane", str(files["worker"]),
                         "--worker", str(files["worker"]))
    assert swapped.returncode == 1 and "machine.type is 'worker', expected 'controlplane'" in output(swapped)
    alone = fresh.doit("import", "--secrets", str(files["secrets"]), "--controlplane", str(files["controlplane"]))
    assert alone.returncode == 1 and "--controlplane and --worker go together" in output(alone)
    assert not (fresh.path / "encrypted").exists()


def test_existing_bundle_is_refused_and_replace_is_recorded_and_guarded(promoted: Repo, tmp_path: Path) -> None:
    bundle = stability_bundle()
    files = talosctl_files(tmp_path / "talos", bundle)
    before = promoted.artefacts()
    refused = promoted.doit("import", "--secrets", str(files["secrets"]))
    assert refused.returncode == 1
    assert "already holds a secrets bundle" in output(refused) and "--replace" in output(refused)
    assert promoted.artefacts() == before and promoted.git("status", "--porcelain") == ""

    replaced = promoted.doit("import", "--secrets", str(files["secrets"]), "--replace")
    assert replaced.returncode == 0, output(replaced)
    assert "replaced the cluster identity" in output(replaced)
    ledger = json.loads((promoted.path / "encrypted/ledger.json").read_text())
    entry = ledger["adoptions"][-1]
    assert entry["deliberate"] == "doit import --replace"
    assert entry["from"] and entry["from"] != entry["to"]
    promoted.doit(check=True)
    commit(promoted, "replace the identity")
    assert_identity(promoted, bundle)
    assert talosconfig_verifies(promoted, bundle)
    checked_and_verified(promoted)

    # An accidental change afterwards (the bundle re-encrypted by hand) is still refused.
    plain = promoted.sops("--decrypt", "encrypted/secrets.encrypted.yaml").stdout
    argv = [*_sops(promoted), "--encrypt", "--filename-override", "encrypted/secrets.encrypted.yaml",
            "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"]
    again = subprocess.run(argv, input=plain, cwd=promoted.path, env=promoted.env, capture_output=True, text=True,
                           check=True).stdout
    (promoted.path / "encrypted/secrets.encrypted.yaml").write_text(again)
    checked = promoted.doit("check")
    assert checked.returncode == 1 and "no deliberate rotation is recorded" in output(checked)


def _sops(repo: Repo) -> list[str]:
    return [shutil.which("sops", path=str(Path(sys.executable).parent)) or "sops"]


def test_a_bundle_only_git_history_holds_is_still_refused(promoted: Repo, tmp_path: Path) -> None:
    # encrypted/ deleted, the ledger (restored) still records the bundle: importing over it needs --replace.
    files = talosctl_files(tmp_path / "talos", stability_bundle())
    (promoted.path / "encrypted" / "secrets.encrypted.yaml").unlink()
    refused = promoted.doit("import", "--secrets", str(files["secrets"]))
    assert refused.returncode == 1 and "already holds a secrets bundle" in output(refused)
    assert not (promoted.path / "encrypted" / "secrets.encrypted.yaml").exists()
    # With no trace of the bundle at all, the bases it made are still not overwritten silently.
    ledger_path = promoted.path / "encrypted" / "ledger.json"
    record = json.loads(ledger_path.read_text())
    del record["bases"]["secrets"]
    ledger_path.write_text(json.dumps(record))
    bases = promoted.doit("import", "--secrets", str(files["secrets"]))
    assert bases.returncode == 1
    assert "encrypted/controlplane.encrypted.yaml: exists without a secrets bundle" in output(bases)
    nothing = promoted.doit("import")
    assert nothing.returncode == 1 and "import what?" in output(nothing)
