"""A git diff driver for SOPS artefacts: `git diff`, `git log -p` and `git show` print what changed.

``doit hooks --diff`` marks ``encrypted/*.encrypted.yaml`` with ``diff=talos-promote`` in
``.gitattributes`` and sets ``diff.talos-promote.textconv`` in the repository's git config (git does
not version diff drivers: every clone runs it once). git then calls
``python -m pipeline.review.textconv FILE`` for each side of a diff; it prints the decrypted documents
with every value the file encrypts replaced by ``(secret 1a2b3c4d)``: an HMAC keyed from the cluster
secret, so a changed secret shows as a changed digest and an unchanged one as the same, while no
value, and no plain hash anyone could test guesses against, ever reaches the terminal. Without a key
(or for a file it cannot open) it prints the file as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import SECRETS_ARTEFACT
from pipeline.sops import engine
from pipeline.sops import runner as sops
from pipeline.state import git

DRIVER = "talos-promote"
ATTRIBUTES_LINE = f"encrypted/*.encrypted.yaml diff={DRIVER}"
_DOMAIN = b"talos-promote diff v1|"


def digest_key(documents: list[dict[str, Any]]) -> bytes | None:
    """The redaction key from the cluster secret in ``documents`` (a bundle or a machine config); None if absent."""
    for doc in documents:
        cluster = doc.get("cluster") if isinstance(doc, dict) else None
        if isinstance(cluster, dict) and cluster.get("secret"):
            # Domain-separated from the ledger's key: a digest here says nothing about the ledger.
            return hmac.new(str(cluster["secret"]).encode(), _DOMAIN + str(cluster.get("id")).encode(),
                            hashlib.sha256).digest()
    return None


def secret_digest(key: bytes, value: Any) -> str:
    """``(secret 1a2b3c4d)``: eight hex digits of an HMAC of the value (with its type)."""
    data = value.hex() if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False)
    return f"(secret {hmac.new(key, data.encode(), hashlib.sha256).hexdigest()[:8]})"


def _decrypt(data: bytes, root: Path) -> tuple[list[Any], list[Any]]:
    """The file's documents as it holds them (ENC[...] values) and decrypted (MAC checked).

    In process when the engine can; else (``PROMOTE_SOPS_ENGINE=binary``, identities only sops
    reaches, options the engine does not do) with the sops binary, fed on stdin.
    """
    identities = engine.age_identities()
    if engine.engine_enabled() and identities:
        try:
            return engine.load_yaml(data.decode("utf-8")), engine.decrypt(data, identities)
        except (engine.EngineUnsupported, PipelineError, UnicodeDecodeError):
            pass
    plain = sops.run_sops(["--decrypt", "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"], root,
                          "the file", stdin=data)
    return engine.load_yaml(data.decode("utf-8")), engine.load_yaml(plain.decode("utf-8"))


def _repository_key(root: Path) -> bytes | None:
    """The key from the working tree's secrets bundle: the same for every revision a diff shows."""
    try:
        return digest_key(_decrypt((root / SECRETS_ARTEFACT).read_bytes(), root)[1])
    except (OSError, PipelineError, engine.EngineUnsupported, UnicodeDecodeError):
        return None


def textconv(data: bytes, root: Path) -> bytes:
    """What the driver prints for one version of an artefact (``data``): redacted plaintext, or ``data``."""
    try:
        raw, plain = _decrypt(data, root)
        key = _repository_key(root) or digest_key(plain)
        if key is None:
            return data
        raw = [{k: v for k, v in doc.items() if k != "sops"} for doc in raw]
        documents = engine.redact_documents(raw, plain, lambda value: secret_digest(key, value))
        return engine.emit_yaml(documents, strict=False).encode()
    except (PipelineError, engine.EngineUnsupported, UnicodeDecodeError, ValueError):
        return data


def install(root: Path) -> str:
    """Write the ``.gitattributes`` line and the textconv into ``root``'s git config; one line saying so."""
    if not git.is_repository(root):
        raise PipelineError("not the top of a git repository: nothing to set a diff driver up in")
    attributes = root / ".gitattributes"
    try:
        current = attributes.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    said = []
    if ATTRIBUTES_LINE not in current.splitlines():
        text = current + ("" if not current or current.endswith("\n") else "\n") + ATTRIBUTES_LINE + "\n"
        tmp = attributes.with_name(f".gitattributes.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, attributes)
        said.append("wrote .gitattributes (commit it)")
    command = f"{shlex.quote(sys.executable)} -m pipeline.review.textconv"
    result = subprocess.run(["git", "config", "--local", f"diff.{DRIVER}.textconv", command], cwd=root,
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise PipelineError(f"git config failed: {result.stderr.decode(errors='replace').strip()[:200]}")
    said.append(f"set diff.{DRIVER}.textconv in .git/config")
    return "hooks: diff driver: " + "; ".join(said)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.review.textconv FILE``: print FILE as the diff driver shows it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipeline.review.textconv FILE", file=sys.stderr)
        return 2
    try:
        data = Path(args[0]).read_bytes()
    except OSError as error:
        print(f"textconv: {args[0]}: {error.strerror}", file=sys.stderr)
        return 1
    root = git.toplevel(Path.cwd()) or Path.cwd()
    sys.stdout.buffer.write(textconv(data, root))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
