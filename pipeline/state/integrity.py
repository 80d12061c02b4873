"""Checks before an artefact is replaced: the plaintext sops read was whole, the ciphertext is a whole SOPS file.

A full disk can cut a write short without an error (os.write returns fewer bytes). Two places
matter: the rendered plaintext (a cut file that still parses would be encrypted over a good
artefact) and the artefact itself (a cut ciphertext cannot be decrypted). Writes are checked where
they happen (:func:`pipeline.state.ledger.write_all`); this module checks what they produced, once
more, before the old artefact is given up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.sops import metadata
from pipeline.state import ledger
from pipeline.talos.yaml import load_documents


def _rendered_documents(plain: Path, rendered: str) -> list[Any]:
    # Read as Talos and sops read it (go-yaml v3 typing): what render's digest was taken of.
    try:
        text = plain.read_text(encoding="utf-8")
        documents = [doc for doc in load_documents(text, rendered) if doc is not None]
    except (OSError, UnicodeDecodeError, PipelineError):
        documents, text = [], ""
    # The renderer's dump always ends with a newline: a file that does not was cut short.
    if not documents or not text.endswith("\n"):
        raise PipelineError("rendered plaintext is incomplete (a full disk?): artefact left as it was",
                            path=rendered)
    return documents


def verify_ciphertext(ciphertext: bytes, artefact: str, plain: Path, rendered: str,
                      digest: str | None = None, shape: Any = None, *, scanned: bool = False,
                      documents: list[Any] | None = None) -> None:
    """Refuse to replace ``artefact`` unless ``ciphertext`` encrypts exactly the documents render wrote.

    ``plain`` is the rendered file sops encrypted (``rendered``: its repo-relative name); ``digest`` is
    the keyed digest render took of its documents in memory (with ``shape``, the creation rule's
    shape), so a plaintext cut short, or changed since, is caught even when what is left still parses.
    The ciphertext must be a whole SOPS document (keyless: every document carries sops metadata and
    a MAC), one per rendered document; ``scanned``: the caller already ran the keyless scan
    (:func:`pipeline.sops.metadata.scan_artefact`) on these bytes, so only the count is checked here.
    ``documents``: what the caller encrypted, parsed from ``plain``'s whole text (ending in a newline) as
    go-yaml types it; otherwise the file is read and parsed here.
    Raises a one-line PipelineError; the artefact stays as it was.
    """
    if not documents:
        documents = _rendered_documents(plain, rendered)
    if digest is not None and ledger.keyed_digest(documents, ledger.canonical(shape)) != digest:
        raise PipelineError("rendered plaintext is not what render wrote (cut short, or changed since): "
                            "artefact left as it was", path=rendered)
    text = ciphertext.decode("utf-8", errors="replace")
    scan = metadata.ArtefactScan([], ()) if scanned else metadata.inspect_artefact(text, artefact)
    if scan.findings:
        raise PipelineError(f"sops output is not a whole SOPS file, artefact left as it was: {scan.findings[0]}",
                            path=artefact)
    count = sum(1 for line in text.splitlines() if line.startswith("sops:"))
    if count != len(documents):
        raise PipelineError(f"sops output holds {count} SOPS documents for {len(documents)} rendered ones, "
                            "artefact left as it was", path=artefact)
