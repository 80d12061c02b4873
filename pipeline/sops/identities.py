"""age identities: find them where sops finds them, make one when there is none."""

from __future__ import annotations

import errno
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import PipelineError

_SECRET_KEY = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]+$")


@dataclass(frozen=True)
class KeySearch:
    """The identities sops would use, and the places that were looked at (for error messages)."""

    public_keys: tuple[str, ...]
    looked_at: tuple[str, ...]
    external: bool = False  # SOPS_AGE_KEY_CMD / ssh keys: identities we cannot enumerate ourselves


def default_key_file() -> Path:
    """Where sops looks for age keys when SOPS_AGE_KEY_FILE is not set (Linux and macOS with XDG)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "sops" / "age" / "keys.txt"


def key_file_target() -> Path:
    """Where a new identity goes: the file sops will read, i.e. SOPS_AGE_KEY_FILE or the default."""
    explicit = os.environ.get("SOPS_AGE_KEY_FILE")
    return Path(explicit).expanduser() if explicit else default_key_file()


def public_keys_of(text: str) -> list[str]:
    """Public keys of every age identity in a keys file's text (comments and blank lines ignored)."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _SECRET_KEY.match(line):
            try:
                import pyrage  # imported when a key is read: a no-op `doit` reads none

                out.append(str(pyrage.x25519.Identity.from_str(line).to_public()))
            except Exception:  # pyrage raises its own error types for a bad checksum
                continue
    return out


def find_identities() -> KeySearch:
    """The identities sops would find, in its own order: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, the default file."""
    looked: list[str] = []
    keys: list[str] = []
    inline = os.environ.get("SOPS_AGE_KEY")
    if inline:
        looked.append("$SOPS_AGE_KEY")
        keys.extend(public_keys_of(inline))
    explicit = os.environ.get("SOPS_AGE_KEY_FILE")
    files = [Path(explicit).expanduser()] if explicit else []
    files.append(default_key_file())
    for path in files:
        looked.append(str(path))
        try:
            found = public_keys_of(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        keys.extend(found)
        if found:
            warn_if_exposed(path)
    external = bool(os.environ.get("SOPS_AGE_KEY_CMD") or os.environ.get("SOPS_AGE_SSH_PRIVATE_KEY_FILE"))
    return KeySearch(tuple(dict.fromkeys(keys)), tuple(looked), external)


_warned: set[str] = set()


def exposure_warning(path: Path) -> str | None:
    """One line when the key file at ``path`` is readable by its group or others (None: it is not)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (f"warning: {path} holds an age secret key and is readable by group or others (mode {mode:04o}): "
            f"chmod 600 {path}")


def warn_if_exposed(path: Path) -> None:
    """Print :func:`exposure_warning` to stderr, once per file per process.

    A warning, not a refusal (unlike ssh): sops itself reads such a key without a word, and a
    recovery from a backup that lost its modes must still be able to decrypt.
    """
    line = exposure_warning(path)
    if line is not None and str(path) not in _warned:
        _warned.add(str(path))
        print(line, file=sys.stderr, flush=True)


def new_identity_text(now: datetime | None = None) -> tuple[str, str]:
    """A new X25519 identity in age-keygen's file format; returns (file text, public key)."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    stamp = (now or datetime.now(UTC)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    text = f"# created: {stamp}\n# public key: {public}\n{identity}\n"
    return text, public


def write_identity(path: Path, overwrite: bool = False) -> str:
    """Create a new identity file at ``path`` (mode 0600, parent 0700); returns the public key."""
    if path.exists() and not overwrite:
        raise PipelineError("refusing to overwrite an existing key file", path=path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text, public = new_identity_text()
    # O_EXCL: never clobber a key another process made in the meantime.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        data = text.encode()
        if os.write(fd, data) != len(data):  # a short write (full disk) must not leave half a key
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        os.fsync(fd)
    except BaseException:
        if not overwrite:
            path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    return public


def ensure_identity() -> tuple[str, bool]:
    """Return (public key to encrypt to, whether it was just made); make one only when sops has none."""
    search = find_identities()
    if search.public_keys:
        return search.public_keys[0], False
    return write_identity(key_file_target()), True
