"""Rendering: a node's base config plus its patches, exactly as Talos would merge them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.sops import runner as sops
from pipeline.state.ledger import canonical, file_identity, sha256_bytes, sha256_file
from pipeline.talos.baseconfig import dump_documents
from pipeline.talos.inventory import Inventory, Node
from pipeline.talos.patching import Patch, apply_patches, load_documents, load_patch
from pipeline.talos.templating import render_template
from pipeline.talos.validation import validate_machine_config

RENDERED_DIR = "rendered"
ENCRYPTED_DIR = "encrypted"
# Bump when rendering changes meaning in a way the code digest below would not catch.
RENDER_FORMAT = 2  # 2: the package layout (code digest over talos/ and promote/render.py)
_RENDERING_CODE = ("talos/patching.py", "promote/render.py", "talos/templating.py", "talos/validation.py")


def base_artefact(role: str) -> str:
    """Repo-relative path of the encrypted base config for ``role``."""
    return f"{ENCRYPTED_DIR}/{role}.encrypted.yaml"


def node_artefact(inventory: Inventory, node: Node | str) -> str:
    """Repo-relative path of a node's encrypted artefact."""
    return f"{ENCRYPTED_DIR}/{inventory.artefact_name(node)}.encrypted.yaml"


def rendered_path(inventory: Inventory, node: Node | str) -> str:
    """Repo-relative path of a node's transient plaintext."""
    return f"{RENDERED_DIR}/{inventory.artefact_name(node)}.yaml"


@cache
def code_digest() -> str:
    """Digest of the pipeline's own rendering code: a change to it is a change of every node's input."""
    digest = hashlib.sha256(f"format {RENDER_FORMAT}".encode())
    here = Path(__file__).resolve().parent.parent
    for name in _RENDERING_CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


@lru_cache(maxsize=8192)
def _parse_patch(text: str, source: str) -> Patch:
    # Keyed by the templated text: an untemplated shared patch is parsed once for the whole fleet.
    return load_patch(text, source)


def _patch_texts(inventory: Inventory, node: Node) -> list[tuple[str, str, str]]:
    """``node``'s patch files as (source, file text, templated text), in order."""
    context = inventory.template_context(node)
    out = []
    for source in inventory.patches_for(node):
        text = _read_patch(inventory.root / source, source)
        out.append((source, text, render_template(text, source, context)))
    return out


def templated_patches(inventory: Inventory, node: Node) -> list[tuple[str, str]]:
    """``node``'s patch files as (source, templated text), in order."""
    return [(source, templated) for source, _text, templated in _patch_texts(inventory, node)]


def load_node_patches(inventory: Inventory, node: Node) -> list[Patch]:
    """Template and parse ``node``'s patches, in order; errors name the patch file and line."""
    return [_parse_patch(text, source) for source, text in templated_patches(inventory, node)]


@lru_cache(maxsize=1024)
def _read_cached(path: str, inode: int, mtime_ns: int, size: int) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@lru_cache(maxsize=16)
def _digest_cached(path: str, inode: int, mtime_ns: int, size: int) -> str | None:
    return sha256_file(Path(path))


def _base_digest(inventory: Inventory, role: str) -> str | None:
    # Every node of a role names the same base: hash it once per run, not once per node.
    path = inventory.root / base_artefact(role)
    identity = file_identity(path)
    return None if identity is None else _digest_cached(str(path), *identity)


def forget_file_cache() -> None:
    """Drop cached patch texts and base digests (keyed by mtime: a save within one clock tick must not be missed)."""
    _read_cached.cache_clear()
    _digest_cached.cache_clear()


def _read_patch(path: Path, source: str) -> str:
    identity = file_identity(path)
    try:
        if identity is None:
            raise FileNotFoundError(path)
        return _read_cached(str(path), *identity)
    except FileNotFoundError:  # missing, or deleted since the stat
        raise PipelineError("patch file does not exist", path=source) from None
    except UnicodeDecodeError:
        raise PipelineError("patch file is not UTF-8 text", path=source) from None


def intent_inputs(inventory: Inventory, node: Node, patches: list[Patch] | None = None) -> list[str]:
    """Named digests of everything ``node``'s rendered config depends on, in order.

    Patches count as parsed, templated documents, so a comment-only edit changes nothing here.
    """
    if patches is None:
        patches = load_node_patches(inventory, node)
    inputs = _head_inputs(inventory, node)
    inputs.extend(f"{patch.source} {sha256_bytes(canonical([patch.kind, list(patch.content)]))}" for patch in patches)
    return inputs


def _head_inputs(inventory: Inventory, node: Node) -> list[str]:
    # "name digest" strings: one line each in the ledger, so its diffs stay readable.
    renderer = "" if inventory.renderer == "builtin" else f" renderer={inventory.renderer}"
    return [
        f"node {inventory.cluster.name}/{node.name}/{node.role}{renderer}",
        f"code sha256:{code_digest()}",
        f"base {_base_digest(inventory, node.role) or 'missing'}",
    ]


def source_digest(inventory: Inventory, node: Node, texts: list[tuple[str, str]] | None = None,
                  head: list[str] | None = None) -> str:
    """Digest of what ``node``'s intent is computed from, before templating and parsing.

    Equal digests mean equal intent (templating and parsing are deterministic and the code is
    in ``head``), so a caller that remembers which intent these sources gave can skip both.
    ``texts``: (source, file text) of the patches, as read for the render this digest describes.
    """
    if texts is None:
        texts = [(source, _read_patch(inventory.root / source, source)) for source in inventory.patches_for(node)]
    head = _head_inputs(inventory, node) if head is None else head
    return sha256_bytes(canonical(["sources v1", head, inventory.template_context(node), texts]))


def intent_digest(inventory: Inventory, node: Node, patches: list[Patch] | None = None) -> str:
    """One digest of :func:`intent_inputs` (order included): what the ledger compares."""
    return sha256_bytes(canonical(intent_inputs(inventory, node, patches)))


@lru_cache(maxsize=8)
def _decrypt_base_cached(root: str, artefact: str, digest: str) -> tuple[dict[str, Any], ...]:
    # Talos's own reading of YAML (yes/no stay strings), as for patches; parsed once per role,
    # not once per node (apply_patches never modifies the documents it is given).
    return tuple(load_documents(sops.decrypt(artefact, Path(root)), artefact))


def base_documents(inventory: Inventory, role: str) -> list[dict[str, Any]]:
    """The decrypted base config for ``role`` (one sops run and one parse per role per process).

    Shared between calls: treat the documents as read-only (``apply_patches`` copies them).
    """
    artefact = base_artefact(role)
    digest = _base_digest(inventory, role)
    if digest is None:
        raise PipelineError(f"base config for role {role} is missing: run doit bootstrap", path=artefact)
    return list(_decrypt_base_cached(str(inventory.root), artefact, digest))


@dataclass(frozen=True)
class Rendered:
    """A node's rendered config: its documents, their text, and the intent digest they came from."""

    documents: list[dict[str, Any]]
    text: str
    inputs: list[str]
    source: str | None = None  # source_digest() of the patch texts these documents were rendered from

    @property
    def intent(self) -> str:
        """The digest the ledger records for these inputs."""
        return sha256_bytes(canonical(self.inputs))


def render_node(inventory: Inventory, node: Node) -> Rendered:
    """Base(role) + shared + role + node patches -> a validated machine config."""
    texts = _patch_texts(inventory, node)
    patches = [_parse_patch(templated, source) for source, _text, templated in texts]
    inputs = intent_inputs(inventory, node, patches)
    source = source_digest(inventory, node, [(name, text) for name, text, _templated in texts],
                           inputs[:len(inputs) - len(patches)])
    base = base_documents(inventory, node.role)
    if inventory.renderer == "talosctl":
        from pipeline.promote import talosctl

        output = talosctl.patch(inventory.root, dump_documents(base),
                                [(name, templated) for name, _text, templated in texts])
        documents = load_documents(output, f"talosctl output for node {node.name}")
    else:
        documents = apply_patches(base, patches)
    validate_machine_config(documents, f"node {node.name}")
    return Rendered(documents, dump_documents(documents), inputs, source)


def write_plaintext(path: Path, text: str) -> None:
    """Write plaintext under rendered/: folder 0700, file 0600 whatever the umask; atomically."""
    folder = path.parent
    if folder.is_symlink():
        raise PipelineError("refusing to write plaintext through a symlink: remove it", path=f"{folder.name}/")
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.geteuid():
        # Someone else's folder could be readable by them whatever mode we ask for.
        raise PipelineError("owned by another user: refusing to write plaintext there", path=f"{folder.name}/")
    os.chmod(folder, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
