"""The promotion ledger: a committed record of what each artefact was promoted from.

It holds digests of intent (public anyway), digests of ciphertext, and a keyed digest of each
node's rendered documents (HMAC with a key derived from the cluster secret). It never holds
plaintext, nor a plain hash of plaintext secrets. With it a fresh clone, or CI with no key, knows
which artefacts are current without a local doit database.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import ENCRYPTED_DIR

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
    """Parse the ledger text; conflict markers, malformed JSON and a wrong shape are one-line errors."""
    if "\n<<<<<<< " in "\n" + text or "\n>>>>>>> " in "\n" + text:
        raise PipelineError(
            "git conflict markers: take either side (git checkout --ours/--theirs), then run doit to re-promote",
            path=source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(f"not valid JSON: {error.msg}", path=source, line=error.lineno) from None
    except RecursionError:
        raise PipelineError("not valid JSON: nested too deeply", path=source) from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise PipelineError(f"unknown ledger format (expected version {FORMAT_VERSION})", path=source)
    # A run reads the ledger several times; its shape is judged once per content (a fleet's ledger
    # has thousands of fields). Only texts that passed are remembered: a bad one fails every time.
    digest = hashlib.sha256(text.encode()).digest()
    if digest not in _SHAPE_CHECKED:
        check_schema(data, source)
        if len(_SHAPE_CHECKED) > 64:
            _SHAPE_CHECKED.clear()
        _SHAPE_CHECKED.add(digest)
    return Ledger(nodes=dict(data.get("nodes") or {}), bases=dict(data.get("bases") or {}),
                  rotations=list(data.get("rotations") or []), adoptions=list(data.get("adoptions") or []))


_SHAPE_CHECKED: set[bytes] = set()


# The ledger is committed data: anyone who can push can write it. Every field the pipeline reads
# is checked here, once, so no reader meets a string where it expects an entry, and no path in it
# reaches outside encrypted/ (a removed node's `artefact` is unlinked by the next promotion).
_ARTEFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.encrypted\.yaml$")
_NODE_TEXT_FIELDS = ("intent", "artefact_sha256", "rendered")
_ROTATION_TEXT_FIELDS = ("from", "to", "at", "finished", "deliberate")


def is_artefact_path(value: Any) -> bool:
    """Whether ``value`` is the repo-relative path of an artefact: `encrypted/<name>.encrypted.yaml`, nothing else."""
    if not isinstance(value, str):
        return False
    parts = PurePosixPath(value).parts
    return (len(parts) == 2 and parts[0] == ENCRYPTED_DIR and value == f"{ENCRYPTED_DIR}/{parts[1]}"
            and bool(_ARTEFACT_NAME.match(parts[1])) and ".." not in parts[1])


def is_sealed_patch_path(value: Any) -> bool:
    """Whether ``value`` is the repo-relative path of an encrypted patch (`patches/.../<name>.sops.yaml`),
    which `doit rotate` covers and journals like an artefact."""
    if not isinstance(value, str) or "\\" in value:
        return False
    parts = PurePosixPath(value).parts
    return (len(parts) >= 2 and parts[0] == "patches" and value == "/".join(parts)
            and not any(part in ("..", ".", "") for part in parts) and parts[-1].endswith((".sops.yaml", ".sops.yml")))


def confined_folder(root: Path) -> bool:
    """Whether the repository's encrypted/ is its own folder (not a symlink, not resolving elsewhere)."""
    folder = root / ENCRYPTED_DIR
    try:
        return not folder.is_symlink() and folder.resolve() == root.resolve() / ENCRYPTED_DIR
    except OSError:
        return False


def confined_artefact(root: Path, rel: Any, *, folder_checked: bool = False) -> Path | None:
    """The artefact file ``rel`` names, if it is a regular file inside the repository's own encrypted/.

    None for a name that is not an artefact's, a folder `encrypted/` that is a symlink (or resolves
    elsewhere), a symlink, or anything but a regular file: callers may delete or trust what this returns.
    ``folder_checked``: the caller has just judged the folder with :func:`confined_folder` (a batch).
    """
    if not is_artefact_path(rel):
        return None
    if not folder_checked and not confined_folder(root):
        return None
    try:
        path = root / rel
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return path


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def check_schema(data: dict[str, Any], source: str = LEDGER_FILE) -> None:
    """Refuse a ledger whose fields have the wrong shape: one line naming the field."""

    def fail(field_name: str, wanted: str, value: Any) -> PipelineError:
        return PipelineError(f"malformed ledger: {field_name} must be {wanted}, found {_type(value)}", path=source)

    nodes = data.get("nodes", {})
    if not isinstance(nodes, dict):
        raise fail("nodes", "an object (node name -> entry)", nodes)
    for name, entry in nodes.items():
        if not isinstance(entry, dict):
            raise fail(f"nodes.{name}", "an object", entry)
        if "artefact" in entry and not is_artefact_path(entry["artefact"]):
            raise PipelineError(f"malformed ledger: nodes.{name}.artefact must be {ENCRYPTED_DIR}/<name>"
                                f".encrypted.yaml (found {json.dumps(entry['artefact'])[:80]})", path=source)
        for key in _NODE_TEXT_FIELDS:
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise fail(f"nodes.{name}.{key}", "a string", entry[key])
        inputs = entry.get("inputs")
        if inputs is not None and not (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs)):
            raise fail(f"nodes.{name}.inputs", "a list of strings", inputs)
    bases = data.get("bases", {})
    if not isinstance(bases, dict):
        raise fail("bases", "an object", bases)
    for key, value in bases.items():
        if value is not None and not isinstance(value, str):
            raise fail(f"bases.{key}", "a string", value)
    rotations = data.get("rotations", [])
    if not isinstance(rotations, list):
        raise fail("rotations", "a list", rotations)
    for index, item in enumerate(rotations):
        if not isinstance(item, dict):
            raise fail(f"rotations[{index}]", "an object", item)
        number = item.get("rotation")  # absent in a bundle's hand-recorded entry
        if "rotation" in item and (not isinstance(number, int) or isinstance(number, bool)):
            raise fail(f"rotations[{index}].rotation", "a number", number)
        if "artefact" in item and not (is_artefact_path(item["artefact"]) or is_sealed_patch_path(item["artefact"])):
            raise PipelineError(f"malformed ledger: rotations[{index}].artefact must be an artefact under "
                                f"{ENCRYPTED_DIR}/", path=source)
        for key in _ROTATION_TEXT_FIELDS:
            if item.get(key) is not None and not isinstance(item[key], str):
                raise fail(f"rotations[{index}].{key}", "a string", item[key])


def load_ledger(root: Path) -> Ledger:
    """The repo's ledger, or an empty one before the first promotion."""
    try:
        text = (root / LEDGER_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Ledger()
    return parse_ledger(text)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, or raise: a short write (a full disk) is never taken for success."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` via a temp file in the same folder and a rename.

    Every byte is written (checked) and the temp file's size is checked again before the rename, so a
    full disk fails the write and leaves the previous file whole. ``durable`` (the default) fsyncs the
    data before the rename. ``durable=False`` is for a batch that the caller makes durable at once with
    :func:`make_durable` before anything records it (a fleet's artefacts before the ledger): the file's
    blocks are then reserved before writing (``posix_fallocate``), so a full disk still fails here and
    not later in writeback, where a file system with delayed allocation would report it only to fsync.
    Where space cannot be reserved (a file system without fallocate) it is fsynced as if durable.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            if not durable and data:
                durable = not _reserve(fd, len(data))
            write_all(fd, data)
            if durable:
                os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != len(data):
            raise OSError(errno.EIO, f"wrote {size} of {len(data)} bytes", str(path))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _reserve(fd: int, size: int) -> bool:
    """Reserve ``size`` bytes of blocks for ``fd``: False where the file system cannot (ENOSPC raises)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        return False
    except AttributeError:  # no posix_fallocate on this platform (macOS)
        return False
    return True


def make_durable(paths: list[Path]) -> None:
    """Make files written with ``atomic_write(..., durable=False)`` durable (missing ones are skipped).

    A batch is flushed with one ``syncfs`` of its file system (one journal commit instead of one per
    file); each file is then fsynced, which costs next to nothing once it is clean and reports a
    write-back error (EIO, ENOSPC) to us instead of losing it.
    """
    if len(paths) > 1:
        _sync_file_system(paths[0].parent)
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in sorted({path.parent for path in paths}):
        _sync_folder(folder)  # the renames themselves


def _sync_file_system(folder: Path) -> None:
    # Linux's syncfs(2) through libc; elsewhere (or without it) the per-file fsyncs do all the work.
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, AttributeError, ImportError):
        return
    try:
        syncfs(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
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
