"""Every secret value a promoted repository holds, collected with the stock sops binary, and the
forms a leak may take (case, reversal, base64, pieces of a PEM): what the leak tests search for."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Repo

_SENSITIVE = {"token", "key", "secret", "secretboxEncryptionSecret", "aescbcEncryptionSecret", "bootstraptoken",
              "secretboxencryptionsecret", "aescbcencryptionsecret", "id", "password", "privateKey"}


def _leaves(value: Any, key: str = "", whole: bool = False) -> list[str]:
    if isinstance(value, dict):
        return [leaf for name, item in value.items() for leaf in _leaves(item, str(name), whole)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item, key, whole)]
    if isinstance(value, str) and key != "crt" and (whole or key in _SENSITIVE) and len(value) >= 8:
        return [value]
    return []


def secret_values(repo: Repo) -> list[str]:
    """The bundle (every value but certificates), the base configs' and talosconfig's keys, the age key."""
    values: list[str] = []
    for name, whole in (("secrets", True), ("controlplane", False), ("worker", False), ("talosconfig", False)):
        result = repo.sops("-d", f"encrypted/{name}.encrypted.yaml")
        assert result.returncode == 0, result.stderr
        for doc in yaml.safe_load_all(result.stdout):
            values += _leaves(doc, whole=whole)
    key = repo.home / ".config" / "sops" / "age" / "keys.txt"
    values += [line.strip() for line in key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-")]
    return sorted(set(values))


def needles(values: list[str]) -> list[str]:
    """What to search for: each value, its case and reversal, its base64, and the lines of a PEM it encodes."""
    out: set[str] = set()
    for value in values:
        forms = [value]
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        if "PRIVATE KEY" in decoded:
            forms += [line for line in decoded.splitlines() if len(line) >= 16 and "-----" not in line]
            forms.append(value[len(value) // 2:len(value) // 2 + 24])
        for form in forms:
            out.update((form, form.lower(), form.upper(), form[::-1], base64.b64encode(form.encode()).decode()[:40]))
    return sorted(out, key=len, reverse=True)


def leaks(text: str | bytes, wanted: list[str]) -> list[str]:
    """The needles found in ``text`` (shortened: a failing test must not print the secret either)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [f"{needle[:4]}...({len(needle)} chars)" for needle in wanted if needle in text]


def files_under(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    """Every regular file under ``folder`` (not following symlinks), except those under ``skip``."""
    out = {}
    for path in folder.rglob("*"):
        if any(path == item or item in path.parents for item in skip):
            continue
        if path.is_file() and not path.is_symlink():
            out[str(path)] = path.read_bytes()
    return out
