"""`doit import --talconfig`: a talhelper user moves over, end to end, with talhelper's own example files.

The talconfig, its `@file` patches and talsecret come from talhelper's repository (tests/data/talhelper,
see SOURCES.md); the talenv there is encrypted with talhelper's key, so the user's plaintext
talenv.yaml is written here, and the talsecret is the user's bundle encrypted with the user's key.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.sops.identities import write_identity
from tests.adopt.helpers import (
    assert_identity,
    assert_no_plaintext,
    checked_and_verified,
    key_file,
    stability_bundle,
    talosconfig_verifies,
)
from tests.conftest import PROJECT, Repo

TALHELPER = PROJECT / "tests" / "data" / "talhelper" / "example"
UNCONVERTED = ("worker.ingressFirewall", "worker.schematic", "nodes[kmaster1].extensionServices",
               "nodes[kmaster1].userVolumes", "nodes[kmaster1].volumes", "nodes[kmaster1].ingressFirewall",
               "nodes[kmaster1].machineSpec", "nodes[kmaster1].schematic", "nodes[kmaster1].machineFiles",
               "nodes[kmaster1].nodeAnnotations", "nodes[kmaster1].nodeTaints", "nodes[kmaster1].kernelModules",
               "nodes[kmaster1].nodeLabels.isSecureBootEnabled (talhelper Go template)")
WIREGUARD_VAR = "kmaster1_wg0_wireguard_private_key"


WIREGUARD_KEY = yaml.safe_load((TALHELPER / "talconfig.yaml").read_text())["nodes"][0]["networkInterfaces"][1][
    "wireguard"]["privateKey"]


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def talhelper_folder(repo: Repo, base: Path, bundle: dict) -> Path:
    """The user's talhelper folder: talconfig.yaml, its patches, talenv.yaml, talsecret.sops.yaml."""
    folder = base / "homelab"
    shutil.copytree(TALHELPER, folder)
    (folder / "talenv.yaml").write_text("myDomainName: home.example\n")
    public = write_identity(key_file(repo))  # the key talhelper's .sops.yaml encrypts to
    plain = folder / "talsecret.yaml"
    plain.write_text(yaml.safe_dump(bundle, sort_keys=False))
    made = repo.sops("--encrypt", "--age", public, str(plain))
    assert made.returncode == 0, made.stderr
    (folder / "talsecret.sops.yaml").write_text(made.stdout)
    plain.unlink()
    return folder


def test_talhelper_cluster_moves_over_with_its_identity(fresh: Repo, tmp_path: Path) -> None:
    bundle = stability_bundle()
    folder = talhelper_folder(fresh, tmp_path, bundle)
    # README: the example's intent goes first; the import refuses to overwrite it.
    refused = fresh.doit("import", "--talconfig", str(folder / "talconfig.yaml"), "--talenv",
                         str(folder / "talenv.yaml"))
    assert refused.returncode == 1 and "cluster.yaml: already exists" in output(refused)
    assert fresh.git("status", "--porcelain") == ""
    fresh.git("rm", "-rq", "cluster.yaml", "patches")

    result = fresh.doit("import", "--talconfig", str(folder / "talconfig.yaml"), "--talenv",
                        str(folder / "talenv.yaml"), "--secrets", str(folder / "talsecret.sops.yaml"))
    assert result.returncode == 0, output(result)
    text = output(result)
    for name in UNCONVERTED:
        assert f"not converted: {name}\n" in text + "\n"
    assert f"import: {len(UNCONVERTED)} talconfig field(s) not converted" in text
    assert "remove the plaintext inputs" not in text  # the talsecret was encrypted
    inventory = yaml.safe_load((fresh.path / "cluster.yaml").read_text())
    assert inventory["cluster"]["name"] == "home-cluster"
    assert inventory["vars"] == {"myDomainName": "home.example"}
    assert set(inventory["nodes"]) == {"kmaster1", "kworker1"}
    for node in inventory["nodes"].values():
        for patch in node["patches"]:
            assert (fresh.path / "patches" / patch).is_file()

    # The WireGuard private key is a secret: the patch reads an encrypted variable the user sets once.
    assert f"doit secrets set {WIREGUARD_VAR}" in text
    patch_text = (fresh.path / "patches" / "talhelper-node-kmaster1.yaml").read_text()
    assert f"secrets.{WIREGUARD_VAR}" in patch_text and WIREGUARD_KEY not in patch_text
    unset = fresh.doit()
    assert unset.returncode == 1 and f"doit secrets set {WIREGUARD_VAR}" in output(unset)
    setting = subprocess.run([sys.executable, "-m", "doit", "secrets", "set", WIREGUARD_VAR], cwd=fresh.path,
                             env=fresh.env, input=WIREGUARD_KEY + "\n", capture_output=True, text=True, check=False)
    assert setting.returncode == 0, output(setting)
    promoted = fresh.doit()
    assert promoted.returncode == 0, output(promoted)
    decrypted = fresh.sops("--decrypt", "encrypted/home-cluster-kmaster1.encrypted.yaml")
    assert WIREGUARD_KEY in decrypted.stdout  # Talos gets the key; git only ever holds it encrypted
    fresh.git("add", ".sops.yaml", "cluster.yaml", "patches", "encrypted/vars.encrypted.yaml")
    fresh.git("commit", "-qm", "from talhelper")
    assert fresh.git("status", "--porcelain") == ""
    assert_identity(fresh, bundle, {"encrypted/home-cluster-kmaster1.encrypted.yaml": "controlplane",
                                    "encrypted/home-cluster-kworker1.encrypted.yaml": "worker"})
    assert talosconfig_verifies(fresh, bundle)
    checked_and_verified(fresh)
    assert_no_plaintext(fresh, bundle)

    again = fresh.doit("import", "--talconfig", str(folder / "talconfig.yaml"), "--talenv",
                       str(folder / "talenv.yaml"))
    assert again.returncode == 1 and "--replace" in output(again)


def test_encrypted_talenv_gets_a_clear_message(fresh: Repo) -> None:
    # talhelper's own talenv.yaml is SOPS-encrypted (with talhelper's key).
    fresh.git("rm", "-rq", "cluster.yaml", "patches")
    result = fresh.doit("import", "--talconfig", str(TALHELPER / "talconfig.yaml"), "--talenv",
                        str(TALHELPER / "talenv.yaml"))
    assert result.returncode == 1
    failed = [line for line in output(result).splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "SOPS-encrypted" in failed[0] and "talenv.yaml" in failed[0]
    assert not (fresh.path / "cluster.yaml").exists()
