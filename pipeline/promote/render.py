"""Rendering: a node's base config plus its patches, exactly as Talos would merge them, to rendered/."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import RENDERED_DIR, base_artefact, node_artefact, rendered_path
from pipeline.promote import talosctl
from pipeline.promote.intent import (
    _base_digest,
    _parse_patch,
    _patch_texts,
    check_secret_landing,
    intent_inputs,
    repo_path,
    source_digest,
)
from pipeline.redact import WINDOW, SecretSet, contains_secret, is_sensitive_path
from pipeline.sops import engine, goyaml
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, SopsConfig, parse_sops_config
from pipeline.state import ledger
from pipeline.state.ledger import canonical, file_identity, sha256_bytes
from pipeline.talos.baseconfig import dump_documents
from pipeline.talos.contracts import contract
from pipeline.talos.inventory import Inventory, Node
from pipeline.talos.patching import apply_patches, apply_patches_traced, load_documents
from pipeline.talos.validation import check_node_config, check_patches
from pipeline.talos.yaml import sops_hazard


@lru_cache(maxsize=8)
def _decrypt_base_cached(root: str, artefact: str, digest: str) -> tuple[dict[str, Any], ...]:
    # Talos's own reading of YAML (yes/no stay strings), as for patches; parsed once per role,
    # not once per node (apply_patches never modifies the documents it is given).
    documents = tuple(load_documents(_decrypt_base_text(Path(root), artefact), artefact))
    secrets = _sensitive_values(documents)
    _SECRETS_SEEN[(root, artefact)] = (digest, secrets)
    _BASE_SECRETS[id(documents)] = (documents, secrets)  # the same set (and index) for the taint check
    return documents


# The sensitive values of every base config this process decrypted (root, artefact -> digest, values):
# what the renderer refuses to see in a plain field, and what every message of the run is redacted against.
_SECRETS_SEEN: dict[tuple[str, str], tuple[str, SecretSet]] = {}


def _public_values(value: Any, key: str = "") -> list[str]:
    """Certificates (``crt``): public, and sharing their PEM armour with the keys beside them."""
    if isinstance(value, dict):
        return [found for name, item in value.items() for found in _public_values(item, str(name))]
    if isinstance(value, list):
        return [found for item in value for found in _public_values(item, key)]
    return [value] if key == "crt" and isinstance(value, str) else []


def _sensitive_values(documents: tuple[dict[str, Any], ...] | list[Any]) -> SecretSet:
    secrets = SecretSet()
    secrets.add_documents(documents, is_sensitive_path)
    secrets.add_public(_public_values(list(documents)))
    return secrets


# The sensitive values of a base config, by the identity of its (cached, read-only) documents: nodes of
# one role share one base, and building the index of a SecretSet is the expensive part of the taint check.
_BASE_SECRETS: dict[int, tuple[tuple[dict[str, Any], ...], SecretSet]] = {}


def _base_secrets(base: tuple[dict[str, Any], ...]) -> SecretSet:
    cached = _BASE_SECRETS.get(id(base))
    if cached is None or cached[0] is not base:
        cached = (base, _sensitive_values(base))
        _BASE_SECRETS[id(base)] = cached
    return cached[1]


# The base config's own plain texts that hold no secret, per base and rule: most of a node's plain texts
# are the base's, unchanged, and need not be looked at again for every node. Beside them, the other plain
# texts nodes of this base have had and that were found clean against the same secrets (the fleet's shared
# patch values, its label keys): judged once, not once per node. Both hold only verdicts about texts
# against this base's secret set, which is made once per base and never changed (_base_secrets).
_BASE_CLEAN: dict[tuple[Any, ...], tuple[tuple[dict[str, Any], ...], frozenset[str], set[str]]] = {}
_SEEN_CLEAN_LIMIT = 65536  # per-node texts (addresses, host names) are many: the set stays bounded


def _base_clean_texts(base: tuple[dict[str, Any], ...], rule: dict[str, Any],
                      secrets: SecretSet) -> tuple[frozenset[str], set[str]]:
    """(the base's own clean plain texts, the other plain texts found clean so far) for this base and rule."""
    patterns = _rule_patterns(rule)
    # Only the two regexes decide which texts are plain (see _plain_strings): they are the key.
    key = (id(base), *((p.pattern, p.flags) if p is not None else None for p in patterns or (None, None)))
    cached = _BASE_CLEAN.get(key)
    if cached is None or cached[0] is not base:
        texts = {text for doc in base for _path, text in _plain_strings(doc, "", *patterns)} if patterns else set()
        cached = (base, frozenset(text for text in texts if not contains_secret(text, secrets)), set())
        if len(_BASE_CLEAN) > 32:  # a process that sees many repositories (tests, watch) stays bounded
            _BASE_CLEAN.clear()
        _BASE_CLEAN[key] = cached
    return cached[1], cached[2]


def secrets_seen(root: Path) -> SecretSet:
    """The sensitive values of the base configs this process has decrypted for ``root`` (no sops run)."""
    out = SecretSet()
    for (where, _artefact), (_digest, values) in list(_SECRETS_SEEN.items()):
        if where == str(root):
            out.update(values)
    return out


def sensitive_values(documents: list[Any]) -> SecretSet:
    """The secret values of parsed machine-config (or bundle) documents: their sensitive fields."""
    return _sensitive_values(documents)


def _decrypt_base_text(root: Path, artefact: str) -> str:
    """A base config's plaintext (MAC checked): in process for an age + YAML file, else the sops binary."""
    if engine.engine_enabled():
        try:
            return engine.decrypt_text((root / artefact).read_bytes(), engine.age_identities(), path=artefact)
        except (engine.EngineUnsupported, PipelineError, OSError):
            # The binary decides (and words) every case the engine cannot open: identities only sops
            # reaches (SOPS_AGE_KEY_CMD, SSH keys), a wrong key, a tampered file, a missing one.
            pass
    return sops.decrypt(artefact, root)


def base_documents(inventory: Inventory, role: str) -> list[dict[str, Any]]:
    """The decrypted base config for ``role`` (one sops run and one parse per role per process).

    Shared between calls: treat the documents as read-only (``apply_patches`` copies them).
    """
    return list(_base_tuple(inventory, role))


def _base_tuple(inventory: Inventory, role: str) -> tuple[dict[str, Any], ...]:
    # The cached tuple itself: its identity keys the base's secret index (_base_secrets).
    artefact = base_artefact(role)
    digest = _base_digest(inventory, role)
    if digest is None:
        raise PipelineError(f"base config for role {role} is missing: run doit bootstrap", path=artefact)
    return _decrypt_base_cached(str(inventory.root), artefact, digest)


@dataclass(frozen=True)
class Rendered:
    """A node's rendered config: its documents, their text, and the intent digest they came from."""

    documents: list[dict[str, Any]]
    text: str
    inputs: list[str]
    source: str | None = None  # source_digest() of the patch texts these documents were rendered from
    patches: tuple[Any, ...] = ()  # the parsed patches, in order (to name the one that did something)
    base: tuple[dict[str, Any], ...] = ()  # the base documents they were applied to

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
    base = _base_tuple(inventory, node.role)
    version = contract(inventory.cluster.talos_version)
    check_patches(patches, version, ("strategic",))  # Talos's strict decoding, per patch file (names its line)
    provenance = None
    if inventory.renderer == "talosctl":
        from pipeline.promote import talosctl

        output = talosctl.patch(inventory.root, dump_documents(list(base)),
                                [(name, templated) for name, _text, templated in texts])
        documents = load_documents(output, f"talosctl output for node {node.name}")
    else:
        documents, provenance = apply_patches_traced(list(base), patches)
    check_patches(patches, version, ("json6902",))  # after the merge, as Talos applies them first
    # Types as Talos decodes them (extraArgs/sysctls/labels are strings), then the version's schema and rules.
    documents = check_node_config(documents, node.name, version, provenance)
    check_secret_landing(inventory, node, documents)  # values from encrypted sources stay encrypted
    return Rendered(documents, _rendered_text(documents), inputs, source, tuple(patches), base)


def _rendered_text(documents: list[Any]) -> str:
    """The rendered file's text: go-yaml v3's own layout (Talos and sops write with it), refusing a
    string sops would corrupt. The line writer is used where it answers (most of a fleet's configs)."""
    problem = sops_hazard(documents)
    if problem:
        raise PipelineError(problem)
    try:
        return goyaml.emit_yaml(documents)
    except goyaml.EngineUnsupported:
        return dump_documents(documents)


# --- taint: no secret value in a field sops leaves in plaintext -------------------------------


def _plain_strings(value: Any, path: str, encrypted: re.Pattern[str] | None,
                   unencrypted: re.Pattern[str] | None) -> Iterator[tuple[str, str]]:
    """(dotted path, text) of every key and string the creation rule leaves in plaintext."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            where = f"{path}.{name}" if path else name
            yield f"{path or '(top)'} (a key)", name  # a key is never encrypted; never named (it may be the secret)
            if encrypted is not None and encrypted.search(name):
                continue
            if unencrypted is not None and not unencrypted.search(name):
                continue
            yield from _plain_strings(item, where, encrypted, unencrypted)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plain_strings(item, f"{path}[{index}]", encrypted, unencrypted)
    elif isinstance(value, str):
        yield path, value


# Per pair of rule regexes, whether the value under a key is left in plaintext (see _plain_strings): the
# same few hundred key names recur in every node of a fleet, so each is searched once per pattern pair.
_KEY_VERDICTS: dict[tuple[Any, ...], dict[str, bool]] = {}


def _key_verdicts(encrypted: re.Pattern[str] | None, unencrypted: re.Pattern[str] | None) -> dict[str, bool]:
    key = tuple((p.pattern, p.flags) if p is not None else None for p in (encrypted, unencrypted))
    verdicts = _KEY_VERDICTS.get(key)
    if verdicts is None or len(verdicts) > 65536:  # bounded: a fleet has a few hundred key names
        if len(_KEY_VERDICTS) > 64:
            _KEY_VERDICTS.clear()
        verdicts = _KEY_VERDICTS[key] = {}
    return verdicts


def _collect_plain_texts(value: Any, patterns: tuple[re.Pattern[str] | None, re.Pattern[str] | None],
                         verdicts: dict[str, bool], known_clean: frozenset[str], out: set[str]) -> None:
    """Add to ``out`` every text of ``value`` that _plain_strings yields, of WINDOW characters or more and
    not in ``known_clean`` (the same texts, without building their paths)."""
    encrypted, unencrypted = patterns
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                name = str(key)
                if len(name) >= WINDOW and name not in known_clean:
                    out.add(name)  # a key is never encrypted
                plain = verdicts.get(name)
                if plain is None:
                    plain = verdicts[name] = not (
                        (encrypted is not None and encrypted.search(name))
                        or (unencrypted is not None and not unencrypted.search(name)))
                if plain:
                    stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and len(value) >= WINDOW and value not in known_clean:
            out.add(value)


def _rule_patterns(rule: dict[str, Any]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None] | None:
    """The rule's (encrypted_regex, unencrypted_regex) compiled; None when the taint check does not apply."""
    enc, unenc = rule.get("encrypted_regex"), rule.get("unencrypted_regex")
    if not enc and not unenc:
        return None  # every value is encrypted (or suffix rules: the guard judges the artefact)
    try:
        return (re.compile(enc) if isinstance(enc, str) and enc else None,
                re.compile(unenc) if isinstance(unenc, str) and unenc else None)
    except re.error:
        return None  # .sops.yaml is reported by sops and the guard


def _tainted_path(documents: list[Any], secrets: SecretSet, rule: dict[str, Any],
                  known_clean: frozenset[str] = frozenset(), seen_clean: set[str] | None = None) -> str | None:
    """The first plaintext position holding a known secret (whole, a piece of 8+ characters, or a transform).

    ``known_clean``: texts already found clean against these secrets (the base config's own plain texts).
    ``seen_clean``: more such texts, to which this call adds the texts it finds clean.
    """
    patterns = _rule_patterns(rule)
    if patterns is None:
        return None
    # One look over every plain text at once (NUL never occurs in a secret, so no window spans two texts):
    # a clean node, the usual case, costs one set intersection instead of one per field, and no path is
    # spelled out; only a node that may hold a secret is walked again to name the first place.
    texts: set[str] = set()
    verdicts = _key_verdicts(*patterns)
    for doc in documents:
        _collect_plain_texts(doc, patterns, verdicts, known_clean, texts)
    if seen_clean is not None:
        texts = {text for text in texts if text not in seen_clean}
    if not contains_secret("\0".join(texts), secrets):
        # Each text is clean too (its windows are windows of the joined text): remember them.
        if seen_clean is not None and texts:
            if len(seen_clean) > _SEEN_CLEAN_LIMIT:
                seen_clean.clear()
            seen_clean.update(texts)
        return None
    found = [(index, path, text) for index, doc in enumerate(documents)
             for path, text in _plain_strings(doc, "", *patterns) if text not in known_clean]
    for index, path, text in found:
        if contains_secret(text, secrets):
            return path if len(documents) == 1 else f"document {index + 1}: {path}"
    return None


def _refuse_tainted(inventory: Inventory, node: Node, result: Rendered,
                    shape: dict[str, Any] | bool | None = False) -> None:
    """Refuse a rendered node whose plain fields hold a value of the base config's secrets.

    ``shape``: the node's ``_rule_shape``, when the caller has it already (False: look it up).
    """
    if shape is False:
        shape = _rule_shape(inventory.root, node_artefact(inventory, node))
    if not isinstance(shape, dict) or not result.base:
        return
    secrets = _base_secrets(result.base)
    path = _tainted_path(result.documents, secrets, shape, *_base_clean_texts(result.base, shape, secrets))
    if path is None:
        return
    culprit = "its patches"
    if inventory.renderer != "talosctl":
        # Which patch did it: the first after which that field holds a secret.
        for count in range(1, len(result.patches) + 1):
            try:
                partial = apply_patches(list(result.base), list(result.patches[:count]))
            except PipelineError:
                break
            if _tainted_path(partial, secrets, shape) is not None:
                culprit = result.patches[count - 1].source
                break
    raise PipelineError(f"node {node.name}: {path} would hold a secret (a value of the secrets bundle or base "
                        "config) in a field sops leaves in plaintext: refused (copy secrets only into encrypted "
                        "fields)", path=culprit if culprit != "its patches" else None)


# A signal's cleanup (pipeline.wiring.entry) purges rendered/ and exits. Under `doit -n N -P thread` a
# worker thread may be writing plaintext meanwhile: writes hold this lock, and once `stop_plaintext()`
# has returned none starts, so nothing appears after the purge. Re-entrant: in a serial run the handler
# runs in the very thread it interrupted, possibly mid-write.
_PLAINTEXT_LOCK = threading.RLock()
_PLAINTEXT_STOPPED = threading.Event()


def stop_plaintext() -> None:
    """From now on no plaintext is written in this process; waits for a write under way to finish."""
    with _PLAINTEXT_LOCK:
        _PLAINTEXT_STOPPED.set()


def write_plaintext(path: Path, text: str) -> None:
    """Write plaintext under rendered/: folder 0700, file 0600 whatever the umask; atomically."""
    with _PLAINTEXT_LOCK:
        if _PLAINTEXT_STOPPED.is_set():
            raise PipelineError("stopping: no plaintext is written any more", path=f"{path.parent.name}/")
        _write_plaintext(path, text)


def _check_plaintext_folder(folder: Path, *, create: bool) -> None:
    """Refuse a rendered/ that is a symlink or someone else's (asked also when nothing is written to it:
    the run's journal lives there, and a refused folder is refused on every path alike)."""
    if folder.is_symlink():
        raise PipelineError("refusing to write plaintext through a symlink: remove it", path=f"{folder.name}/")
    if create:
        folder.mkdir(mode=0o700, exist_ok=True)
    try:
        owner = folder.stat().st_uid
    except FileNotFoundError:
        return
    if owner != os.geteuid():
        # Someone else's folder could be readable by them whatever mode we ask for.
        raise PipelineError("owned by another user: refusing to write plaintext there", path=f"{folder.name}/")


def _write_plaintext(path: Path, text: str) -> None:
    folder = path.parent
    _check_plaintext_folder(folder, create=True)
    os.chmod(folder, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            ledger.write_all(fd, text.encode())  # a short write (full disk) raises
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# What encrypt must know about a rendered file travels with it from render: the intent it was
# rendered from (so the ledger records what was actually rendered even if a patch is saved again
# mid-promotion), its keyed digest and the rule shape. Within one process (doit -n 1, -P thread,
# watch) it is handed over in memory, tied to the file's identity; a `doit -n N` worker process
# also attaches it to the file (see _attach_facts), since the encrypt step may run in another
# worker. A file creation is the dearest step of a render on many file systems: neither makes one.
_HANDOFF: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
DOCUMENTS = "documents"  # the handed-over facts' key for the rendered documents (never in a sidecar)
_TEXT = "text"  # ... and for the rendered text, when render wrote no file
_IN_MEMORY = (-1, -1, -1)  # the identity of a rendered config that exists only in this process


def _intent_sidecar(inventory: Inventory, node: Node) -> Path:
    return inventory.root / RENDERED_DIR / f".{inventory.artefact_name(node)}.intent"


def _in_worker_process() -> bool:
    # doit -n N runs tasks in multiprocessing workers; doit has imported multiprocessing by then.
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


# Across worker processes the facts ride on the rendered file itself, as an extended attribute of
# its inode (a re-render makes a new inode, so they can never describe other content); a file
# system without user attributes gets the sidecar file instead.
_FACTS_ATTRIBUTE = "user.talos-promote.render"


def _attach_facts(inventory: Inventory, node: Node, path: Path, facts: dict[str, Any]) -> None:
    data = json.dumps(facts, separators=(",", ":")).encode()
    try:
        os.setxattr(path, _FACTS_ATTRIBUTE, data, follow_symlinks=False)
    except OSError:  # ENOTSUP, or too large for this file system
        write_plaintext(_intent_sidecar(inventory, node), data.decode())


def _rendered_facts(inventory: Inventory, node: Node, plain: Path) -> dict[str, Any] | None:
    """What the render of ``plain`` recorded for encrypt (None: unknown here, render again)."""
    handed = _HANDOFF.pop(str(plain), None)
    if handed is not None and (handed[0] is _IN_MEMORY or handed[0] == file_identity(plain)):
        return handed[1]
    try:
        facts = json.loads(os.getxattr(plain, _FACTS_ATTRIBUTE, follow_symlinks=False))
    except (OSError, ValueError):
        try:
            facts = json.loads(_intent_sidecar(inventory, node).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return facts if isinstance(facts, dict) and "inputs" in facts else None


def render(inventory: Inventory, node: Node) -> Path:
    """Render ``node`` to rendered/<cluster>-<node>.yaml (0600 in a 0700 folder)."""
    return _render(inventory, node)[0]


def render_values(inventory: Inventory, node: Node, *, to_disk: bool = True) -> dict[str, Any]:
    """Render ``node`` like :func:`render`; returns the digests ``is_current(last_render=...)`` takes.

    ``to_disk=False``: for a run that encrypts in this process and removes rendered/ at its end, the
    rendered config may stay in memory (unless a worker process, talosctl or the sops binary needs it).
    """
    result = _render(inventory, node, to_disk=to_disk)[1]
    return {"source": result.source, "intent": result.intent}


def _render(inventory: Inventory, node: Node, *, to_disk: bool = True) -> tuple[Path, Rendered]:
    result = render_node(inventory, node)
    # One look-up of the creation rule serves the taint check and the keyed digest.
    shape = _rule_shape(inventory.root, node_artefact(inventory, node))
    _refuse_tainted(inventory, node, result, shape)
    path = repo_path(inventory.root, rendered_path(inventory, node))
    validator = talosctl.binary()
    worker = _in_worker_process()
    # The keyed digest is taken here, while the documents are in memory: encrypt need not parse
    # the rendered file again (a few ms a node, which adds up over a fleet).
    digest = ledger.keyed_digest(result.documents, ledger.canonical(shape)) if shape is not None else None
    facts = {"inputs": result.inputs, "rendered": digest, "shape": shape}
    if not (to_disk or validator or worker):
        # Nothing in this run reads the file (the run purges rendered/ when it ends, and encrypt
        # follows in this process): the plaintext stays in memory, and never touches the disk
        # unless the sops binary has to encrypt it (see materialise).
        _check_plaintext_folder(path.parent, create=False)
        with _PLAINTEXT_LOCK:
            if _PLAINTEXT_STOPPED.is_set():
                raise PipelineError("stopping: no plaintext is rendered any more", path=f"{path.parent.name}/")
            _HANDOFF[str(path)] = (_IN_MEMORY, {**facts, DOCUMENTS: result.documents, _TEXT: result.text})
        return path, result
    write_plaintext(path, result.text)
    if validator is not None:
        talosctl.validate(path, f"node {node.name}")  # Talos's own validator, when it is installed
    identity = file_identity(path)
    if identity is not None:
        # In process the documents travel too: encrypt need not parse the file render has just written.
        _HANDOFF[str(path)] = (identity, {**facts, DOCUMENTS: result.documents})
    if worker:
        _attach_facts(inventory, node, path, facts)
    return path, result


def materialise(path: Path, facts: dict[str, Any]) -> None:
    """Write a rendered config that render kept in memory to ``path`` (for the sops binary to read).

    Written over whatever is there (a file an earlier `keep=1` run left holds older content), once.
    """
    text = facts.pop(_TEXT, None)
    if isinstance(text, str):
        write_plaintext(path, text)


def _rule_shape(root: Path, artefact: str) -> dict[str, Any] | None:
    """What the creation rule for ``artefact`` encrypts (None: no rule matches).

    It is part of what the artefact encodes (a new regex means re-encrypt); who it is encrypted
    for is compared on the artefact itself, and is `doit rekey`'s business.
    """
    config = _sops_config(root)
    rule = config.rule_for(artefact) if config else None
    if rule is None:
        return None
    return {key: rule.raw.get(key) for key in ("encrypted_regex", "unencrypted_regex", "encrypted_suffix",
                                               "unencrypted_suffix", "mac_only_encrypted")}


@lru_cache(maxsize=4)
def _parse_sops_config(text: str) -> SopsConfig:
    return parse_sops_config(text)


def _sops_config(root: Path) -> SopsConfig | None:
    """`.sops.yaml`, read and parsed once per process while the file stays the same (it is asked per node)."""
    path = repo_path(root, SOPS_CONFIG)
    identity = file_identity(path)
    if identity is None:
        return None
    return _read_sops_config(str(path), *identity)


@lru_cache(maxsize=4)
def _read_sops_config(path: str, inode: int, mtime_ns: int, size: int) -> SopsConfig:
    with open(path, encoding="utf-8") as handle:
        return _parse_sops_config(handle.read())
