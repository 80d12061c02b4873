"""A repository made by the seed's manual procedure (sections 2.2 and 7.1) adopts in place.

The repository is built exactly as the seed prints it: its `.sops.yaml` text (with the test's
public key), its `.gitignore`, and its `sops --encrypt` commands run by a shell. Then the README's
"Adopting an existing cluster" steps for it: add the pipeline, `doit` (reports what `.sops.yaml`
lacks), `doit import --adopt-rules`, `doit`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.sops.identities import write_identity
from pipeline.talos.baseconfig import dump_documents, generate_base
from tests.adopt.helpers import (
    EXAMPLE,
    NODES,
    assert_identity,
    assert_no_plaintext,
    checked_and_verified,
    decrypt,
    key_file,
    stability_bundle,
    talosconfig_verifies,
)
from tests.conftest import PROJECT, Repo, _clean_env

SEED = PROJECT.parent / "shared" / "seed" / "kubernetes-homelab-part-2-sops-and-age.md"
BASES = ("encrypted/secrets.encrypted.yaml", "encrypted/controlplane.encrypted.yaml",
         "encrypted/worker.encrypted.yaml")


def seed_block(heading: str, language: str, index: int = 0) -> str:
    """The ``index``-th fenced block of ``language`` in the seed's section ``heading``, verbatim."""
    text = SEED.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)[index]


def seed_repository(base: Path) -> tuple[Repo, dict]:
    """The seed's sections 2.2 and 7.1, step by step, plus the pipeline and a cluster.yaml."""
    path, home = base / "repo", base / "home"
    path.mkdir(parents=True)
    home.mkdir()
    repo = Repo(path, home, _clean_env(home, base / "sops.log"))
    repo.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{repo.env.get('PATH', '')}"
    repo.git("init", "-q", "-b", "main")

    # 2.2: the age key pair (age-keygen when installed; else the pipeline's keygen writes the same format).
    keys = key_file(repo)
    keys.parent.mkdir(parents=True)
    if shutil.which("age-keygen"):
        subprocess.run(["age-keygen", "-o", str(keys)], env=repo.env, check=True, capture_output=True)
    else:
        write_identity(keys)
    public = re.search(r"age1[0-9a-z]+", keys.read_text()).group(0)  # type: ignore[union-attr]
    (path / ".sops.yaml").write_text(seed_block("## 2.2 Setup", "yaml").replace("age1replace-with-your-public-key",
                                                                                 public))
    (path / ".gitignore").write_text(seed_block("## 2.2 Setup", "gitignore"))

    # talosctl gen secrets / gen config output, where 7.1 expects it.
    bundle = stability_bundle()
    (path / "secrets.yaml").write_text(yaml.safe_dump(bundle, sort_keys=False))
    (path / "rendered").mkdir()
    for role in ("controlplane", "worker"):
        (path / "rendered" / f"{role}.yaml").write_text(dump_documents(generate_base(role, bundle, EXAMPLE)))
    (path / "encrypted").mkdir()
    # 7.1, run by a shell exactly as printed.
    for line in seed_block("### 7.1 Encrypting rendered outputs", "bash").splitlines():
        if line.strip() and not line.startswith("#"):
            subprocess.run(["sh", "-c", line], cwd=path, env=repo.env, check=True, capture_output=True)
    # 7.2's discipline: plaintext removed once promoted.
    (path / "secrets.yaml").unlink()
    shutil.rmtree(path / "rendered")
    # patches/ per node (the seed's 3.1 layout).
    shutil.copytree(PROJECT / "patches", path / "patches")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "the seed's manual layout")
    return repo, bundle


def add_pipeline(repo: Repo) -> None:
    """README: cp dodo.py pyproject.toml; cat .gitignore >> .gitignore; $EDITOR cluster.yaml (the seed's nodes)."""
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy2(PROJECT / name, repo.path / name)
    with (repo.path / ".gitignore").open("a") as handle:
        handle.write((PROJECT / ".gitignore").read_text())
    shutil.copy2(PROJECT / "cluster.yaml", repo.path / "cluster.yaml")


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(".sops.yaml: ")]


def test_seed_repository_adopts_in_place(tmp_path: Path) -> None:
    repo, bundle = seed_repository(tmp_path)
    seeded = repo.artefacts()
    assert sorted(seeded) == sorted(BASES)
    before = {artefact: decrypt(repo, artefact) for artefact in BASES}

    add_pipeline(repo)

    first = repo.doit()
    assert first.returncode == 1
    lines = problem_lines(first)
    assert len(lines) == 3, output(first)
    assert "no creation rule matches the talosconfig" in lines[0]
    assert "no creation rule matches the per-node artefacts (encrypted/talos-kube-cp1.encrypted.yaml and 5 more)" \
        in lines[1]
    assert "leaves aescbcEncryptionSecret, bootstraptoken, password, auth, identityToken, privateKey, passphrase, " \
           "apiToken in plaintext" in lines[2]
    assert "doit import --adopt-rules" in first.stdout + first.stderr
    assert repo.artefacts() == seeded  # nothing written: the bundle and bases are byte-identical

    adopted = repo.doit("import", "--adopt-rules")
    assert adopted.returncode == 0, output(adopted)
    text = output(adopted)
    assert "--- .sops.yaml (yours)" in text and "+++ .sops.yaml (generated)" in text
    assert "-    encrypted_regex: '(^token|crt|key|id|secret|secretboxEncryptionSecret)$'" in text
    after_rules = repo.artefacts()
    # The bundle's rule encrypts the same way: untouched. The bases: re-encrypted, same documents.
    assert after_rules[BASES[0]] == seeded[BASES[0]]
    for artefact in BASES[1:]:
        assert after_rules[artefact] != seeded[artefact]
        assert decrypt(repo, artefact) == before[artefact]
        assert f"{artefact}: re-encrypted under the generated rules, same documents" in text
    assert (repo.path / ".sops.yaml").read_text().startswith("# Generated by talos-promote")

    promoted = repo.doit()
    assert promoted.returncode == 0, output(promoted)
    assert "promoted 6 of 6 nodes" in output(promoted)
    now = repo.artefacts()
    for artefact in BASES:
        assert now[artefact] == after_rules[artefact]  # kept, byte for byte
    for node in NODES:
        assert f"encrypted/talos-kube-{node}.encrypted.yaml" in now
    repo.git("add", "-A")
    repo.git("commit", "-qm", "adopt the pipeline")
    assert repo.git("status", "--porcelain") == ""
    assert_identity(repo, bundle)
    assert talosconfig_verifies(repo, bundle)
    checked_and_verified(repo)
    assert_no_plaintext(repo, bundle)
    assert repo.doit("import", "--adopt-rules").returncode == 0  # a second time: nothing to do
    assert repo.artefacts() == now


def test_the_printed_fixes_work_when_applied_by_hand(tmp_path: Path) -> None:
    repo, bundle = seed_repository(tmp_path)
    add_pipeline(repo)
    lines = problem_lines(repo.doit())
    config = yaml.safe_load((repo.path / ".sops.yaml").read_text())
    for line in lines[:2]:  # "append this rule ...: {flow mapping}"
        config["creation_rules"].append(yaml.safe_load(line[line.index("{"):]))
    config["creation_rules"][1]["encrypted_regex"] = lines[2].split("encrypted_regex: ")[1].strip("'")
    (repo.path / ".sops.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    promoted = repo.doit()
    assert promoted.returncode == 0, output(promoted)
    repo.git("add", "-A")
    repo.git("commit", "-qm", "fixed by hand")
    assert_identity(repo, bundle)
    assert repo.doit("check").returncode == 0


def test_adopt_rules_keeps_promoted_nodes_current(promoted: Repo) -> None:
    # Nodes promoted under hand-made rules (no mac_only_encrypted): re-encrypted, and still current.
    config = promoted.path / ".sops.yaml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("#")
             and "mac_only_encrypted" not in line]
    config.write_text("\n".join(lines) + "\n")
    for path in (promoted.path / "encrypted").glob("talos-kube-*.encrypted.yaml"):
        path.unlink()
    assert promoted.doit().returncode == 0
    promoted.git("add", "-A")
    promoted.git("commit", "-qm", "hand-made rules")
    before = promoted.artefacts()
    nodes = {name: decrypt(promoted, name) for name in before if "talos-kube-" in name}

    adopted = promoted.doit("import", "--adopt-rules")
    assert adopted.returncode == 0, output(adopted)
    after = promoted.artefacts()
    changed = sorted(name for name in after if name.endswith(".encrypted.yaml") and after[name] != before[name])
    assert changed == sorted(nodes)  # the bases were encrypted under the generated rules: left as they are
    for name, documents in nodes.items():
        assert decrypt(promoted, name) == documents
    again = promoted.doit()
    assert again.returncode == 0, output(again)
    assert promoted.artefacts() == {**after, "encrypted/ledger.json": promoted.artefacts()["encrypted/ledger.json"]}
    promoted.git("commit", "-qm", "generated rules")
    assert promoted.doit("check").returncode == 0
    assert promoted.doit("verify").returncode == 0
