"""The git diff driver (`doit hooks --diff`): decrypted documents, secrets as keyed digests, never a value."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

from pipeline.sops import engine
from tests.conftest import Repo

ARTEFACT = "encrypted/talos-kube-cp1.encrypted.yaml"


def _textconv(repo: Repo, path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The driver as git runs it: a file path argument, in the repository."""
    return subprocess.run([sys.executable, "-m", "pipeline.review.textconv", path], cwd=repo.path,
                          env=env or repo.env, capture_output=True, check=False)


def _encrypted_values(repo: Repo) -> list[str]:
    """Every value cp1's artefact encrypts, as text (what must never be printed)."""
    identities = [(repo.home / ".config/sops/age/keys.txt").read_text()]
    values: list[str] = []
    data = (repo.path / ARTEFACT).read_bytes()
    engine.decrypt_redacted(data, identities, lambda value: values.append(str(value)) or "x")
    return values


def test_driver_prints_plain_values_and_keyed_digests(promoted: Repo) -> None:
    repo = promoted
    out = _textconv(repo, ARTEFACT)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "        hostname: cp1\n" in text and "type: controlplane" in text
    assert "ENC[" not in text and "sops:" not in text and "lastmodified" not in text
    secrets = _encrypted_values(repo)
    assert len(secrets) > 10
    for value in secrets:
        if len(value) >= 6:
            assert value not in text
    # Keyed: not the start of a plain SHA-256 of the value (nobody can test guesses against it).
    token = re.search(r"^    token: \(secret ([0-9a-f]{8})\)$", text, re.M)
    assert token is not None
    plain_token = repo.sops("-d", "--extract", '["machine"]["token"]', ARTEFACT).stdout.strip()
    assert hashlib.sha256(plain_token.encode()).hexdigest()[:8] != token[1]
    assert hashlib.sha256(f'"{plain_token}"'.encode()).hexdigest()[:8] != token[1]
    # The same secret in another node's artefact gets the same digest: equal values look equal.
    other = _textconv(repo, "encrypted/talos-kube-cp2.encrypted.yaml").stdout.decode()
    cluster_secret = re.search(r"^    secret: \(secret [0-9a-f]{8}\)$", text, re.M)
    assert cluster_secret is not None and cluster_secret[0] in other


def test_without_a_key_the_file_is_printed_as_it_is(promoted: Repo) -> None:
    repo = promoted
    keyless = {**repo.env, "HOME": str(repo.home / "elsewhere")}
    out = _textconv(repo, ARTEFACT, env=keyless)
    assert out.returncode == 0
    assert out.stdout == (repo.path / ARTEFACT).read_bytes()


def test_hooks_diff_sets_up_the_driver_once_and_git_uses_it(promoted: Repo) -> None:
    repo = promoted
    first = repo.doit("hooks", "--diff", check=True)
    assert "wrote .gitattributes" in first.stdout + first.stderr
    again = repo.doit("hooks", "--diff", check=True)
    assert "wrote .gitattributes" not in again.stdout + again.stderr
    assert (repo.path / ".gitattributes").read_text().splitlines().count(
        "encrypted/*.encrypted.yaml diff=talos-promote") == 1
    assert "pipeline.review.textconv" in repo.git("config", "--get", "diff.talos-promote.textconv")
    # `git show` of the committed artefact goes through the driver.
    shown = repo.git("show", f"HEAD:{ARTEFACT}")  # a blob: raw bytes (textconv applies to diffs)
    assert "ENC[" in shown
    path = repo.path / "patches/cp1.yaml"
    path.write_text(path.read_text().replace("hostname: {{ node.name }}", "hostname: {{ node.name }}-b"))
    repo.doit(check=True)
    diff = repo.git("diff", "--cached", "--", ARTEFACT)
    assert "-        hostname: cp1\n+        hostname: cp1-b\n" in diff
    assert "ENC[" not in diff
