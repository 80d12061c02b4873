"""An in-process SOPS engine for YAML files with age recipients (the sops 3.11.0 file format).

It encrypts already-typed Python documents into the bytes ``sops --encrypt`` would write for the
same data key, IVs and ``lastmodified``, and decrypts such files (MAC checked). Everything else
(PGP/KMS/Vault keys, key groups, Shamir, comment regexes, timestamps, non-YAML) raises
:class:`EngineUnsupported` so the caller can fall back to the sops binary.

Format facts (from sops 3.11.0): a 32-byte data key; every leaf value is encrypted with
AES-256-GCM, a 32-byte random IV and the value's key path joined as ``"k1:k2:"`` (list indices are
not part of it) as additional data, written as ``ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]``;
empty strings and nulls stay as they are. The MAC is the upper-case hex SHA-512 over every
non-null leaf (Go's text of it: ints in base 10, floats in shortest non-exponent form, booleans
as ``True``/``False``) in walk order across all documents, only over encrypted leaves (after a
fixed 32-byte prefix) with ``mac_only_encrypted``; it is itself encrypted with the data key and
the RFC 3339 ``lastmodified`` as additional data. The YAML is written as go-yaml v3 writes it
(indent 4, no line folding: go-yaml v3 leaves the width unset), which :mod:`pipeline.sops.goyaml` reproduces.

Proven against sops 3.11.0 (tests/sops/test_engine.py): every file sops writes for generated
documents (nested maps and lists, all scalar types, unicode, empty strings, nulls, multi-document,
encrypted_regex / unencrypted_regex / mac_only_encrypted) is re-written byte for byte by the engine
given the same data key, IVs and lastmodified. Known limits (EngineUnsupported unless said):

- comments: sops keeps (and encrypts) them; the engine reads past them (the MAC skips them too) and
  writes none, so ``decrypt_text`` prints no comments;
- mapping keys of more than 128 bytes or with line breaks (go-yaml writes complex ``?`` keys);
- unencrypted strings with U+2028/U+2029; unencrypted texts starting with a space or line break in
  or under a list item (go-yaml's ``|4`` is then mis-indented and sops cannot read its own file:
  refused in engine files, printed as sops prints it by ``decrypt_text``);
- plain scalars go-yaml reads as timestamps, sops's ``time`` type, ints outside int64, bytes
  values on encryption, merge keys, explicit YAML tags other than ``!!str``;
- regexes run on Python's ``re``, not Go's RE2 (same for ordinary patterns);
- a ``.sops.yaml`` ``stores: yaml: indent`` setting (the engine writes indent 4).

Micro-benchmark (one 20-value document, one age recipient)::

    python -c "import pipeline.sops.engine as e; e.benchmark()"

prints about 0.7-1.5 ms for values, MAC and YAML and 1-2 ms more with the age wrap on this (loaded,
2-CPU) machine, against 15-40 ms for one sops process.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import yaml

from pipeline import lazyre
from pipeline.errors import PipelineError
from pipeline.sops.goyaml import (
    _INT64,
    EngineUnsupported,
    emit_yaml,
    go_format_float_f,
    go_resolve,
    read_written,
)
from pipeline.sops.identities import default_key_file


# cryptography and pyrage cost tens of milliseconds to import: a no-op `doit` (which encrypts and
# decrypts nothing) must not pay for them, so they are imported on first use.
@lru_cache(maxsize=1)
def _aesgcm_class() -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


def _aesgcm(key: bytes) -> Any:
    return _aesgcm_class()(key)


@lru_cache(maxsize=1)
def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


@lru_cache(maxsize=1)
def _pyrage() -> Any:
    import pyrage

    return pyrage


__all__ = [
    "EncryptResult",
    "EngineUnsupported",
    "age_identities",
    "decrypt",
    "decrypt_redacted",
    "decrypt_text",
    "emit_yaml",
    "encrypt_documents",
    "engine_enabled",
    "load_yaml",
    "options_from_creation_rule",
    "redact_documents",
]

SOPS_VERSION = "3.11.0"
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"
_MAC_ONLY_ENCRYPTED_INIT = bytes.fromhex("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69")
_ENC_RE = lazyre.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")  # sops's own pattern
# The same parts for the usual value (no comma in a field, one closing bracket), without backtracking.
_ENC_PARTS = lazyre.compile(r"^ENC\[AES256_GCM,data:([^,]+),iv:([^,]+),tag:([^,]+),type:([^,\]]+)\]$")
_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
# Metadata keys for master keys this engine cannot use.
_FOREIGN_KEYS = ("shamir_threshold", "key_groups", "kms", "gcp_kms", "azure_kv", "hc_vault", "pgp")
_RULE_KEYS = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex")
_COMMENT_RULE_KEYS = ("unencrypted_comment_regex", "encrypted_comment_regex")


@dataclass(frozen=True)
class EncryptResult:
    """An encrypted file and why its data key is what it is.

    ``reason`` is one of ``fresh`` (no previous file), ``reused`` (previous data key and the IVs
    of unchanged values kept), ``unchanged`` (documents equal to the previous file's: its bytes
    are returned as they are), ``recipients changed``, ``rule changed`` or ``previous unreadable``.
    """

    data: bytes
    reason: str


# --------------------------------------------------------------------------------------------
# values, paths, rules


def _plain_bytes(value: Any) -> tuple[str, bytes]:
    """The sops type tag and the bytes sops encrypts and MACs for a leaf value."""
    if isinstance(value, str):
        try:
            return "str", value.encode()
        except UnicodeEncodeError:
            raise PipelineError("a string value is not valid Unicode (lone surrogate)") from None
    if isinstance(value, bool):
        return "bool", b"True" if value else b"False"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise EngineUnsupported("an integer outside the 64-bit range")
        return "int", str(value).encode()
    if isinstance(value, float):
        return "float", go_format_float_f(value).encode()
    raise EngineUnsupported(f"values of type {type(value).__name__} are not supported")


@dataclass(frozen=True)
class _Rules:
    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: str = ""
    encrypted_regex: str = ""
    mac_only_encrypted: bool = False

    def encrypts(self, path: Sequence[str]) -> bool:
        """Whether sops encrypts the leaf at ``path`` (its mapping keys, outermost first)."""
        table = _rule_table(self)
        hits = 0
        for key in path:
            hits |= table.key(key)
        return table.encrypted[hits]

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in _RULE_KEYS if getattr(self, k)}
        if self.mac_only_encrypted:
            out["mac_only_encrypted"] = True
        return out


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern[str]:
    """A rule's regex compiled once (it is matched against every key of every leaf's path)."""
    return re.compile(pattern)


@lru_cache(maxsize=65536)
def _key_matches(pattern: str, key: str) -> bool:
    # Every leaf asks about every key above it; the keys of a fleet's configs are few and repeat.
    return _compiled(pattern).search(key) is not None


# Each rule asks "does any key on the leaf's path ...?", so what a key contributes is a bit that the
# walks OR down the tree (one dictionary lookup per key instead of a scan of the whole path per leaf).
_UNENC_SUFFIX, _ENC_SUFFIX, _UNENC_REGEX, _ENC_REGEX = 1, 2, 4, 8


def _compute_hits(rules: _Rules, key: str) -> int:
    hits = 0
    if rules.unencrypted_suffix and key.endswith(rules.unencrypted_suffix):
        hits |= _UNENC_SUFFIX
    if rules.encrypted_suffix and key.endswith(rules.encrypted_suffix):
        hits |= _ENC_SUFFIX
    if rules.unencrypted_regex and _key_matches(rules.unencrypted_regex, key):
        hits |= _UNENC_REGEX
    if rules.encrypted_regex and _key_matches(rules.encrypted_regex, key):
        hits |= _ENC_REGEX
    return hits


def _encrypted_for(rules: _Rules, hits: int) -> bool:
    # sops applies the options in this order, each overriding the one before (one is set in practice).
    encrypted = True
    if rules.unencrypted_suffix and hits & _UNENC_SUFFIX:
        encrypted = False
    if rules.encrypted_suffix:
        encrypted = bool(hits & _ENC_SUFFIX)
    if rules.unencrypted_regex and hits & _UNENC_REGEX:
        encrypted = False
    if rules.encrypted_regex:
        encrypted = bool(hits & _ENC_REGEX)
    return encrypted


class _RuleTable:
    """A rule set's answers, memoised: each key's hit bits, and whether a leaf with given bits is encrypted."""

    __slots__ = ("encrypted", "hits", "mac_all", "rules")

    def __init__(self, rules: _Rules) -> None:
        self.rules = rules
        self.hits: dict[str, int] = {}
        self.encrypted = tuple(_encrypted_for(rules, bits) for bits in range(16))
        self.mac_all = not rules.mac_only_encrypted

    def key(self, key: str) -> int:
        bits = self.hits.get(key)
        if bits is None:
            bits = self.hits[key] = _compute_hits(self.rules, key)
        return bits


@lru_cache(maxsize=32)
def _rule_table(rules: _Rules) -> _RuleTable:
    return _RuleTable(rules)


def _rules_from_options(encrypted_regex: str | None, unencrypted_regex: str | None, mac_only: bool) -> _Rules:
    if encrypted_regex and unencrypted_regex:
        raise PipelineError("encrypted_regex and unencrypted_regex cannot both be set")
    for rx in (encrypted_regex, unencrypted_regex):
        if rx:
            try:
                re.compile(rx)
            except re.error as exc:
                raise EngineUnsupported(f"regular expression not understood here: {exc}") from None
    if encrypted_regex:
        return _Rules(encrypted_regex=encrypted_regex, mac_only_encrypted=mac_only)
    if unencrypted_regex:
        return _Rules(unencrypted_regex=unencrypted_regex, mac_only_encrypted=mac_only)
    return _Rules(unencrypted_suffix=DEFAULT_UNENCRYPTED_SUFFIX, mac_only_encrypted=mac_only)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


class _Cipher:
    """AES-256-GCM per value with sops's IV stash: an unchanged (path, type, plaintext) keeps its IV."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.aead = _aesgcm(key)
        self.stash: dict[tuple[str, str, bytes], list[bytes]] = {}
        self.comments = 0  # encrypted comments met while decrypting (sops writes them as list items)

    def encrypt(self, tag: str, data: bytes, aad: str) -> str:
        ivs = self.stash.get((aad, tag, data))
        iv = (ivs.pop(0) if len(ivs) > 1 else ivs[0]) if ivs else os.urandom(32)
        out = self.aead.encrypt(iv, data, aad.encode())
        return f"ENC[AES256_GCM,data:{_b64(out[:-16])},iv:{_b64(iv)},tag:{_b64(out[-16:])},type:{tag}]"

    def decrypt(self, text: str, aad: str, where: str | None = None) -> tuple[str, bytes]:
        """A value's sops type and plaintext; ``where`` names it in errors (default: from ``aad``)."""
        m = _ENC_PARTS.match(text) or _ENC_RE.match(text)
        where = where or _where_aad(aad)
        if not m:
            raise PipelineError(f"value at {where} is not a sops ENC[...] value")
        try:
            data, iv, tag = (base64.b64decode(m[i], validate=True) for i in (1, 2, 3))
        except ValueError:
            raise PipelineError(f"value at {where} has malformed base64 in its ENC[...]") from None
        if len(tag) != 16 or not 8 <= len(iv) <= 128:
            raise PipelineError(f"value at {where} has a malformed ENC[...]")
        try:
            plain = self.aead.decrypt(iv, data + tag, aad.encode())
        except _invalid_tag():
            raise PipelineError(
                f"message authentication failed for the value at {where} (tampered, or not this file's data key)"
            ) from None
        self.stash.setdefault((aad, m[4], plain), []).append(iv)
        return m[4], plain


_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_GO_FLOAT = lazyre.compile(
    r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])$"
)


def _typed(tag: str, plain: bytes, aad: str) -> Any:
    where = _where_aad(aad)
    try:
        text = plain.decode()
    except UnicodeDecodeError:
        text = None
    if tag == "bytes":
        return plain
    if text is None:
        raise EngineUnsupported(f"value at {where} is not UTF-8 text")
    if tag == "str":
        return text
    if tag == "int" and re.fullmatch(r"[+-]?\d+", text):
        value = int(text)
        if _INT64[0] <= value <= _INT64[1]:
            return value
    if tag == "float" and _GO_FLOAT.match(text):
        return float(text)
    if tag == "bool" and text in _GO_BOOLS:
        return _GO_BOOLS[text]
    if tag == "comment":
        return _Comment(text)
    if tag == "time":
        raise EngineUnsupported(f"values of sops type {tag} are not supported")
    raise PipelineError(f"value at {where} does not decrypt to a valid {tag}")


def _walk_encrypt(value: Any, path: list[str], rules: _Rules, cipher: _Cipher, mac: Any) -> Any:
    """``value`` with every leaf the rules encrypt as ENC[...]; every MACed leaf's bytes fed to ``mac``."""
    table, aad, hits = _walk_start(rules, path)
    return _encrypt_tree(value, aad, hits, table, cipher, mac)


def _walk_start(rules: _Rules, path: list[str]) -> tuple[_RuleTable, str, int]:
    """The rule table, the additional data and the rules' hits at ``path``, where a walk starts."""
    table = _rule_table(rules)
    hits = 0
    for key in path:
        hits |= table.key(key)
    return table, "".join(f"{key}:" for key in path), hits


def _encrypt_tree(value: Any, aad: str, hits: int, table: _RuleTable, cipher: _Cipher, mac: Any) -> Any:
    # ``aad`` is sops's additional data for a leaf here (its path's keys, each followed by ":"); list
    # items share their list's path.
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise EngineUnsupported("mapping keys must be strings")
            out[k] = _encrypt_tree(v, f"{aad}{k}:", hits | table.key(k), table, cipher, mac)
        return out
    if kind is list:
        return [_encrypt_tree(v, aad, hits, table, cipher, mac) for v in value]
    if value is None:
        return None
    if isinstance(value, dict | list):  # subclasses: walked the same way
        return _encrypt_tree(dict(value) if isinstance(value, dict) else list(value), aad, hits, table, cipher, mac)
    tag, data = _plain_bytes(value)
    encrypted = table.encrypted[hits]
    if encrypted or table.mac_all:
        mac.update(data)
    if not encrypted or value == "":
        return value
    return cipher.encrypt(tag, data, aad)


@dataclass(frozen=True)
class _Comment:
    """An encrypted YAML comment that sops 3.11 writes as a list item; it is not part of the MAC."""

    text: str


def _walk_decrypt(value: Any, path: list[str], rules: _Rules, cipher: _Cipher, mac: Any) -> Any:
    """``value`` with every ENC[...] leaf the rules encrypt decrypted and typed; MACed leaves fed to ``mac``."""
    table, aad, hits = _walk_start(rules, path)
    return _decrypt_tree(value, aad, hits, table, cipher, mac)


def _decrypt_tree(value: Any, aad: str, hits: int, table: _RuleTable, cipher: _Cipher, mac: Any) -> Any:
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, dict)):
        out = {k: _decrypt_tree(v, f"{aad}{k}:", hits | table.key(k), table, cipher, mac) for k, v in value.items()}
        if cipher.comments and any(isinstance(v, _Comment) for v in out.values()):
            raise EngineUnsupported("an encrypted comment in place of a mapping value")
        return out
    if kind is list or isinstance(value, list):
        items = [_decrypt_tree(v, aad, hits, table, cipher, mac) for v in value]
        if not cipher.comments:
            return items
        return [v for v in items if not isinstance(v, _Comment)]  # sops -d prints these as comments
    if value is None:
        return None
    encrypted = table.encrypted[hits]
    if encrypted and value != "":
        if kind is not str and not isinstance(value, str):
            raise PipelineError(f"value at {_where_aad(aad)} should be encrypted but is not")
        tag, plain = cipher.decrypt(value, aad)
        value = _typed(tag, plain, aad)
        if type(value) is _Comment:
            cipher.comments += 1
            return value
    if encrypted or table.mac_all:
        mac.update(value if type(value) is bytes else _plain_bytes(value)[1])
    return value


def _where_aad(aad: str) -> str:
    return aad[:-1].replace(":", ".") if aad else "(top)"


def _new_mac(rules: _Rules) -> Any:
    mac = hashlib.sha512()
    if rules.mac_only_encrypted:
        mac.update(_MAC_ONLY_ENCRYPTED_INIT)
    return mac


# --------------------------------------------------------------------------------------------
# age


def _armor(data: bytes) -> str:
    text = _b64(data)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n"


def _dearmor(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 2 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise PipelineError("an age stanza is not in armored form")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise PipelineError("an age stanza has malformed base64") from None


@lru_cache(maxsize=64)  # public keys, asked for every file of a fleet
def _recipient(r: str) -> Any:
    try:
        return _pyrage().x25519.Recipient.from_str(r.strip())
    except Exception:
        raise EngineUnsupported("recipient is not an age X25519 public key") from None


def _identities(identities: Sequence[str]) -> list[Any]:
    return list(_parsed_identities(tuple(identities)))


@lru_cache(maxsize=8)  # every file of a fleet is opened with the same key file's text
def _parsed_identities(identities: tuple[str, ...]) -> tuple[Any, ...]:
    out = []
    for entry in identities:
        for line in entry.splitlines():
            line = line.strip()
            if line.startswith("AGE-SECRET-KEY-"):
                try:
                    out.append(_pyrage().x25519.Identity.from_str(line))
                except Exception:
                    raise PipelineError("an age identity is malformed") from None
    return tuple(out)


def _wrap(key: bytes, recipients: Sequence[str]) -> list[dict[str, str]]:
    return [{"recipient": r.strip(), "enc": _armor(_pyrage().encrypt(key, [_recipient(r)]))} for r in recipients]


def _unwrap(age_entries: list[dict[str, Any]], identities: Sequence[str]) -> bytes:
    ids = _identities(identities)
    if ids:
        for entry in age_entries:
            try:
                key = _pyrage().decrypt(_dearmor(str(entry.get("enc", ""))), ids)
            except PipelineError:
                continue
            except Exception:
                continue
            if len(key) == 32:
                return bytes(key)
    raise PipelineError("could not retrieve the data key: no age identity given matches a recipient of the file")


# --------------------------------------------------------------------------------------------
# reading sops YAML as go-yaml types it


class _PlainTagLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Marks untagged plain scalars so that go-yaml's resolver, not PyYAML's, types them."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return "!plain"
        return super().resolve(kind, value, implicit)


def _from_node(node: Any, where: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = _from_node(k, where)
            if not isinstance(key, str):
                raise PipelineError(f"non-string mapping key in {where}")
            if key == "<<" and k.tag == "!plain":
                raise EngineUnsupported("YAML merge keys are not supported")
            out[key] = _from_node(v, where)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_from_node(v, where) for v in node.value]
    if node.tag == "!plain":
        tag, value = go_resolve(node.value)
        if tag in ("str", "int", "float", "bool", "null"):
            return value
        if tag == "merge":
            return value
        raise EngineUnsupported(f"plain scalars that go-yaml reads as {tag} are not supported")
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    raise EngineUnsupported(f"explicit YAML tag {node.tag} is not supported")


@dataclass
class _SopsFile:
    documents: list[dict[str, Any]]
    age: list[dict[str, Any]]
    lastmodified: str
    mac: str
    rules: _Rules


def _go_rfc3339(text: str, where: str) -> str:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise PipelineError(f"sops metadata lastmodified is not RFC 3339 in {where}") from None
    if stamp.tzinfo is None:
        raise PipelineError(f"sops metadata lastmodified has no time zone in {where}")
    offset = stamp.utcoffset()
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if not offset:
        return base + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{base}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _load(ciphertext: bytes, where: str) -> _SopsFile:
    try:
        text = ciphertext.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{where} is not UTF-8 text") from None
    # A file in the layout sops (and this engine) writes is read line by line; anything else is parsed.
    written = read_written(text)
    return _sops_file(written if written is not None else _parse(text, where), where)


def _parse(text: str, where: str) -> list[dict[str, Any]]:
    try:
        nodes = list(yaml.compose_all(text, Loader=_PlainTagLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PipelineError(f"{where} is not valid YAML", line=line) from None
    documents: list[dict[str, Any]] = []
    for node in nodes:
        if node is None:
            documents.append({})
            continue
        if isinstance(node, yaml.ScalarNode) and node.tag == "!plain" and node.value == "":
            documents.append({})
            continue
        if not isinstance(node, yaml.MappingNode):
            raise EngineUnsupported(f"{where}: a YAML document that is not a mapping")
        documents.append(_from_node(node, where))
    return documents


def _sops_file(documents: list[dict[str, Any]], where: str) -> _SopsFile:
    if not documents or not isinstance(documents[0].get("sops"), dict):
        raise PipelineError(f"{where} has no sops metadata (not a sops-encrypted file)")
    meta = documents[0]["sops"]
    for doc in documents:
        doc.pop("sops", None)
    for k in _FOREIGN_KEYS:
        if meta.get(k):
            raise EngineUnsupported(f"{where} uses sops {k}, which this engine does not support")
    for k in _COMMENT_RULE_KEYS:
        if meta.get(k):
            raise EngineUnsupported(f"{where} uses sops {k}, which this engine does not support")
    age = meta.get("age")
    if not isinstance(age, list) or not age or not all(isinstance(a, dict) for a in age):
        raise EngineUnsupported(f"{where} has no age recipients")
    rules_given = {k: meta.get(k) for k in _RULE_KEYS if meta.get(k)}
    if len(rules_given) > 1:
        raise PipelineError(f"{where} sets more than one of {', '.join(_RULE_KEYS)}")
    if not rules_given:
        rules_given = {"unencrypted_suffix": DEFAULT_UNENCRYPTED_SUFFIX}
    mac_only = meta.get("mac_only_encrypted") is True
    rules = _Rules(**{k: str(v) for k, v in rules_given.items()}, mac_only_encrypted=mac_only)
    if not isinstance(meta.get("lastmodified"), str):
        raise PipelineError(f"sops metadata lastmodified is missing in {where}")
    return _SopsFile(documents, age, _go_rfc3339(meta["lastmodified"], where), str(meta.get("mac") or ""), rules)


def _open(sf: _SopsFile, identities: Sequence[str], where: str) -> tuple[list[dict[str, Any]], _Cipher]:
    cipher = _Cipher(_unwrap(sf.age, identities))
    mac = _new_mac(sf.rules)
    docs = [_walk_decrypt(doc, [], sf.rules, cipher, mac) for doc in sf.documents]
    computed = mac.hexdigest().upper()
    if not sf.mac:
        raise PipelineError(f"MAC mismatch in {where}: the file has no MAC")
    m = _ENC_RE.match(sf.mac)
    if not m or m[4] != "str":
        raise PipelineError(f"MAC mismatch in {where}: the MAC is not an ENC[...] string")
    try:
        _, stored = cipher.decrypt(sf.mac, sf.lastmodified, "sops.mac")
    except PipelineError:
        raise PipelineError(
            f"MAC mismatch in {where}: cannot decrypt the MAC (message authentication failed)"
        ) from None
    if stored.decode(errors="replace") != computed:
        raise PipelineError(f"MAC mismatch in {where}: the file was modified outside sops")
    return docs, cipher


# --------------------------------------------------------------------------------------------
# public API


_RULE_OPTIONS = {"path_regex", "age", "encrypted_regex", "unencrypted_regex", "mac_only_encrypted"}


def options_from_creation_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :func:`encrypt_documents` from one ``.sops.yaml`` creation rule.

    Raises EngineUnsupported for anything but age recipients, ``encrypted_regex``,
    ``unencrypted_regex`` and ``mac_only_encrypted`` (PGP, KMS, Vault, key groups, Shamir,
    suffixes, comment regexes, ...). A top-level ``stores:`` setting in ``.sops.yaml`` (YAML indent)
    is the caller's to check: the engine writes sops's default indent of 4.
    """
    unknown = sorted(k for k, v in rule.items() if k not in _RULE_OPTIONS and v not in (None, "", [], {}, False))
    if unknown:
        raise EngineUnsupported(f"creation rule option(s) {', '.join(unknown)} need the sops binary")
    age = rule.get("age")
    items = age if isinstance(age, list) else str(age or "").split(",")
    recipients = [str(r).strip() for r in items if str(r).strip()]
    if not recipients:
        raise EngineUnsupported("creation rule has no age recipients")
    for r in recipients:
        _recipient(r)
    return {
        "recipients": recipients,
        "encrypted_regex": rule.get("encrypted_regex") or None,
        "unencrypted_regex": rule.get("unencrypted_regex") or None,
        "mac_only_encrypted": rule.get("mac_only_encrypted") is True,
    }


@contextmanager
def _naming(path: str | None) -> Iterator[None]:
    """Give PipelineErrors raised inside the file's path; EngineUnsupported messages name it too."""
    try:
        yield
    except PipelineError as exc:
        if path is None or exc.path is not None:
            raise
        raise PipelineError(exc.message, path=path, line=exc.line) from None
    except EngineUnsupported as exc:
        if path is None:
            raise
        raise EngineUnsupported(f"{path}: {exc}") from None


def decrypt(ciphertext: bytes, identities: Sequence[str], *, path: str | None = None) -> list[dict[str, Any]]:
    """The documents of a sops YAML file, MAC checked. ``identities`` are age secret keys (or key files' text)."""
    with _naming(path):
        docs, _ = _open(_load(ciphertext, "the file"), identities, "the file")
    return docs


def decrypt_text(ciphertext: bytes, identities: Sequence[str], *, path: str | None = None) -> str:
    """What ``sops -d`` prints for a sops YAML file (without comments)."""
    return emit_yaml(decrypt(ciphertext, identities, path=path), strict=False)


def decrypt_redacted(
    ciphertext: bytes, identities: Sequence[str], redact: Callable[[Any], Any], *, path: str | None = None
) -> list[dict[str, Any]]:
    """The documents of a sops YAML file (MAC checked) with every value the file encrypts replaced by
    ``redact(value)``; plain values stay as they are (a review diff's view of the file)."""
    with _naming(path):
        sf = _load(ciphertext, "the file")
        docs, _ = _open(sf, identities, "the file")
    return redact_documents(sf.documents, docs, redact)


def redact_documents(raw: list[Any], plain: list[Any], redact: Callable[[Any], Any]) -> list[Any]:
    """``plain`` (decrypted documents) with every value that is ``ENC[...]`` in ``raw`` (the same
    documents as the file holds them) replaced by ``redact(value)``."""
    return [_redact(r, doc, redact) for r, doc in zip(raw, plain, strict=False)]


def _redact(raw: Any, plain: Any, redact: Callable[[Any], Any]) -> Any:
    if isinstance(plain, dict):
        raws = raw if isinstance(raw, dict) else {}
        return {k: _redact(raws.get(k, _ALL), v, redact) for k, v in plain.items()}
    if isinstance(plain, list):
        # Encrypted comments (dropped on decryption) shift list items: then treat every item as secret.
        raws = raw if isinstance(raw, list) and len(raw) == len(plain) else [_ALL] * len(plain)
        return [_redact(r, v, redact) for r, v in zip(raws, plain, strict=True)]
    if plain is None or plain == "":
        return plain
    if raw is _ALL or (isinstance(raw, str) and _ENC_RE.match(raw)):
        return redact(plain)
    return plain


_ALL = object()  # "this whole subtree counts as encrypted"


def _canonical(value: Any) -> Any:
    """A form in which equal means 'sops writes and MACs the same' (True is not 1, 1.0 is not 1)."""
    if isinstance(value, dict):
        return ("map", tuple((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("seq", tuple(_canonical(v) for v in value))
    if value is None:
        return ("null",)
    return _plain_bytes(value)


def encrypt_documents(
    documents: list[Any],
    *,
    recipients: Sequence[str],
    encrypted_regex: str | None = None,
    unencrypted_regex: str | None = None,
    mac_only_encrypted: bool = False,
    previous: bytes | None = None,
    identities: Sequence[str] = (),
    now: datetime | None = None,
    path: str | None = None,
) -> EncryptResult:
    """Encrypt mapping documents into a sops YAML file for age ``recipients``.

    With ``previous`` (the file's current bytes) and an identity that opens it, its data key, its
    age stanzas and the IV of every value whose path and plaintext are unchanged are kept, so only
    changed values, ``lastmodified`` and ``mac`` change; a file whose documents are all unchanged
    is returned as it is. ``now`` fixes ``lastmodified`` (default: the current time, UTC).
    """
    with _naming(path):
        return _encrypt_documents(
            documents, recipients, encrypted_regex, unencrypted_regex, mac_only_encrypted, previous, identities, now
        )


def _encrypt_documents(
    documents: list[Any],
    recipients: Sequence[str],
    encrypted_regex: str | None,
    unencrypted_regex: str | None,
    mac_only_encrypted: bool,
    previous: bytes | None,
    identities: Sequence[str],
    now: datetime | None,
) -> EncryptResult:
    where = "the file"
    if not documents:
        raise PipelineError("no documents to encrypt")
    if not recipients:
        raise PipelineError(f"no age recipients for {where}")
    docs: list[dict[str, Any]] = []
    for doc in documents:
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise EngineUnsupported("sops YAML documents must be mappings")
        if "sops" in doc:
            raise PipelineError(f"{where}: a document already has a top-level 'sops' key")
        docs.append(doc)
    rules = _rules_from_options(encrypted_regex, unencrypted_regex, mac_only_encrypted)
    recipients = [r.strip() for r in recipients]
    for r in recipients:
        _recipient(r)

    reason = "fresh"
    cipher: _Cipher | None = None
    age_entries: list[dict[str, str]] = []
    if previous is not None:
        try:
            sf = _load(previous, where)
            old_docs, cipher = _open(sf, identities, where)
        except (PipelineError, EngineUnsupported):
            reason, cipher = "previous unreadable", None
        else:
            if [str(a.get("recipient", "")).strip() for a in sf.age] != recipients:
                reason, cipher = "recipients changed", None
            elif sf.rules != rules:
                reason, cipher = "rule changed", None
            # Plain equality first (C speed): documents that differ at all are changed; equal ones are
            # compared again as sops sees them (true is not 1, 1.0 is not 1).
            elif old_docs == docs and [_canonical(d) for d in old_docs] == [_canonical(d) for d in docs]:
                return EncryptResult(previous, "unchanged")
            else:
                reason = "reused"
                age_entries = [{"recipient": str(a["recipient"]), "enc": str(a["enc"])} for a in sf.age]
    if cipher is None:
        key = os.urandom(32)
        cipher = _Cipher(key)
        age_entries = _wrap(key, recipients)

    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return EncryptResult(_write(docs, rules, cipher, age_entries, stamp), reason)


def _write(
    docs: list[dict[str, Any]], rules: _Rules, cipher: _Cipher, age_entries: list[dict[str, str]], stamp: str
) -> bytes:
    """The file for these documents, data key (``cipher``), age stanzas and ``lastmodified``."""
    mac = _new_mac(rules)
    enc_docs = [_walk_encrypt(doc, [], rules, cipher, mac) for doc in docs]
    mac_value = cipher.encrypt("str", mac.hexdigest().upper().encode(), stamp)
    meta: dict[str, Any] = {"age": age_entries, "lastmodified": stamp, "mac": mac_value}
    meta.update(rules.metadata())
    meta["version"] = SOPS_VERSION
    return emit_yaml([{**d, "sops": meta} for d in enc_docs] or [{"sops": meta}]).encode()


ENGINE_SWITCH = "PROMOTE_SOPS_ENGINE"


def engine_enabled() -> bool:
    """Whether the in-process engine may be used: ``PROMOTE_SOPS_ENGINE=binary`` forces the sops binary."""
    return os.environ.get(ENGINE_SWITCH, "").strip().lower() != "binary"


def age_identities() -> list[str]:
    """The age identity texts sops would read (``SOPS_AGE_KEY``, ``SOPS_AGE_KEY_FILE``, the default file).

    Identities only sops can reach (``SOPS_AGE_KEY_CMD``, SSH keys) are not read here: with those the
    engine cannot open a file and its caller falls back to the binary.
    """
    texts: list[str] = []
    inline = os.environ.get("SOPS_AGE_KEY")
    if inline:
        texts.append(inline)
    explicit = os.environ.get("SOPS_AGE_KEY_FILE")
    paths = [os.path.expanduser(explicit)] if explicit else []
    paths.append(str(default_key_file()))
    for path in paths:
        try:
            info = os.stat(path)
            texts.append(_key_file_text(path, info.st_ino, info.st_mtime_ns, info.st_size))
        except (OSError, UnicodeDecodeError):
            continue
    return texts


@lru_cache(maxsize=8)
def _key_file_text(path: str, inode: int, mtime_ns: int, size: int) -> str:
    # Read once per run for a fleet (every node asks), again as soon as the file is replaced or edited.
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def load_yaml(text: str, *, path: str | None = None) -> list[dict[str, Any]]:
    """Plain (unencrypted) YAML documents typed as go-yaml v3 (and so ``sops --encrypt``) types them.

    Raises EngineUnsupported for what the engine cannot type like go-yaml (timestamps, merge keys,
    explicit tags, non-mapping documents); a YAML syntax error is a PipelineError naming ``path``.
    """
    with _naming(path):
        try:
            nodes = list(yaml.compose_all(text, Loader=_PlainTagLoader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PipelineError("not valid YAML", line=mark.line + 1 if mark is not None else None) from None
        documents: list[dict[str, Any]] = []
        for node in nodes:
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "!plain" and node.value == ""):
                continue
            if not isinstance(node, yaml.MappingNode):
                raise EngineUnsupported("a YAML document that is not a mapping")
            documents.append(_from_node(node, "the file"))
        return documents


def benchmark(rounds: int = 200) -> None:
    """Print the time to encrypt one 20-value document, with and without the age wrap."""
    identity = _pyrage().x25519.Identity.generate()
    recipient = str(identity.to_public())
    doc = {"machine": {f"key{i}": f"value-{i}" if i % 2 else i for i in range(20)}}
    key = os.urandom(32)
    start = time.perf_counter()
    for _ in range(rounds):
        mac = _new_mac(_Rules(unencrypted_suffix=DEFAULT_UNENCRYPTED_SUFFIX))
        enc = _walk_encrypt(doc, [], _Rules(unencrypted_suffix=DEFAULT_UNENCRYPTED_SUFFIX), _Cipher(key), mac)
        emit_yaml([enc])
    crypto = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for _ in range(rounds):
        encrypt_documents([doc], recipients=[recipient])
    full = (time.perf_counter() - start) / rounds
    print(f"values + MAC + YAML: {crypto * 1e3:.3f} ms; whole file with age wrap: {full * 1e3:.3f} ms")
