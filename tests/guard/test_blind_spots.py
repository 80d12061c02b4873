"""The keyless guard has no blind spots (issue 14): every tracked or staged file is judged, whatever its
name, suffix, encoding or parse state, from any folder; `doit stage`, `doit check` and the hook agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyrage
import pytest

from pipeline.guard import scan as guard
from tests.conftest import Repo
from tests.guard.test_guard import keyless
from tests.guard.test_hooks import commit, install


def decrypted(repo: Repo, artefact: str = "encrypted/talos-kube-cp1.encrypted.yaml") -> str:
    result = repo.sops("-d", artefact)
    assert result.returncode == 0, result.stderr
    return result.stdout


def staged_findings(repo: Repo, name: str, data: bytes) -> list[str]:
    """What the hook (the index alone) and `doit check` (work tree and index) find in ``name``: both must agree."""
    path = repo.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    repo.git("add", "-f", name)
    hook = [line for line in guard.check(repo.path, worktree=False) if line.startswith(name)]
    check = [line for line in guard.check(repo.path, stale=True) if line.startswith(name)]
    assert bool(hook) == bool(check), (hook, check)
    return hook


@pytest.mark.parametrize("name", ["encrypted/.gitkeep", "encrypted/.gitattributes", "cp1.yaml.bak",
                                  "cp1.yaml.orig", "notes/cp1.md", "dump", "encrypted/cp1.orig"])
def test_a_decrypted_config_under_any_name_is_refused(promoted: Repo, name: str) -> None:
    found = staged_findings(promoted, name, decrypted(promoted).encode())
    assert found, f"{name}: a whole decrypted config passed the guard"


def test_the_secrets_bundle_and_the_age_key_under_odd_names(promoted: Repo) -> None:
    bundle = decrypted(promoted, "encrypted/secrets.encrypted.yaml").encode()
    assert staged_findings(promoted, "secrets.yaml.bak", bundle)
    assert staged_findings(promoted, "backup/bundle", bundle)
    key = (promoted.home / ".config" / "sops" / "age" / "keys.txt").read_bytes()
    assert staged_findings(promoted, "keys.orig", key)
    assert staged_findings(promoted, "KEY", key)


def test_a_secret_inside_a_jinja_comment(promoted: Repo) -> None:
    text = decrypted(promoted)
    token = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("token:"))
    patch = ("{# old value, keep for later:\nmachine:\n  token: " + token
             + "\n#}\nmachine:\n  install:\n    wipe: true\n")
    assert staged_findings(promoted, "patches/wipe.yaml", patch.encode())


def test_secrets_in_a_yaml_file_with_a_syntax_error(promoted: Repo) -> None:
    # The secret fields only (no PEM key, which a pattern finds anyway), and one syntax error.
    lines = decrypted(promoted).splitlines()
    kept = [line for line in lines if line.strip().split(":")[0] in ("machine", "cluster", "token", "secret",
                                                                     "secretboxEncryptionSecret")]
    broken = "\n".join(kept).replace("machine:", "machine: [", 1) + "\n"
    assert "token:" in broken and "secret:" in broken
    assert staged_findings(promoted, "patches/broken.yaml", broken.encode())


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_a_utf16_or_utf32_copy_of_a_config(promoted: Repo, encoding: str) -> None:
    assert staged_findings(promoted, "copy.yaml", decrypted(promoted).encode(encoding))


def test_the_index_is_found_from_a_repository_inside_a_bigger_one(promoted: Repo, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=outer, check=True)
    inner = outer / "clusters" / "kube"
    inner.parent.mkdir()
    text = decrypted(promoted)
    subprocess.run(["cp", "-r", str(promoted.path), str(inner)], check=True)
    subprocess.run(["rm", "-rf", str(inner / ".git")], check=True)
    env = dict(promoted.env)
    subprocess.run(["git", "add", "-A"], cwd=outer, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "all"], cwd=outer, check=True, env=env)
    assert guard.check(inner, worktree=False) == []
    (inner / "patches" / "notes.txt").write_text(text)
    subprocess.run(["git", "add", "clusters/kube/patches/notes.txt"], cwd=outer, check=True, env=env)
    found = guard.check(inner, worktree=False)
    assert any(line.startswith("patches/notes.txt:") for line in found), found
    # `doit check` run in that subfolder sees it too, without a key
    result = subprocess.run([*promoted_doit(), "check"], cwd=inner, env=keyless(promoted), capture_output=True,
                            text=True, check=False)
    assert result.returncode == 1 and "patches/notes.txt" in result.stdout + result.stderr, result.stdout


def promoted_doit() -> list[str]:
    import sys

    return [sys.executable, "-m", "doit"]


def test_doit_stage_refuses_a_decrypted_artefact(promoted: Repo) -> None:
    text = decrypted(promoted)
    (promoted.path / "encrypted" / "talos-kube-cp1.encrypted.yaml").write_text(text)
    result = promoted.doit("stage")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "talos-kube-cp1" in result.stdout + result.stderr
    assert "encrypted/talos-kube-cp1.encrypted.yaml" not in promoted.git("diff", "--cached", "--name-only")
    (promoted.path / "encrypted" / ".gitkeep").write_text(text)
    (promoted.path / "encrypted" / "talos-kube-cp1.encrypted.yaml").write_bytes(
        promoted.git("show", "HEAD:encrypted/talos-kube-cp1.encrypted.yaml").encode())
    promoted.git("add", "-f", "encrypted/.gitkeep")
    result = promoted.doit("stage")
    assert result.returncode == 1 and "encrypted/.gitkeep" in result.stdout + result.stderr, result.stdout


def test_hook_and_check_share_one_judgement(promoted: Repo) -> None:
    install(promoted)
    key = str(pyrage.x25519.Identity.generate())
    (promoted.path / "README.md").write_text(f"# notes\n\nmy key, just in case: {key}\n")
    promoted.git("add", "README.md")
    refused = commit(promoted, "notes")
    assert refused.returncode == 1 and "README.md:3: age private key" in refused.stderr, refused.stderr
    checked = promoted.doit("check", env=keyless(promoted))
    assert checked.returncode == 1 and "README.md:3: age private key" in checked.stdout + checked.stderr
    assert key not in refused.stderr + checked.stdout + checked.stderr


def test_the_shipped_readme_and_docs_do_not_trip_the_guard(promoted: Repo) -> None:
    project = Path(__file__).resolve().parents[2]
    for name in ("README.md", "docs/ARCHITECTURE.md"):
        if (project / name).is_file():
            assert staged_findings(promoted, name, (project / name).read_bytes()) == [], name
