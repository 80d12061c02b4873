"""The keyless guard: proves, without any key, that nothing plaintext is or will be committed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pipeline import git
from pipeline.ledger import LEDGER_FILE
from pipeline.sopsconfig import SENSITIVE_FIELDS

ENCRYPTED_DIR = "encrypted"
RENDERED_DIR = "rendered"
WHOLE_FILE_ARTEFACTS = ("secrets.encrypted.yaml", "talosconfig.encrypted.yaml")
# Names the seed's .gitignore lists: plaintext Talos material that must never be in git.
PLAINTEXT_NAMES = re.compile(r"(^|/)(secrets|controlplane|worker|talosconfig|kubeconfig)(\.ya?ml)?$")
# Certificates are public; everything else in the sensitive set must be ciphertext in git.
_GUARDED = frozenset(SENSITIVE_FIELDS) - {"crt"}
_ENC = re.compile(r"^ENC\[[A-Z0-9_]+,data:")
_CONFLICT = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)
# What .gitignore must cover: a sample path for each kind of plaintext.
IGNORE_PROBES = ("rendered/x.yaml", "secrets.yaml", "controlplane.yaml", "worker.yaml", "talosconfig",
                 "kubeconfig")


def _is_ciphertext(value: Any) -> bool:
    # sops leaves empty values alone; null and "" carry no secret.
    return value is None or value == "" or (isinstance(value, str) and bool(_ENC.match(value)))


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def _plaintext_sensitive(value: Any, path: str, guarded: bool) -> Iterator[str]:
    """Dotted paths of sensitive values that are not ENC[...] (whole subtrees under a sensitive key)."""
    if guarded:
        for leaf_path, leaf in _leaves(value, path):
            if not _is_ciphertext(leaf):
                yield leaf_path
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _plaintext_sensitive(item, f"{path}.{key}" if path else str(key), key in _GUARDED)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plaintext_sensitive(item, f"{path}[{index}]", False)


def scan_artefact(text: str, path: str) -> list[str]:
    """Findings for one file under encrypted/: not SOPS, plaintext sensitive fields, conflicts."""
    if _CONFLICT.search(text):
        return [f"{path}: git conflict markers: take either side of the intent, then run doit to re-promote"]
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError:
        return [f"{path}: not a SOPS file (not valid YAML)"]
    if not documents:
        return [f"{path}: not a SOPS file (empty)"]
    whole_file = PurePosixPath(path).name in WHOLE_FILE_ARTEFACTS
    findings = []
    for index, doc in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
        meta = doc.get("sops") if isinstance(doc, dict) else None
        if not isinstance(meta, dict) or not meta.get("mac"):
            findings.append(f"{where}: not a SOPS file (no sops metadata)")
            continue
        body = {key: value for key, value in doc.items() if key != "sops"}
        if whole_file:
            plain = [leaf for leaf, value in _leaves(body, "") if not _is_ciphertext(value)]
        else:
            plain = list(_plaintext_sensitive(body, "", False))
        findings.extend(f"{where}: field {field} is plaintext (must be ENC[...])" for field in plain)
    return findings


def artefact_recipients(text: str) -> tuple[str, ...]:
    """The age recipients an artefact's data key is wrapped for (from its sops metadata)."""
    try:
        doc = next(iter(yaml.safe_load_all(text)))
    except (yaml.YAMLError, StopIteration):
        return ()
    meta = doc.get("sops") if isinstance(doc, dict) else None
    entries = (meta or {}).get("age") or []
    return tuple(sorted(entry.get("recipient", "") for entry in entries if isinstance(entry, dict)))


def scan_encrypted_dir(root: Path) -> list[str]:
    """Findings for every file in encrypted/ (the ledger is the one non-SOPS file allowed)."""
    folder = root / ENCRYPTED_DIR
    if not folder.is_dir():
        return []
    findings = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel == LEDGER_FILE or path.name in (".gitkeep", ".gitattributes"):
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue  # an in-flight atomic write of another process
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            findings.append(f"{rel}: not a SOPS file (binary)")
            continue
        findings.extend(scan_artefact(text, rel))
    return findings


def scan_index(root: Path) -> list[str]:
    """Findings for the git index: plaintext tracked or staged, and `.gitignore` gaps."""
    if not git.is_repository(root):
        return []
    findings = []
    for rel in git.index_files(root):
        if rel.startswith(f"{RENDERED_DIR}/") or PLAINTEXT_NAMES.search(rel):
            findings.append(f"{rel}: plaintext is tracked or staged (git rm --cached {rel})")
        elif rel.startswith(f"{ENCRYPTED_DIR}/") and rel != LEDGER_FILE:
            blob = git.staged_blob(root, rel)
            on_disk = (root / rel).read_bytes() if (root / rel).is_file() else None
            if blob is not None and blob != on_disk:
                # The work tree is scanned separately; judge what is about to be committed too.
                findings.extend(f"{item} (staged)" for item in scan_artefact(blob.decode(errors="replace"), rel))
    covered = git.ignored(root, IGNORE_PROBES)
    findings.extend(
        f".gitignore: does not cover {probe} (plaintext could be committed)"
        for probe in IGNORE_PROBES if probe not in covered
    )
    return findings


def check(root: Path) -> list[str]:
    """Every keyless finding for the repository at ``root``; empty means safe."""
    return scan_encrypted_dir(root) + scan_index(root)
