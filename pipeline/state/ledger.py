"""The promotion ledger: a committed record of what each artefact was promoted from.

It holds digests of intent (public anyway), digests of ciphertext, and a keyed digest of each
node's rendered documents (HMAC with a key derived from the cluster secret). It never holds
plaintext, nor a plain hash of plaintext secrets. With it a fresh clone, or CI with no key, knows
which artefacts are current without a local doit database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

LEDGER_FILE = "encrypted/ledger.json"
LOCK_FILE = ".promote-ledger.lock"
FORMAT_VERSION = 1


@dataclass
class Ledger:
    """The ledger's content: per-node records, base artefact digests, deliberate rotations and adoptions."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)
    rotations: list[dict[str, Any]] = field(default_factory=list)
    adoptions: list[dict[str, Any]] = field(default_factory=list)  # `doit import`: deliberate new identities

    def to_text(self) -> str:
        """Stable JSON: sorted keys, one field per line, so git diffs stay per node."""
        data: dict[str, Any] = {"version": FORMAT_VERSION, "nodes": self.nodes, "bases": self.bases,
                                "rotations": self.rotations}
        if self.adoptions:  # absent until the first import: older ledgers keep their bytes
            data["adoptions"] = self.adoptions
        return json.dumps(data, indent=1, sort_keys=True) + "\n"


def sha256_bytes(data: bytes) -> str:
    """`sha256:<hex>` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    """`sha256:<hex>` of a file's bytes, or None when it does not exist."""
    try:
        return sha256_bytes(path.read_bytes())
    except FileNotFoundError:
        return None


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of a file, or None when it does not exist.

    What per-process caches of file contents are keyed by: a save (even within one clock tick,
    written atomically) or a replace gives a new identity.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes of parsed YAML: key order and formatting never change a digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def derive_key(documents: list[dict[str, Any]]) -> bytes | None:
    """The ledger's HMAC key, derived from the cluster secret in a rendered config (None if absent)."""
    config = next((doc for doc in documents if isinstance(doc, dict) and "cluster" in doc), None)
    cluster = (config or {}).get("cluster") or {}
    secret, ident = cluster.get("secret"), cluster.get("id")
    if not secret:
        return None
    # A domain-separated derivation: the ledger key is useless for anything but the ledger.
    return hmac.new(str(secret).encode(), b"talos-promote ledger v1|" + str(ident).encode(),
                    hashlib.sha256).digest()


def keyed_digest(documents: list[dict[str, Any]], extra: bytes = b"") -> str | None:
    """HMAC of the canonical rendered documents; meaningless to anyone without the cluster secret."""
    key = derive_key(documents)
    if key is None:
        return None
    return "hmac-sha256:" + hmac.new(key, canonical(documents) + b"|" + extra, hashlib.sha256).hexdigest()


def parse_ledger(text: str, source: str = LEDGER_FILE) -> Ledger:
    """Parse the ledger text; conflict markers and malformed JSON are one-line errors."""
    if "\n<<<<<<< " in "\n" + text or "\n>>>>>>> " in "\n" + text:
        raise PipelineError(
            "git conflict markers: take either side (git checkout --ours/--theirs), then run doit to re-promote",
            path=source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(f"not valid JSON: {error.msg}", path=source, line=error.lineno) from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise PipelineError(f"unknown ledger format (expected version {FORMAT_VERSION})", path=source)
    return Ledger(nodes=dict(data.get("nodes") or {}), bases=dict(data.get("bases") or {}),
                  rotations=list(data.get("rotations") or []), adoptions=list(data.get("adoptions") or []))


def load_ledger(root: Path) -> Ledger:
    """The repo's ledger, or an empty one before the first promotion."""
    try:
        text = (root / LEDGER_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Ledger()
    return parse_ledger(text)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` via a temp file in the same folder and a rename.

    ``durable=False`` skips the fsync: the caller makes the file durable later (:func:`make_durable`),
    before anything that records it is written. A kill never sees a partial file either way.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def make_durable(paths: list[Path]) -> None:
    """fsync files written with ``atomic_write(..., durable=False)`` (missing ones are skipped)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """An exclusive lock for read-modify-write of the ledger (parallel encrypt tasks share it)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def updating(root: Path) -> Iterator[Ledger]:
    """Load the ledger under the lock, let the caller change it, write it back only if it changed."""
    with locked(root):
        path = root / LEDGER_FILE
        before = path.read_text(encoding="utf-8") if path.exists() else None
        ledger = parse_ledger(before) if before is not None else Ledger()
        yield ledger
        after = ledger.to_text()
        if after != before:
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, after.encode())
