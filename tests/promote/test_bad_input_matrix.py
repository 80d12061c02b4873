"""The bad-input matrix: every mistake is exit 1, one line naming the file (and line), no traceback,
and no artefact changed. Each case starts from a promoted repo where a shared patch was edited, so
every node must be redone and no fault can hide behind up-to-dateness."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyrage
import pytest

from tests.conftest import Repo

Fault = Callable[[Repo], None]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def patch(repo: Repo, name: str) -> Path:
    return repo.path / "patches" / name


def artefact(repo: Repo, name: str) -> Path:
    return repo.path / "encrypted" / f"{name}.encrypted.yaml"


def use_patch(repo: Repo, node: str, name: str, text: str) -> None:
    """Give ``node`` one extra patch file with ``text``."""
    (repo.path / "patches" / name).write_text(text)
    edit(repo.path / "cluster.yaml", f"  {node}: {{", f"  {node}: {{patches: [{node}.yaml, {name}], ")


def tamper(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if "ENC[AES256_GCM,data:" in line and "sops" not in line:
            head, _, tail = line.partition("data:")
            flipped = ("B" if tail[0] != "B" else "C") + tail[1:]
            lines[index] = head + "data:" + flipped
            break
    path.write_text("".join(lines))


def foreign_key(repo: Repo) -> None:
    """Re-encrypt the worker base for a stranger's key only."""
    stranger = str(pyrage.x25519.Identity.generate().to_public())
    plain = repo.sops("-d", "encrypted/worker.encrypted.yaml").stdout
    result = subprocess.run([shutil.which("sops", path=os.path.dirname(os.sys.executable)) or "sops", "-e",
                             "--age", stranger, "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"],
                            input=plain, capture_output=True, text=True, cwd=repo.home, env=repo.env, check=True)
    artefact(repo, "worker").write_text(result.stdout)


# (fault, text the one error line must contain, more texts that must appear on that line)
CASES: dict[str, tuple[Fault, str, tuple[str, ...]]] = {
    "inventory-not-a-mapping": (lambda r: (r.path / "cluster.yaml").write_text("- a\n- b\n"),
                                "cluster.yaml:1:", ("mapping",)),
    "inventory-unknown-top-level-key": (lambda r: edit(r.path / "cluster.yaml", "\nvars:\n", "\ncolour: blue\nvars:\n"),
                                        "cluster.yaml:", ("colour",)),
    "inventory-duplicate-node": (lambda r: edit(r.path / "cluster.yaml", "  w2: {", "  w1: {"),
                                 "cluster.yaml:", ("duplicate key 'w1'",)),
    "inventory-node-without-role": (lambda r: edit(r.path / "cluster.yaml", "w1: {role: worker, ", "w1: {"),
                                    "cluster.yaml:", ("nodes.w1.role: required",)),
    "inventory-unknown-role": (lambda r: edit(r.path / "cluster.yaml", "w1: {role: worker", "w1: {role: gpu"),
                               "cluster.yaml:", ("unknown role 'gpu'",)),
    "inventory-bad-address": (lambda r: edit(r.path / "cluster.yaml", "192.168.1.111", "192.168.1.311"),
                              "cluster.yaml:", ("not an IP address",)),
    "inventory-missing-patch-file": (lambda r: edit(r.path / "cluster.yaml", "  - resolvers.yaml",
                                                    "  - resolvers.yaml\n  - nowhere.yaml"),
                                     "cluster.yaml:", ("patches/nowhere.yaml",)),
    "inventory-patch-escapes-patches": (lambda r: edit(r.path / "cluster.yaml", "  - resolvers.yaml",
                                                       "  - ../cluster.yaml"),
                                        "cluster.yaml:", ("must stay inside patches/",)),
    "patch-empty": (lambda r: use_patch(r, "w1", "empty.yaml", "# nothing here\n"),
                    "patches/empty.yaml", ("empty",)),
    "patch-list-not-ops": (lambda r: use_patch(r, "w1", "list.yaml", "- a\n- b\n"),
                           "patches/list.yaml", ()),
    "patch-invalid-json6902-op": (lambda r: use_patch(r, "w1", "bad-op.yaml",
                                                      "- op: frobnicate\n  path: /machine\n"),
                                  "patches/bad-op.yaml", ("frobnicate",)),
    "patch-json6902-missing-path": (lambda r: use_patch(r, "w1", "gone.yaml",
                                                        "- op: replace\n  path: /machine/nope/deeper\n  value: 1\n"),
                                    "patches/gone.yaml", ("/machine/nope/deeper",)),
    "patch-template-syntax-error": (lambda r: edit(patch(r, "w2.yaml"), "{{ node.name }}", "{{ node.name "),
                                    "patches/w2.yaml:", ("template syntax error",)),
    "patch-undefined-variable": (lambda r: edit(patch(r, "w2.yaml"), "vars.prefix", "vars.prefx"),
                                 "patches/w2.yaml:8:", ("prefx",)),
    "patch-invalid-yaml": (lambda r: edit(patch(r, "cp3.yaml"), "  network:", "  network: [oops"),
                           "patches/cp3.yaml:", ("invalid YAML",)),
    "patch-fails-validation": (lambda r: use_patch(r, "w3", "etcd.yaml", "cluster:\n  etcd:\n    advertisedSubnets: "
                                                   "[10.0.0.0/8]\n"), "node w3", ("cluster.etcd",)),
    "sops-config-invalid-yaml": (lambda r: (r.path / ".sops.yaml").write_text("creation_rules: [\n"),
                                 ".sops.yaml:", ()),
    "sops-config-no-rule": (lambda r: edit(r.path / ".sops.yaml", r"(^|.*/)encrypted/[^/]+\.ya?ml$",
                                           r"(^|.*/)elsewhere/[^/]+\.ya?ml$"),
                            "encrypted/talos-kube-", ("creation rule",)),
    "artefact-truncated": (lambda r: artefact(r, "worker").write_text(artefact(r, "worker").read_text()[:900]),
                           "encrypted/worker.encrypted.yaml", ()),
    "artefact-not-sops": (lambda r: artefact(r, "worker").write_text("machine:\n  type: worker\n"),
                          "encrypted/worker.encrypted.yaml", ()),
    "artefact-conflict-markers": (lambda r: artefact(r, "worker").write_text(
        "<<<<<<< HEAD\n" + artefact(r, "worker").read_text() + "=======\nx: 1\n>>>>>>> theirs\n"),
        "encrypted/worker.encrypted.yaml", ()),
    "artefact-tampered-value": (lambda r: tamper(artefact(r, "worker")),
                                "encrypted/worker.encrypted.yaml", ("MAC mismatch",)),
    "artefact-foreign-key-only": (foreign_key, "encrypted/worker.encrypted.yaml",
                                  ("no age identity here can decrypt", "age1")),
    "ledger-conflict-markers": (lambda r: (r.path / "encrypted" / "ledger.json").write_text(
        "{\n<<<<<<< HEAD\n}\n=======\n{}\n>>>>>>> theirs\n"), "encrypted/ledger.json", ("conflict markers",)),
    "rendered-is-a-symlink": (lambda r: (r.path / "rendered").symlink_to(r.home), "rendered/", ("symlink",)),
}


def run_failing(repo: Repo) -> str:
    result = repo.doit()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    return output


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(promoted: Repo, case: str) -> None:
    edit(promoted.path / "patches" / "resolvers.yaml", "9.9.9.9", "149.112.112.112")
    fault, needle, more = CASES[case]
    fault(promoted)
    before = promoted.artefacts()
    output = run_failing(promoted)
    lines = [line for line in output.splitlines() if needle in line]
    assert lines, f"no line mentions {needle!r}:\n{output}"
    assert all(text in lines[0] for text in more), output
    failures = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 1, output
    after = promoted.artefacts()
    assert {k: v for k, v in after.items() if k != "encrypted/ledger.json"} == \
        {k: v for k, v in before.items() if k != "encrypted/ledger.json"}
    assert not list(promoted.path.glob("rendered/*.yaml")) or (promoted.path / "rendered").is_symlink()
    assert not list(promoted.path.glob("encrypted/.*.tmp"))


def test_home_not_writable_during_bootstrap(fresh: Repo, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = dict(fresh.env, HOME=str(blocker / "home"))
    result = fresh.doit(env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "not-a-dir" in output
    assert not (fresh.path / "encrypted" / "secrets.encrypted.yaml").exists()


def test_read_only_encrypted_folder(promoted: Repo) -> None:
    edit(promoted.path / "patches" / "resolvers.yaml", "9.9.9.9", "149.112.112.112")
    folder = promoted.path / "encrypted"
    before = promoted.artefacts()
    if os.geteuid() == 0:
        # root ignores mode bits; the immutable attribute stops even root.
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode != 0:
            pytest.skip("chattr +i is not available on this filesystem")
    else:
        folder.chmod(0o500)
    try:
        output = run_failing(promoted)
        assert "encrypted/" in output and "FAILED" in output
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)
    assert promoted.artefacts() == before
