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
(indent 4, no line folding: go-yaml v3 leaves the width unset), which :class:`_Emitter` reproduces.

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
from decimal import Decimal
from functools import lru_cache
from typing import Any

import yaml

from pipeline import lazyre
from pipeline.errors import PipelineError
from pipeline.sops.identities import default_key_file


# cryptography and pyrage cost tens of milliseconds to import: a no-op `doit` (which encrypts and
# decrypts nothing) must not pay for them, so they are imported on first use.
def _aesgcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


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
_ENC_RE = lazyre.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
_INT64 = (-(1 << 63), (1 << 63) - 1)
# Metadata keys for master keys this engine cannot use.
_FOREIGN_KEYS = ("shamir_threshold", "key_groups", "kms", "gcp_kms", "azure_kv", "hc_vault", "pgp")
_RULE_KEYS = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex")
_COMMENT_RULE_KEYS = ("unencrypted_comment_regex", "encrypted_comment_regex")


class EngineUnsupported(Exception):
    """The input needs something this engine does not do: use the sops binary instead."""


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
# Go's scalar semantics (strconv and go-yaml v3's resolver)


def _float_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(x) and the decimal point position (x = 0.DIGITS * 10**dp)."""
    if x == 0:
        return "", 0
    _, digits, exp = Decimal(repr(abs(x))).as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    exp += len(text) - len(stripped)  # type: ignore[operator]
    text = stripped.lstrip("0")
    return text, len(text) + exp  # type: ignore[operator]


def _go_special_float(x: float) -> str | None:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return None


def _fmt_f(neg: bool, digits: str, dp: int, prec: int) -> str:
    whole = (digits[:dp].ljust(dp, "0") if dp > 0 else "0") or "0"
    out = ("-" if neg else "") + whole
    if prec > 0:
        frac = "".join(digits[dp + i] if 0 <= dp + i < len(digits) else "0" for i in range(prec))
        out += "." + frac
    return out


def go_format_float_f(x: float) -> str:
    """strconv.FormatFloat(x, 'f', -1, 64): the text sops encrypts and MACs for a float."""
    special = _go_special_float(x)
    if special:
        return special
    digits, dp = _float_digits(x)
    neg = str(x).startswith("-")
    return _fmt_f(neg, digits, dp, max(len(digits) - dp, 0))


def go_format_float_g(x: float) -> str:
    """strconv.FormatFloat(x, 'g', -1, 64) as go-yaml writes a float (``.inf``, ``.nan``)."""
    special = _go_special_float(x)
    if special:
        return {"NaN": ".nan", "+Inf": ".inf", "-Inf": "-.inf"}[special]
    digits, dp = _float_digits(x)
    neg = str(x).startswith("-")
    exp = dp - 1
    if digits and (exp < -4 or exp >= 6):
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{'-' if neg else ''}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return _fmt_f(neg, digits, dp, max(len(digits) - dp, 0))


_RESOLVE_MAP: dict[str, tuple[str, Any]] = {}
for _tag, _value, _words in (
    ("bool", True, ("true", "True", "TRUE")),
    ("bool", False, ("false", "False", "FALSE")),
    ("null", None, ("", "~", "null", "Null", "NULL")),
    ("float", float("nan"), (".nan", ".NaN", ".NAN")),
    ("float", float("inf"), (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")),
    ("float", float("-inf"), ("-.inf", "-.Inf", "-.INF")),
    ("merge", "<<", ("<<",)),
):
    for _w in _words:
        _RESOLVE_MAP[_w] = (_tag, _value)

_YAML_STYLE_FLOAT = lazyre.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_DOT_FLOAT = lazyre.compile(r"^\.[0-9]+([eE][-+]?[0-9]+)?$")
_BASE60_FLOAT = lazyre.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_OLD_BOOLS = frozenset(
    ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off", "OFF")
)
_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
_TIMESTAMP = lazyre.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,]\d+)?(?:Z|[+-](\d{2}):(\d{2}))"
    r"| (\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,]\d+)?)?$"
)


def _go_parse_int(s: str, signed: bool) -> int | None:
    """strconv.ParseInt(s, 0, 64) / ParseUint: the value, or None on a syntax or range error."""
    neg = False
    if signed and s[:1] in ("+", "-"):
        neg, s = s[0] == "-", s[1:]
    base = 10
    if len(s) > 1 and s[0] == "0":
        prefix = s[1].lower()
        base, s = {"x": (16, s[2:]), "b": (2, s[2:]), "o": (8, s[2:])}.get(prefix, (8, s[1:]))
    if not s or any(c not in _DIGITS[base] for c in s):
        return None
    value = -int(s, base) if neg else int(s, base)
    lo, hi = _INT64 if signed else (0, (1 << 64) - 1)
    return value if lo <= value <= hi else None


def _go_is_timestamp(s: str) -> bool:
    m = _TIMESTAMP.match(s)
    if not m:
        return False
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    if not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    if not 1 <= day <= days:
        return False
    clock = [g for g in (m[4], m[5], m[6]) if g] or [g for g in (m[9], m[10], m[11]) if g]
    if clock and not (int(clock[0]) < 24 and int(clock[1]) < 60 and int(clock[2]) < 60):
        return False
    return not (m[7] and (int(m[7]) > 24 or int(m[8]) > 60))


def go_resolve(s: str) -> tuple[str, Any]:
    """How go-yaml v3 types an untagged plain scalar: (tag, value), tag one of
    str, int, float, bool, null, timestamp, merge (ints outside int64 give ``uint``)."""
    if not s:
        return "null", None
    hint = s[0]
    if hint in "+-0123456789yYnNtTfFoO~.":
        if s in _RESOLVE_MAP:
            return _RESOLVE_MAP[s]
        if hint == ".":
            if _DOT_FLOAT.match(s):
                value = float(s)
                if value not in (float("inf"), float("-inf")):
                    return "float", value
        elif hint in "+-0123456789":
            if _go_is_timestamp(s):
                return "timestamp", s
            plain = s.replace("_", "")
            if plain:
                value_i = _go_parse_int(plain, signed=True)
                if value_i is not None:
                    return "int", value_i
                value_u = _go_parse_int(plain, signed=False)
                if value_u is not None:
                    return "uint", value_u
                if _YAML_STYLE_FLOAT.match(plain):
                    value = float(plain)
                    if value not in (float("inf"), float("-inf")):
                        return "float", value
    return "str", s


def _needs_quotes(s: str) -> bool:
    """go-yaml's stringv test: would this string not read back as the same string if plain?"""
    return go_resolve(s)[0] != "str" or s in _OLD_BOOLS or (":" in s and bool(_BASE60_FLOAT.match(s)))


# --------------------------------------------------------------------------------------------
# go-yaml v3 emitter (the subset sops uses: block maps and sequences, empty flow collections,
# plain, single-quoted, double-quoted and literal scalars; no comments, tags or anchors)

_BREAKS = "\r\n\x85\u2028\u2029"
_BREAK_SPLIT = lazyre.compile("([\r\n\x85\u2028\u2029])")
_SIMPLE_PLAIN = lazyre.compile(r"[A-Za-z0-9_/(][A-Za-z0-9_./=+\-\[\],:()@]*")
_ESCAPES = {
    0x00: "0", 0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f", 0x0D: "r", 0x1B: "e",
    0x22: '"', 0x5C: "\\", 0x85: "N", 0xA0: "_", 0x2028: "L", 0x2029: "P",
}


def _printable(c: str) -> bool:
    o = ord(c)
    return (
        o == 0x0A or 0x20 <= o <= 0x7E or 0xA0 <= o <= 0xD7FF or (0xE000 <= o <= 0xFFFD and o != 0xFEFF)
    )


@dataclass
class _Analysis:
    multiline: bool
    block_plain: bool
    single_quoted: bool
    block: bool


_NOT_PRINTABLE = lazyre.compile("[^\n\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd]")  # go-yaml's is_printable
_COLON_INDICATOR = lazyre.compile("(?s).:(?:[ \t]|\\Z)")
_HASH_INDICATOR = lazyre.compile("[ \t\x00\r\n\x85\u2028\u2029]#")
_BREAK_SPACE = lazyre.compile("[\r\n\x85\u2028\u2029] ")
_SPACE_BREAK = lazyre.compile(" [\r\n\x85\u2028\u2029]")
_LINE_BREAK = lazyre.compile("[\r\n\x85\u2028\u2029]")


def _analyze(s: str) -> _Analysis:
    """go-yaml's yaml_emitter_analyze_scalar, reduced to what block context needs."""
    if _SIMPLE_PLAIN.fullmatch(s) and s[-1] != ":":  # fast path (ENC[...] values, names, numbers)
        return _Analysis(False, True, True, True)
    if not s:
        return _Analysis(False, True, True, False)
    first, n = s[0], len(s)
    followed_ws = n == 1 or s[1] in " \t"
    block_ind = (
        s.startswith(("---", "..."))
        or first in "#,[]{}&*!|>'\"%@`"
        or (first in "?:-" and followed_ws)
        or bool(_COLON_INDICATOR.search(s))
        or bool(_HASH_INDICATOR.search(s))
    )
    tabs = "\t" in s
    special = bool(_NOT_PRINTABLE.search(s.replace("\t", " ")))
    line_breaks = bool(_LINE_BREAK.search(s))
    break_space = bool(_BREAK_SPACE.search(s))
    space_break = bool(_SPACE_BREAK.search(s))
    trailing_space = s[-1] == " "
    block_plain = single = block = True
    if first == " " or first in _BREAKS or trailing_space or s[-1] in _BREAKS:
        block_plain = False
    if trailing_space:
        block = False
    if break_space or space_break or tabs or special:
        block_plain = single = False
    if space_break or special:
        block = False
    if line_breaks or block_ind:
        block_plain = False
    return _Analysis(line_breaks, block_plain, single, block)


PLAIN, SINGLE, DOUBLE, LITERAL = "plain", "single", "double", "literal"


@lru_cache(maxsize=16384)  # keys and plain values repeat across a fleet
def _string_style(s: str, simple_key: bool) -> str:
    """The style go-yaml ends up with for a Go string that sops encodes into a node."""
    a = _analyze(s)
    # Node.Encode: stringv's choice, settled by the emitter at the document root.
    style = LITERAL if "\n" in s else (DOUBLE if _needs_quotes(s) else PLAIN)
    if style == PLAIN and not a.block_plain:
        style = SINGLE
    if style == SINGLE and not a.single_quoted:
        style = DOUBLE
    if style == LITERAL and not a.block:
        style = DOUBLE
    if not simple_key:
        return style
    # The node is then emitted again, as a simple mapping key.
    if a.multiline:
        style = DOUBLE
    if style == PLAIN and not s:
        style = SINGLE
    if style == SINGLE and not a.single_quoted:
        style = DOUBLE
    if style == LITERAL:
        style = DOUBLE
    return style


def _double_body(s: str) -> str:
    """The text between go-yaml's double quotes for ``s``: its escapes for quotes, breaks and unprintables."""
    bom = s.startswith("\ufeff")  # go-yaml then escapes every character
    parts = []
    for c in s:
        if bom or c in '"\\' or c in _BREAKS or not _printable(c):
            o = ord(c)
            if o in _ESCAPES:
                parts.append("\\" + _ESCAPES[o])
            elif o <= 0xFF:
                parts.append(f"\\x{o:02X}")
            elif o <= 0xFFFF:
                parts.append(f"\\u{o:04X}")
            else:
                parts.append(f"\\U{o:08X}")
        else:
            parts.append(c)
    return "".join(parts)


class _Emitter:
    """A port of the parts of go-yaml v3's emitter (emitterc.go) that sops's YAML store reaches."""

    def __init__(self, indent: int = 4, strict: bool = True) -> None:
        self.best_indent = indent
        self.strict = strict
        self.out: list[str] = []
        self.column = 0
        self.indent = -1
        self.indents: list[int] = []
        self.whitespace = True
        self.indention = True
        self.open_ended = False
        self.foot_indent = -1

    # low level
    def _put(self, s: str) -> None:
        self.out.append(s)
        self.column += len(s)

    def _put_break(self) -> None:
        self.out.append("\n")
        self.column = 0
        self.indention = True

    def _write_break(self, c: str) -> None:
        if c == "\n":
            self._put_break()
        else:
            self.out.append(c)
            self.column = 0
            self.indention = True

    def _write_indent(self) -> None:
        indent = max(self.indent, 0)
        if not self.indention or self.column > indent or (self.column == indent and not self.whitespace):
            self._put_break()
        if self.foot_indent == indent:
            self._put_break()
        if self.column < indent:
            self._put(" " * (indent - self.column))
        self.whitespace = True
        self.foot_indent = -1

    def _write_indicator(self, ind: str, need_ws: bool, is_ws: bool, is_indention: bool) -> None:
        if need_ws and not self.whitespace:
            self._put(" ")
        self._put(ind)
        self.whitespace = is_ws
        self.indention = self.indention and is_indention
        self.open_ended = False

    def _increase_indent(self, flow: bool, in_seq_item: bool) -> None:
        self.indents.append(self.indent)
        if self.indent < 0:
            self.indent = self.best_indent if flow else 0
        elif in_seq_item:
            self.indent += 2
        else:
            self.indent = self.best_indent * ((self.indent + self.best_indent) // self.best_indent)

    # nodes
    def document(self, root: dict[str, Any], first: bool) -> None:
        if not first:
            self._write_indent()
            self._write_indicator("---", True, False, False)
            self._write_indent()
        self.node(root, in_seq_item=False)
        self.foot_indent = -1
        self._write_indent()

    def finish(self) -> str:
        if self.open_ended:
            self._write_indicator("...", True, False, False)
            self._write_indent()
        return "".join(self.out)

    def node(self, value: Any, in_seq_item: bool, simple_key: bool = False) -> None:
        if isinstance(value, dict):
            self._mapping(value, in_seq_item)
        elif isinstance(value, list):
            self._sequence(value, in_seq_item)
        elif isinstance(value, str):
            self._scalar(value, _string_style(value, simple_key), in_seq_item, simple_key)
        elif value is None:
            self._scalar("null", PLAIN, in_seq_item, simple_key)
        elif isinstance(value, bool):
            self._scalar("true" if value else "false", PLAIN, in_seq_item, simple_key)
        elif isinstance(value, int):
            self._scalar(str(value), PLAIN, in_seq_item, simple_key)
        elif isinstance(value, float):
            self._scalar(go_format_float_g(value), PLAIN, in_seq_item, simple_key)
        else:
            raise EngineUnsupported(f"cannot write a value of type {type(value).__name__}")

    def _empty_flow(self, brackets: str, in_seq_item: bool) -> None:
        self._write_indicator(brackets[0], True, True, False)
        self._increase_indent(True, in_seq_item)
        self.indent = self.indents.pop()
        if self.column == 0:
            self._write_indent()
        self._write_indicator(brackets[1], False, False, False)

    def _mapping(self, value: dict[str, Any], in_seq_item: bool) -> None:
        if not value:
            self._empty_flow("{}", in_seq_item)
            return
        self._increase_indent(False, in_seq_item)
        for key, item in value.items():
            if not isinstance(key, str):
                raise EngineUnsupported("mapping keys must be strings")
            if len(key.encode()) > 128 or any(c in _BREAKS for c in key):
                raise EngineUnsupported("a mapping key this long or with line breaks needs a complex key")
            self._write_indent()
            self.node(key, in_seq_item=False, simple_key=True)
            self._write_indicator(":", False, False, False)
            self.node(item, in_seq_item=False)
        self.indent = self.indents.pop()

    def _sequence(self, value: list[Any], in_seq_item: bool) -> None:
        if not value:
            self._empty_flow("[]", in_seq_item)
            return
        self._increase_indent(False, in_seq_item)
        for item in value:
            self._write_indent()
            self._write_indicator("-", True, False, True)
            self.node(item, in_seq_item=True)
        self.indent = self.indents.pop()

    def _scalar(self, s: str, style: str, in_seq_item: bool, simple_key: bool) -> None:
        if ("\u2028" in s or "\u2029" in s) and style in (PLAIN, SINGLE):
            raise EngineUnsupported("go-yaml does not keep U+2028/U+2029 in such a string")
        self._increase_indent(True, in_seq_item)
        hinted = style == LITERAL and (s[0] == " " or s[0] in _BREAKS)
        if self.strict and hinted and self.indent != self.indents[-1] + self.best_indent:
            # go-yaml's indentation hint ("|4") is then wrong for where it puts the text (in or under a list
            # item): sops writes a file it cannot read back.
            raise EngineUnsupported("a text starting with a space or line break, in a list, is unreadable in go-yaml")
        if style == PLAIN:
            self._plain(s)
        elif style == SINGLE:
            self._single(s)
        elif style == DOUBLE:
            self._double(s)
        else:
            self._literal(s)
        self.indent = self.indents.pop()

    # go-yaml v3 leaves the line width unset (unlimited), so its scalar writers never fold a line;
    # what remains of them is below.
    def _plain(self, s: str) -> None:
        if s and not self.whitespace:
            self._put(" ")
        self._put(s)
        if s:
            self.whitespace = False
        self.indention = False

    def _single(self, s: str) -> None:
        # Only strings without line breaks get here (see _string_style and _scalar).
        self._write_indicator("'", True, False, False)
        self._put(s.replace("'", "''"))
        self._write_indicator("'", False, False, False)
        self.whitespace = False
        self.indention = False

    def _double(self, s: str) -> None:
        self._write_indicator('"', True, False, False)
        self._put(_double_body(s))
        self._write_indicator('"', False, False, False)
        self.whitespace = False
        self.indention = False

    def _literal(self, s: str) -> None:
        self._write_indicator("|", True, False, False)
        if s[0] == " " or s[0] in _BREAKS:
            self._write_indicator(str(self.best_indent), False, False, False)
        self.open_ended = False
        chomp = ""
        if s[-1] not in _BREAKS:
            chomp = "-"
        elif len(s) == 1 or s[-2] in _BREAKS:
            chomp = "+"
            self.open_ended = True
        if chomp:
            self._write_indicator(chomp, False, False, False)
        self._put_break()
        self.whitespace = True
        breaks = True
        for part in _BREAK_SPLIT.split(s):
            if not part:
                continue
            if part in _BREAKS:
                self._write_break(part)
                breaks = True
            else:
                if breaks:
                    self._write_indent()
                self._put(part)
                self.indention = False
                breaks = False


def emit_yaml(documents: Sequence[dict[str, Any]], indent: int = 4, strict: bool = True) -> str:
    """YAML text of mapping documents exactly as sops (go-yaml v3) writes them.

    ``strict`` refuses (EngineUnsupported) the one shape go-yaml writes unreadably: a text starting
    with a space or line break in or under a list item; without it, that text is written as sops does.
    """
    text = _fast_emit(documents, indent)
    if text is not None:
        return text
    emitter = _Emitter(indent=indent, strict=strict)
    for i, doc in enumerate(documents):
        emitter.document(doc, first=i == 0)
    return emitter.finish()


class _NotFast(Exception):
    """A shape the fast writer leaves to the emitter port."""


def _fast_emit(documents: Sequence[dict[str, Any]], indent: int) -> str | None:
    """What :class:`_Emitter` writes for these documents, built line by line; None for a shape it leaves
    to the port (an empty document, a key or text needing care, a literal text go-yaml marks specially).

    The common shape (block maps and lists of one-line scalars, plus sops's armored age stanzas) is
    most of a fleet's bytes; tests prove both writers give the same text on generated documents.
    """
    out: list[str] = []
    try:
        for i, doc in enumerate(documents):
            if i:
                out.append("---\n")
            if not isinstance(doc, dict) or not doc:
                return None
            _fast_mapping(doc, 0, "", out, indent)
    except _NotFast:
        return None
    return "".join(out)


def _fast_key(key: Any) -> str:
    if not isinstance(key, str):
        raise _NotFast
    text = _key_text(key)
    if text is None:
        raise _NotFast
    return text


@lru_cache(maxsize=16384)  # a fleet's keys are few and repeat
def _key_text(key: str) -> str | None:
    """A mapping key as go-yaml writes it (simple key), or None where the port must decide."""
    if len(key.encode()) > 128 or _LINE_BREAK.search(key):
        return None
    style = _string_style(key, True)
    if style == PLAIN:
        return key or None
    if style == SINGLE:
        return "'" + key.replace("'", "''") + "'"
    return '"' + _double_body(key) + '"'


def _fast_scalar(value: Any, head: str, text_indent: int, out: list[str]) -> None:
    """One line ``head`` + the scalar (or a literal text's lines at ``text_indent``)."""
    if isinstance(value, str):
        style = _string_style(value, False)
        if style == PLAIN:
            if not value or "\u2028" in value or "\u2029" in value:
                raise _NotFast
            out.append(f"{head} {value}\n")
        elif style == SINGLE:
            if "\u2028" in value or "\u2029" in value:
                raise _NotFast
            out.append(f"{head} '{value.replace(chr(39), chr(39) * 2)}'\n")
        elif style == DOUBLE:
            out.append(f'{head} "{_double_body(value)}"\n')
        else:
            _fast_literal(value, head, text_indent, out)
    elif value is None:
        out.append(f"{head} null\n")
    elif isinstance(value, bool):
        out.append(f"{head} true\n" if value else f"{head} false\n")
    elif isinstance(value, int):
        out.append(f"{head} {value}\n")
    elif isinstance(value, float):
        out.append(f"{head} {go_format_float_g(value)}\n")
    else:
        raise _NotFast


def _fast_literal(value: str, head: str, text_indent: int, out: list[str]) -> None:
    # Only "\n" breaks, not starting with a space or break (no indentation hint), kept ("|") or
    # stripped ("|-") final break; a text ending in two breaks ("|+") is left to the port.
    if value[0] in " \n" or any(c in _BREAKS for c in value.replace("\n", "")):
        raise _NotFast
    if value.endswith("\n"):
        if value.endswith("\n\n"):
            raise _NotFast
        lines, chomp = value[:-1].split("\n"), ""
    else:
        lines, chomp = value.split("\n"), "-"
    pad = " " * text_indent
    out.append(f"{head} |{chomp}\n")
    out.extend(f"{pad}{line}\n" if line else "\n" for line in lines)


def _fast_mapping(value: dict[str, Any], column: int, lead: str, out: list[str], best: int) -> None:
    """Entries at ``column``; the first one's line starts with ``lead`` (a list item's dash, or spaces)."""
    pad = " " * column
    child = best * ((column + best) // best)
    for key, item in value.items():
        head = f"{lead}{_fast_key(key)}:"
        lead = pad
        _fast_item(item, head, child, child, out, best)


def _fast_sequence(value: list[Any], column: int, lead: str, out: list[str], best: int) -> None:
    """Items with their dash at ``column``; the first one's line starts with ``lead``."""
    pad = " " * column
    for item in value:
        _fast_item(item, f"{lead}-", column + 2, column + 2, out, best)
        lead = pad


def _fast_item(item: Any, head: str, nested: int, text_indent: int, out: list[str], best: int) -> None:
    # After a list item's dash, a nested collection starts on the same line (``- key: v``, ``- - v``);
    # after a mapping key it starts on the next line.
    in_item = head.endswith("-")
    if isinstance(item, dict):
        if not item:
            out.append(f"{head} {{}}\n")
        elif in_item:
            _fast_mapping(item, nested, head + " ", out, best)
        else:
            out.append(head + "\n")
            _fast_mapping(item, nested, " " * nested, out, best)
    elif isinstance(item, list):
        if not item:
            out.append(f"{head} []\n")
        elif in_item:
            _fast_sequence(item, nested, head + " ", out, best)
        else:
            out.append(head + "\n")
            _fast_sequence(item, nested, " " * nested, out, best)
    else:
        _fast_scalar(item, head, text_indent, out)


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

    def encrypt(self, tag: str, data: bytes, aad: str) -> str:
        ivs = self.stash.get((aad, tag, data))
        iv = (ivs.pop(0) if len(ivs) > 1 else ivs[0]) if ivs else os.urandom(32)
        out = self.aead.encrypt(iv, data, aad.encode())
        return f"ENC[AES256_GCM,data:{_b64(out[:-16])},iv:{_b64(iv)},tag:{_b64(out[-16:])},type:{tag}]"

    def decrypt(self, text: str, aad: str, where: str) -> tuple[str, bytes]:
        m = _ENC_RE.match(text)
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


def _typed(tag: str, plain: bytes, where: str) -> Any:
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
    table = _rule_table(rules)
    hits = 0
    for key in path:
        hits |= table.key(key)
    return _encrypt_tree(value, "".join(f"{key}:" for key in path), hits, table, cipher, mac)


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
    table = _rule_table(rules)
    hits = 0
    for key in path:
        hits |= table.key(key)
    return _decrypt_tree(value, "".join(f"{key}:" for key in path), hits, table, cipher, mac)


def _decrypt_tree(value: Any, aad: str, hits: int, table: _RuleTable, cipher: _Cipher, mac: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _decrypt_tree(v, f"{aad}{k}:", hits | table.key(k), table, cipher, mac) for k, v in value.items()}
        if any(isinstance(v, _Comment) for v in out.values()):
            raise EngineUnsupported("an encrypted comment in place of a mapping value")
        return out
    if isinstance(value, list):
        items = [_decrypt_tree(v, aad, hits, table, cipher, mac) for v in value]
        return [v for v in items if not isinstance(v, _Comment)]  # sops -d prints these as comments
    if value is None:
        return None
    encrypted = table.encrypted[hits]
    if encrypted and value != "":
        if not isinstance(value, str):
            raise PipelineError(f"value at {_where_aad(aad)} should be encrypted but is not")
        tag, plain = cipher.decrypt(value, aad, _where_aad(aad))
        value = _typed(tag, plain, _where_aad(aad))
        if isinstance(value, _Comment):
            return value
    if encrypted or table.mac_all:
        mac.update(value if isinstance(value, bytes) else _plain_bytes(value)[1])
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


def _recipient(r: str) -> Any:
    try:
        return _pyrage().x25519.Recipient.from_str(r.strip())
    except Exception:
        raise EngineUnsupported("recipient is not an age X25519 public key") from None


def _identities(identities: Sequence[str]) -> list[Any]:
    out = []
    for entry in identities:
        for line in entry.splitlines():
            line = line.strip()
            if line.startswith("AGE-SECRET-KEY-"):
                try:
                    out.append(_pyrage().x25519.Identity.from_str(line))
                except Exception:
                    raise PipelineError("an age identity is malformed") from None
    return out


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
        nodes = list(yaml.compose_all(ciphertext.decode("utf-8"), Loader=_PlainTagLoader))
    except UnicodeDecodeError:
        raise PipelineError(f"{where} is not UTF-8 text") from None
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
