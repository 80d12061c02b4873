"""age identities: discovery where sops looks, and generation in age-keygen's format."""

from __future__ import annotations

import stat
from pathlib import Path

import pyrage
import pytest

from pipeline.errors import PipelineError
from pipeline.sops import identities as keys


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD", "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
                 "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_new_identity_has_age_keygen_format_and_mode(tmp_path: Path) -> None:
    public, made = keys.ensure_identity()
    assert made
    path = tmp_path / "home" / ".config" / "sops" / "age" / "keys.txt"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1] == f"# public key: {public}"
    assert str(pyrage.x25519.Identity.from_str(lines[2]).to_public()) == public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_identity_is_found_not_replaced(tmp_path: Path) -> None:
    first, _ = keys.ensure_identity()
    second, made = keys.ensure_identity()
    assert (second, made) == (first, False)


def test_env_key_and_key_file_are_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    monkeypatch.setenv("SOPS_AGE_KEY", str(identity))
    other = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "k.txt"
    key_file.write_text(f"# comment\n{other}\n")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(key_file))
    found = keys.find_identities()
    assert found.public_keys == (str(identity.to_public()), str(other.to_public()))
    assert "$SOPS_AGE_KEY" in found.looked_at and str(key_file) in found.looked_at


def test_xdg_config_home_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert keys.default_key_file() == tmp_path / "xdg" / "sops" / "age" / "keys.txt"


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "key.txt"
    keys.write_identity(target)
    before = target.read_text()
    with pytest.raises(PipelineError, match="refusing to overwrite"):
        keys.write_identity(target)
    assert target.read_text() == before
