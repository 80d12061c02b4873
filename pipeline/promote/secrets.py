"""The secrets a user brings: encrypted template variables and encrypted patches.

``encrypted/vars.encrypted.yaml`` is a whole-file SOPS mapping of names to values; patch templates
read them as ``{{ secrets.NAME }}``. A patch file that is itself a SOPS file (``patches/X.sops.yaml``)
is decrypted in memory at render time. Plaintext of either never touches the disk.

What may be public stays keyless: the variable names (sops never encrypts keys), the ciphertext
digests, and, in the ledger's ``bases``, a keyed digest (HMAC, key derived from the cluster secret) of
each variable and of each encrypted patch's documents. With those, ``doit check`` tells without a
key exactly which nodes a changed variable makes stale, and a no-op ``doit`` runs no sops.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.layout import VARS_ARTEFACT, base_artefact
from pipeline.sops import metadata
from pipeline.sops import runner as sops
from pipeline.sops.config import VARS_RULE, CreationRule, SopsConfig, load_sops_config
from pipeline.state import ledger
from pipeline.state.ledger import Ledger, canonical, file_identity, sha256_file
from pipeline.talos.inventory import ROLES
from pipeline.talos.yaml import load_documents

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `secrets.NAME` or `secrets['NAME']` in a template; any other use of `secrets` means every name.
_USE = re.compile(r"\bsecrets\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(['\"])([^'\"]*)\2\s*\])")
_ANY = re.compile(r"\bsecrets\b")
_SEALED = re.compile(r"^sops:[ \t]*$", re.MULTILINE)
_SEALED_MAC = re.compile(r"^[ \t]+mac:[ \t]*ENC\[", re.MULTILINE)
_ENC = re.compile(r"^ENC\[[A-Z0-9_]+,data:")

# Ledger `bases` keys (carried along by rekey and rotate like every artefact digest).
_VARS_SHA = "vars"
_VARS_NAME = "vars "  # + NAME: keyed digest of that variable's value
_SEALED_SHA = "sealed "  # + patch source: sha256 of its ciphertext
_SEALED_DOCS = " documents"  # "sealed <source> documents": keyed digest of its decrypted documents

# Values shorter than this are not looked for in a rendered config (they would match by chance);
# from _SUBSTRING on, a value is found inside a longer string too (`TS_AUTHKEY=<value>`).
_SHORTEST = 4
_SUBSTRING = 8

# Plaintext of the variables and of encrypted patches, in memory only, keyed by the file's identity.
_LOCK = threading.Lock()
_PLAIN: dict[str, tuple[tuple[int, int, int], Any]] = {}


# --- what templates use (keyless) --------------------------------------------------------------


# Jinja expressions and statements: only there does `secrets` mean the variables (a comment or a path
# like /var/lib/secrets in plain YAML does not).
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def _expressions(text: str) -> list[tuple[int, str]]:
    return [(match.start(), match.group(0)) for match in _JINJA.finditer(text) if "secrets" in match.group(0)]


def uses_secrets(text: str) -> bool:
    """Whether a patch template reads ``secrets`` at all (only those get it in their context)."""
    return "secrets" in text and any(_ANY.search(expr) for _start, expr in _expressions(text))


def used_names(text: str) -> tuple[list[tuple[str, int]], bool]:
    """(name, line) of each ``secrets.NAME`` a template reads, and whether it reads ``secrets`` whole."""
    found: list[tuple[str, int]] = []
    whole = False
    for start, expr in _expressions(text):
        uses = [(m.group(1) or m.group(3), text.count("\n", 0, start + m.start()) + 1) for m in _USE.finditer(expr)]
        found += uses
        whole = whole or len(_ANY.findall(expr)) > len(uses)
    return found, whole


def is_sealed(text: str) -> bool:
    """Whether a patch file is a SOPS file (a top-level ``sops:`` block with a MAC)."""
    return bool(_SEALED.search(text)) and bool(_SEALED_MAC.search(text))


def vars_names(root: Path) -> tuple[str, ...]:
    """The variable names, read without a key (sops encrypts values, never keys)."""
    path = root / VARS_ARTEFACT
    identity = file_identity(path)
    if identity is None:
        return ()
    return _names_cached(str(path), *identity)


@lru_cache(maxsize=8)
def _names_cached(path: str, inode: int, mtime_ns: int, size: int) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.load(handle, Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError):
        raise PipelineError("not a SOPS file of variables (not valid YAML)", path=VARS_ARTEFACT) from None
    if not isinstance(doc, dict) or "sops" not in doc:
        raise PipelineError("not a SOPS file of variables (no sops metadata)", path=VARS_ARTEFACT)
    return tuple(str(key) for key in doc if key != "sops")


def check_names(text: str, source: str, names: tuple[str, ...]) -> None:
    """A template that reads a variable the vars file does not hold: one line naming file:line and the name."""
    for name, line in used_names(text)[0]:
        if name not in names:
            raise PipelineError(f"undefined secret variable secrets.{name} (set it: doit secrets set {name})",
                                path=source, line=line)


def placeholders(root: Path) -> dict[str, str]:
    """What ``secrets`` is for keyless templating (intent digests): each name stands for itself."""
    return {name: f"(secret {name})" for name in vars_names(root)}


# --- plaintext, in memory ----------------------------------------------------------------------


def _cached_plain(root: Path, rel: str, make: Any) -> Any:
    path = root / rel
    identity = file_identity(path)
    key = str(path)
    with _LOCK:
        held = _PLAIN.get(key)
    if held is not None and held[0] == identity:
        return held[1]
    value = make()
    if identity is not None and identity == file_identity(path):
        with _LOCK:
            _PLAIN[key] = (identity, value)
    return value


def has_plain(root: Path, rel: str) -> bool:
    """Whether this process holds the decrypted content of ``rel`` as it is now (so a key is at hand)."""
    held = _PLAIN.get(str(root / rel))
    return held is not None and held[0] == file_identity(root / rel)


def forget() -> None:
    """Drop every decrypted value this process holds."""
    with _LOCK:
        _PLAIN.clear()


def _parse_vars(text: str) -> dict[str, Any]:
    # A variable is typed as sops (go-yaml v3) wrote it: `on`, `0o17` or `2024-06-01` are what Talos reads.
    try:
        documents = load_documents(text, VARS_ARTEFACT)
    except PipelineError:
        raise PipelineError("decrypts to something that is not YAML", path=VARS_ARTEFACT) from None
    data = documents[0] if documents else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PipelineError("must hold a mapping of names to values", path=VARS_ARTEFACT)
    for name, value in data.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise PipelineError(f"variable name {str(name)[:40]!r} must be letters, digits and _",
                                path=VARS_ARTEFACT)
        if isinstance(value, dict | list) or value is None:
            raise PipelineError(f"variable {name} must be a string (or number)", path=VARS_ARTEFACT)
    return data


def vars_values(root: Path) -> dict[str, Any]:
    """The decrypted variables (one sops run per process while the file stays the same; never on disk)."""
    if not (root / VARS_ARTEFACT).is_file():
        return {}
    return _cached_plain(root, VARS_ARTEFACT, lambda: _parse_vars(sops.decrypt(VARS_ARTEFACT, root)))


def sealed_text(root: Path, source: str) -> str:
    """An encrypted patch, decrypted in memory (sops checks its MAC)."""
    return _cached_plain(root, source, lambda: sops.decrypt(source, root))


# --- keyed digests -----------------------------------------------------------------------------


def _hmac_key(root: Path) -> bytes:
    """The ledger's HMAC key (derived from the cluster secret): from a base config, decrypted in memory."""
    for role in ROLES:
        rel = base_artefact(role)
        if (root / rel).is_file():
            def load(rel: str = rel) -> bytes | None:
                docs = [doc for doc in load_documents(sops.decrypt(rel, root), rel) if doc is not None]
                return ledger.derive_key(docs)
            key = _cached_plain(root, rel, load)
            if key:
                return key
    raise PipelineError("no base config holds the cluster secret: run doit bootstrap", path=base_artefact(ROLES[0]))


def _keyed(key: bytes, label: str, value: Any) -> str:
    return "hmac-sha256:" + hmac.new(key, f"talos-promote secrets v1|{label}|".encode() + canonical(value),
                                     hashlib.sha256).hexdigest()


class SecretsChanged(PipelineError):
    """An encrypted source changed since it was recorded: only a key holder can say for which values."""


def _stale(rel: str) -> PipelineError:
    return SecretsChanged("changed since the nodes that use it were promoted (its values are compared "
                         "with a key): run doit", path=rel)


def name_digests(root: Path, record: Ledger) -> dict[str, str]:
    """Keyed digest of each variable: from the ledger when the vars file is the one it recorded,
    else computed if this process has decrypted it (a render), else a one-line "stale" error.
    """
    sha = sha256_file(root / VARS_ARTEFACT)
    if sha is None:
        return {}
    if record.bases.get(_VARS_SHA) == sha:
        return {key[len(_VARS_NAME):]: value for key, value in record.bases.items() if key.startswith(_VARS_NAME)}
    if not has_plain(root, VARS_ARTEFACT):
        raise _stale(VARS_ARTEFACT)
    key = _hmac_key(root)
    return {name: _keyed(key, f"var {name}", value) for name, value in vars_values(root).items()}


def sealed_digest(root: Path, source: str, record: Ledger, documents: Any = None) -> str:
    """Keyed digest of an encrypted patch's documents (a comment-only edit keeps it); see name_digests."""
    sha = sha256_file(root / source)
    if record.bases.get(_SEALED_SHA + source) == sha and record.bases.get(_SEALED_SHA + source + _SEALED_DOCS):
        return record.bases[_SEALED_SHA + source + _SEALED_DOCS]
    if documents is None:
        if not has_plain(root, source):
            raise _stale(source)
        documents = _sealed_documents(root, source)
    return _keyed(_hmac_key(root), f"patch {source}", documents)


def _sealed_documents(root: Path, source: str) -> list[Any]:
    from pipeline.talos.patching import load_patch

    patch = load_patch(sealed_text(root, source), source)
    return [patch.kind, list(patch.content)]


def refresh(root: Path, sources: list[str], use_vars: bool) -> list[str]:
    """Record in the ledger the keyed digests of the vars file and of the encrypted patches in ``sources``
    when their ciphertext changed since recorded (decrypting them; needs the key). Returns what was refreshed.

    Run before a promotion judges its nodes, and by ``doit secrets``: afterwards keyless judges
    (``doit check``, a no-op ``doit``) know every value's digest without a key.
    """
    record = ledger.load_ledger(root)
    updates: dict[str, str] = {}
    drop: list[str] = []
    sha = sha256_file(root / VARS_ARTEFACT)
    if use_vars and sha is not None and record.bases.get(_VARS_SHA) != sha:
        vars_values(root)
        digests = name_digests(root, Ledger())
        updates[_VARS_SHA] = sha
        updates.update({_VARS_NAME + name: digest for name, digest in digests.items()})
        drop = [key for key in record.bases if key.startswith(_VARS_NAME) and key[len(_VARS_NAME):] not in digests]
    for source in dict.fromkeys(sources):
        sealed = sha256_file(root / source)
        if sealed is not None and record.bases.get(_SEALED_SHA + source) != sealed:
            sealed_text(root, source)
            updates[_SEALED_SHA + source + _SEALED_DOCS] = sealed_digest(root, source, Ledger())
            updates[_SEALED_SHA + source] = sealed
    if updates or drop:
        with ledger.updating(root) as current:
            for key in drop:
                current.bases.pop(key, None)
            current.bases.update(updates)
    return sorted(key for key in updates if not key.startswith(_VARS_NAME) and not key.endswith(_SEALED_DOCS))


# --- where values land -------------------------------------------------------------------------


@dataclass(frozen=True)
class Taint:
    """A value from an encrypted source: where it came from (never the value in a message)."""

    value: str
    origin: str  # "secrets.NAME" or "an encrypted value of patches/X.sops.yaml"
    source: str  # the patch file that brought it in


def var_taints(values: dict[str, Any], names: list[str], source: str) -> list[Taint]:
    """Taints for the variables ``names`` a patch read."""
    return [Taint(str(values[name]), f"secrets.{name}", source) for name in names if name in values]


def sealed_taints(root: Path, source: str) -> list[Taint]:
    """Taints for every value an encrypted patch holds encrypted (its plain fields were public anyway)."""
    try:
        cipher = load_documents((root / source).read_text(encoding="utf-8"), source)
        plain = load_documents(sealed_text(root, source), source)
    except (PipelineError, OSError, UnicodeDecodeError):
        return []
    out: list[Taint] = []
    for enc, dec in zip(cipher, plain, strict=False):
        if isinstance(enc, dict):
            enc = {key: value for key, value in enc.items() if key != "sops"}
        out.extend(Taint(str(value), f"an encrypted value of {source}", source) for value in _enc_pairs(enc, dec))
    return out


def _enc_pairs(enc: Any, dec: Any) -> Iterator[Any]:
    if isinstance(enc, dict) and isinstance(dec, dict):
        for key, item in enc.items():
            if key in dec:
                yield from _enc_pairs(item, dec[key])
    elif isinstance(enc, list) and isinstance(dec, list):
        for left, right in zip(enc, dec, strict=False):
            yield from _enc_pairs(left, right)
    elif isinstance(enc, str) and _ENC.match(enc) and dec is not None and not isinstance(dec, dict | list):
        yield dec


def _rule_encrypts(rule: CreationRule) -> Any:
    """A predicate over a key name: whether the rule encrypts what is under it (None: the whole file)."""
    raw = rule.raw
    if raw.get("encrypted_regex"):
        pattern = re.compile(str(raw["encrypted_regex"]))
        return lambda key: pattern.search(key) is not None
    if raw.get("encrypted_suffix"):
        suffix = str(raw["encrypted_suffix"])
        return lambda key: key.endswith(suffix)
    if raw.get("unencrypted_regex") or raw.get("unencrypted_suffix"):
        return "unsupported"
    return None


def _plain_leaves(value: Any, path: str, encrypts: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not encrypts(str(key)):
                yield from _plain_leaves(item, f"{path}.{key}" if path else str(key), encrypts)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plain_leaves(item, f"{path}[{index}]", encrypts)
    elif value is not None and not isinstance(value, bool):
        yield path, str(value)


def _found(value: str, leaf: str) -> bool:
    if len(value) < _SHORTEST:
        return False
    return value == leaf if len(value) < _SUBSTRING else value in leaf


def _doc_label(doc: Any, index: int) -> str:
    # Documents other than the v1alpha1 config are named as Talos names them: Kind(name).
    if not isinstance(doc, dict) or not doc.get("kind"):
        return ""
    return f"{doc['kind']}({doc['name']})." if doc.get("name") else f"{doc['kind']}."


def check_landing(documents: list[Any], taints: list[Taint], config: SopsConfig | None, artefact: str) -> None:
    """Refuse a rendered config in which a value from an encrypted source sits where the artefact's rule
    leaves plaintext: one line naming the patch and the dotted path, never the value.

    What came from an encrypted source stays encrypted, and stock sops does it: the keyless guard can
    tell from the rule alone.
    """
    taints = [taint for taint in taints if len(taint.value) >= _SHORTEST]
    if not taints:
        return
    rule = config.rule_for(artefact) if config else None
    if rule is None:
        return  # encrypt reports the missing rule
    encrypts = _rule_encrypts(rule)
    if encrypts is None:
        return  # whole file
    if encrypts == "unsupported":
        raise PipelineError(f"the .sops.yaml rule for {artefact} uses unencrypted_regex/suffix: values from "
                            "secrets. or encrypted patches need a rule with encrypted_regex", path=taints[0].source)
    for index, doc in enumerate(documents):
        for dotted, leaf in _plain_leaves(doc, "", encrypts):
            for taint in taints:
                if _found(taint.value, leaf):
                    where = f"{_doc_label(doc, index)}{dotted}"
                    raise PipelineError(
                        f"a value from {taint.origin} lands at {where}, which .sops.yaml's rule for {artefact} "
                        "leaves in plaintext: put it under a key the rule encrypts (see README, Your own secrets)",
                        path=taint.source)


# --- doit secrets: set, list, edit -------------------------------------------------------------


def _check_rule(root: Path) -> None:
    config = load_sops_config(root)
    rule = config.rule_for(VARS_ARTEFACT) if config else None
    if rule is None:
        raise PipelineError(f"no creation rule matches {VARS_ARTEFACT}: run doit bootstrap first, or add one",
                            path=".sops.yaml")
    if any(rule.raw.get(key) for key in ("encrypted_regex", "unencrypted_regex", "encrypted_suffix",
                                         "unencrypted_suffix", "encrypted_comment_regex", "unencrypted_comment_regex")):
        raise PipelineError(f"the first rule matching {VARS_ARTEFACT} does not encrypt the whole file (a .sops.yaml "
                            "from an earlier version?): regenerate a generated one (doit rekey with recipients: in "
                            "cluster.yaml, else delete it and run doit bootstrap), or add a rule "
                            f"`path_regex: {VARS_RULE}` with only your age recipients before the encrypted/ rule",
                            path=".sops.yaml")


def _dump(values: dict[str, Any]) -> bytes:
    # Every value a string, quoted: sops and Go read it back as the same text.
    return yaml.safe_dump({name: str(value) for name, value in values.items()}, default_style='"',
                          sort_keys=True, allow_unicode=True, width=1 << 20).encode()


def write_vars(root: Path, values: dict[str, Any]) -> None:
    """Encrypt ``values`` into the vars file (plaintext on sops's stdin only), checked, then atomically."""
    _check_rule(root)
    ciphertext = sops.encrypt(_dump(values), VARS_ARTEFACT, root)
    findings = metadata.scan_artefact(ciphertext.decode(errors="replace"), VARS_ARTEFACT)
    if findings:
        raise PipelineError("sops output failed the guard, file left as it was", path=VARS_ARTEFACT)
    (root / VARS_ARTEFACT).parent.mkdir(exist_ok=True)
    ledger.atomic_write(root / VARS_ARTEFACT, ciphertext)


def set_secret(root: Path, name: str, value: str) -> bool:
    """Set variable ``name``; returns whether the file changed (an equal value rewrites nothing)."""
    if not NAME.match(name):
        raise PipelineError(f"secret name {name[:40]!r}: letters, digits and _ only, not starting with a digit")
    if not value:
        raise PipelineError(f"secrets.{name}: empty value: nothing set")
    if "\n" in value or "\r" in value:
        raise PipelineError(f"secrets.{name}: one line only (use doit secrets edit for a multi-line value)")
    values = dict(vars_values(root))
    if name in values and str(values[name]) == value:
        return False
    values[name] = value
    write_vars(root, values)
    return True


def after_edit(root: Path) -> None:
    """Check the vars file after ``sops edit``: a whole-file SOPS mapping of names to scalar values."""
    findings = metadata.scan_artefact((root / VARS_ARTEFACT).read_text(encoding="utf-8"), VARS_ARTEFACT)
    if findings:
        raise PipelineError(findings[0])
    forget()
    vars_values(root)
