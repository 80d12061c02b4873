"""Intent: what a node's rendered config depends on, as named digests, and whether its artefact is current.

Patches count as parsed, templated documents (a comment-only edit changes nothing); the ledger
records the digests, so a fresh clone or CI without a key can tell which nodes are current.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import VARS_ARTEFACT, base_artefact, node_artefact
from pipeline.promote import secrets
from pipeline.sops.config import load_sops_config
from pipeline.state import ledger
from pipeline.state.ledger import Ledger, canonical, file_identity, sha256_bytes, sha256_file
from pipeline.talos.inventory import PATCH_DIR, Inventory, Node
from pipeline.talos.patching import Patch, load_patch
from pipeline.talos.templating import render_template

# Bump when rendering changes meaning in a way the code digest below would not catch.
RENDER_FORMAT = 2  # 2: the package layout (code digest over talos/ and promote/render.py)


_RENDERING_CODE = ("talos/patching.py", "promote/render.py", "talos/templating.py", "talos/sandbox.py",
                   "talos/validation.py", "talos/yaml.py", "talos/schema.py", "talos/baseconfig.py")


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


@lru_cache(maxsize=8192)
def repo_path(root: Path, name: str) -> Path:
    """``root / name``, made once per pair: every node asks for its patch files several times a run, and
    building a Path (parsing and normalising its parts) cost more than the stat that follows it."""
    return root / name


def _patch_texts(inventory: Inventory, node: Node) -> list[tuple[str, str, str]]:
    """``node``'s patch files as (source, file text, templated text), in order.

    An encrypted patch is decrypted in memory (not templated); a template that reads ``secrets``
    gets the decrypted variables. Neither is ever written to disk.
    """
    context = inventory.template_context(node)
    out = []
    for source in inventory.patches_for(node):
        text = _read_patch(repo_path(inventory.root, source), source)
        if secrets.is_sealed(text):
            out.append((source, text, secrets.sealed_text(inventory.root, source)))
        elif secrets.uses_secrets(text):
            out.append((source, text, _render_with_secrets(inventory, node, text, source)))
        else:
            out.append((source, text, render_template(text, source, context)))
    return out


def _render_with_secrets(inventory: Inventory, node: Node, text: str, source: str) -> str:
    # Templated with stand-ins first: a template error then shows "(secret NAME)", never a value.
    _placeholder_render(inventory, node, text, source)
    values = secrets.vars_values(inventory.root)
    try:
        return render_template(text, source, inventory.template_context(node, secrets=values))
    except PipelineError as error:
        raise PipelineError("template error on a secret value (not shown)", path=source, line=error.line) from None


def _placeholder_render(inventory: Inventory, node: Node, text: str, source: str) -> str:
    """A template that reads ``secrets``, rendered keylessly with each name standing for itself."""
    secrets.check_names(text, source, secrets.vars_names(inventory.root))
    return render_template(text, source, inventory.template_context(node, secrets=secrets.placeholders(inventory.root)))


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
    path = repo_path(inventory.root, base_artefact(role))
    identity = file_identity(path)
    return None if identity is None else _digest_cached(str(path), *identity)


def forget_file_cache() -> None:
    """Drop cached patch texts and base digests (keyed by mtime: a save within one clock tick must not be missed)."""
    _read_cached.cache_clear()
    _digest_cached.cache_clear()


def _inside_patches(path: Path, source: str) -> None:
    """A patch must resolve inside the repository's patches/: a symlink out of it (to a key file) is refused."""
    depth = sum(1 for part in source.split("/") if part not in ("", "."))  # len(Path(source).parts), cheaper
    # Fast path (every node reads its patches, twice): no symlink from patches/ down to the file. Plain
    # strings: building Path objects for each parent cost more than the lstat calls themselves.
    text = str(path)
    for _ in range(depth):
        if os.path.islink(text):
            break
        text = os.path.dirname(text)
    else:
        return
    root = path.parents[depth - 1]
    folder = os.path.realpath(root / PATCH_DIR)
    real = os.path.realpath(path)
    if not real.startswith(folder + os.sep) or not folder.startswith(os.path.realpath(root) + os.sep):
        raise PipelineError(f"patch file resolves outside {PATCH_DIR}/ (a symlink out of it): refused",
                            path=source)


def _read_patch(path: Path, source: str) -> str:
    identity = file_identity(path)
    key = (str(path), identity)
    if key not in _CONFINED:
        # Once per file state (each node reads a shared patch twice per run): a symlink swapped in later
        # is another file state, and is judged again.
        _inside_patches(path, source)
        if len(_CONFINED) > 65536:
            _CONFINED.clear()
        _CONFINED.add(key)
    try:
        if identity is None:
            raise FileNotFoundError(path)
        return _read_cached(str(path), *identity)
    except FileNotFoundError:  # missing, or deleted since the stat
        raise PipelineError("patch file does not exist", path=source) from None
    except UnicodeDecodeError:
        raise PipelineError("patch file is not UTF-8 text", path=source) from None


_CONFINED: set[tuple[str, Any]] = set()


def _patch_line(patch: Patch) -> str:
    # Parsed patches are cached (_parse_patch), so a shared patch is the same object for every node:
    # its digest is taken once per run, not once per node.
    known = _PATCH_LINES.get(id(patch))
    if known is not None and known[0] is patch:
        return known[1]
    line = f"{patch.source} {sha256_bytes(canonical([patch.kind, list(patch.content)]))}"
    if len(_PATCH_LINES) > 16384:
        _PATCH_LINES.clear()
    _PATCH_LINES[id(patch)] = (patch, line)
    return line


_PATCH_LINES: dict[int, tuple[Patch, str]] = {}


@lru_cache(maxsize=2)
def _ledger_cached(path: str, inode: int, mtime_ns: int, size: int) -> Ledger:
    with open(path, encoding="utf-8") as handle:
        return ledger.parse_ledger(handle.read())


def _recorded(root: Path) -> Ledger:
    identity = file_identity(root / ledger.LEDGER_FILE)
    return Ledger() if identity is None else _ledger_cached(str(root / ledger.LEDGER_FILE), *identity)


def intent_inputs(inventory: Inventory, node: Node, patches: list[Patch] | None = None) -> list[str]:
    """Named digests of everything ``node``'s rendered config depends on, in order.

    Patches count as parsed, templated documents, so a comment-only edit changes nothing here.
    Keyless, also for the secrets a user brings: a template that reads ``secrets`` counts as
    rendered with stand-ins, plus one keyed digest per variable it reads; an encrypted patch counts
    as the keyed digest of its decrypted documents. Keyed digests come from the ledger while the
    encrypted files are the ones it recorded (else: a one-line "changed since promoted" error,
    unless this process decrypted them for a render).
    """
    root = inventory.root
    sources = inventory.patches_for(node)
    given = list(patches) if patches is not None and len(patches) == len(sources) else None
    inputs = _head_inputs(inventory, node)
    used: dict[str, None] = {}
    context: dict[str, Any] | None = None
    for index, source in enumerate(sources):
        text = _read_patch(repo_path(root, source), source)
        if secrets.is_sealed(text):
            inputs.append(f"{source} {secrets.sealed_digest(root, source, _recorded(root))}")
        elif secrets.uses_secrets(text):
            names, whole = secrets.used_names(text)
            used.update(dict.fromkeys(secrets.vars_names(root) if whole else (name for name, _line in names)))
            inputs.append(_patch_line(_parse_patch(_placeholder_render(inventory, node, text, source), source)))
        elif given is not None:
            inputs.append(_patch_line(given[index]))
        else:
            context = context or inventory.template_context(node)
            inputs.append(_patch_line(_parse_patch(render_template(text, source, context), source)))
    if used:
        digests = secrets.name_digests(root, _recorded(root))
        inputs.extend(f"secrets.{name} {digests.get(name, 'missing')}" for name in sorted(used))
    return inputs


def secret_sources(inventory: Inventory, node: Node) -> tuple[list[str], bool]:
    """``node``'s encrypted patches, and whether any of its templates reads ``secrets`` (keyless)."""
    sealed, uses = [], False
    for source in inventory.patches_for(node):
        text = _read_patch(repo_path(inventory.root, source), source)
        if secrets.is_sealed(text):
            sealed.append(source)
        elif secrets.uses_secrets(text):
            uses = True
    return sealed, uses


def refresh_secret_digests(inventory: Inventory) -> list[str]:
    """Before a promotion: record keyed digests of changed encrypted sources some node uses (needs the key)."""
    sealed: list[str] = []
    uses = False
    for node in inventory.nodes.values():
        try:
            node_sealed, node_uses = secret_sources(inventory, node)
        except PipelineError:
            continue  # the node's render reports it
        sealed += node_sealed
        uses = uses or node_uses
    if not sealed and not uses:
        return []
    return secrets.refresh(inventory.root, sealed, uses)


def user_secret_values(inventory: Inventory) -> set[str]:
    """Every value of the user's own secrets the nodes use (decrypted in memory): what reports must never show."""
    values: set[str] = set()
    for node in inventory.nodes.values():
        for taint in _taints(inventory, node):
            if len(taint.value) >= 4:
                values.add(taint.value)
    return values


def _taints(inventory: Inventory, node: Node) -> list[secrets.Taint]:
    root = inventory.root
    taints: list[secrets.Taint] = []
    for source in inventory.patches_for(node):
        text = _read_patch(repo_path(root, source), source)
        if secrets.is_sealed(text):
            taints += secrets.sealed_taints(root, source)
        elif secrets.uses_secrets(text):
            names, whole = secrets.used_names(text)
            values = secrets.vars_values(root)
            taints += secrets.var_taints(values, list(values) if whole else [name for name, _ in names], source)
    return taints


def check_secret_landing(inventory: Inventory, node: Node, documents: list[Any]) -> None:
    """Refuse ``node``'s rendered documents if a value from ``secrets.`` or an encrypted patch sits where
    the artefact's creation rule leaves plaintext (one line: patch and dotted path, never the value)."""
    taints = _taints(inventory, node)
    if taints:
        secrets.check_landing(documents, taints, load_sops_config(inventory.root), node_artefact(inventory, node))


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
        texts = [(source, _read_patch(repo_path(inventory.root, source), source))
                 for source in inventory.patches_for(node)]
    head = _head_inputs(inventory, node) if head is None else head
    parts: list[Any] = ["sources v1", head, inventory.template_context(node), texts]
    if any(secrets.uses_secrets(text) for _source, text in texts):
        # The variables' ciphertext (and the ledger's digests of it) are sources too.
        parts.append(["secrets", sha256_file(inventory.root / VARS_ARTEFACT)])
    return sha256_bytes(canonical(parts))


def intent_digest(inventory: Inventory, node: Node, patches: list[Patch] | None = None) -> str:
    """One digest of :func:`intent_inputs` (order included): what the ledger compares."""
    return sha256_bytes(canonical(intent_inputs(inventory, node, patches)))


def is_current(inventory: Inventory, record: Ledger, node: Node,
               last_render: Mapping[str, Any] | None = None) -> bool:
    """Whether ``node``'s artefact is what its intent renders today, judged from the ledger alone.

    No decryption and no doit database: this is what makes a fresh clone a no-op.
    Bad input counts as "not current" so that the task runs and reports it.
    ``last_render``: what :func:`render_values` returned the last time this node was rendered
    here (doit keeps it): when the node's sources are still those, their intent is known without
    templating and parsing the patches again.
    """
    entry = record.nodes.get(node.name)
    if not entry or entry.get("artefact") != node_artefact(inventory, node):
        return False
    try:
        known = (bool(last_render) and last_render.get("intent") == entry.get("intent")
                 and last_render.get("source") == source_digest(inventory, node))
        if not known and entry.get("intent") != intent_digest(inventory, node):
            return False
    except PipelineError:
        return False
    return sha256_file(inventory.root / node_artefact(inventory, node)) == entry.get("artefact_sha256")


def _named(inputs: Any) -> dict[str, str]:
    # Tolerant: a hand-resolved or older ledger must never crash a promotion.
    if not isinstance(inputs, list):
        return {}
    return dict(item.rsplit(" ", 1) for item in inputs if isinstance(item, str) and " " in item)


def describe_trigger(entry: dict[str, Any], inputs: list[str], artefact_known: bool) -> str:
    """Why a node was redone, in the user's terms: which intent file changed, new, base changed."""
    if not entry:
        return "new"
    before = _named(entry.get("inputs"))
    now = _named(inputs)
    if not before:
        return "first promotion recorded"
    changed = [name for name in now if before.get(name) != now[name]]
    changed += [f"{name} removed" for name in before if name not in now]
    labels = {"base": "base config changed", "code": "pipeline code changed", "node": "inventory entry changed"}
    outside = "" if artefact_known else "artefact changed outside the pipeline"
    if changed:
        # A tampered artefact is named even when the intent changed too: never rewritten without a word.
        return ", ".join([*(labels.get(name, f"{name} changed") for name in changed), *([outside] if outside else [])])
    return outside or "intent unchanged"
