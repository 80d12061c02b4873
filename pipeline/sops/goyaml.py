"""go-yaml v3 as sops uses it: how it types plain scalars, and how it writes a sops file's YAML.

The writer is a port of go-yaml v3's emitter for the subset sops reaches, plus a line-by-line
writer for the common shape that gives the same text (tests/sops/test_fast_yaml.py), and a reader
that accepts exactly the texts that writer produces: the engine's and sops's own files, read without
a YAML parser. Anything else is left to the port or to a YAML parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pipeline import lazyre
from pipeline.talos.yaml import resolve_plain_tagged

_INT64 = (-(1 << 63), (1 << 63) - 1)


class EngineUnsupported(Exception):
    """The input needs something this engine does not do: use the sops binary instead."""


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


_BASE60_FLOAT = lazyre.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_OLD_BOOLS = frozenset(
    ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off", "OFF")
)


def go_resolve(s: str) -> tuple[str, Any]:
    """How go-yaml v3 types an untagged plain scalar: (tag, value), tag one of str, int, float, bool,
    null, timestamp, merge, uint. The one implementation is :func:`pipeline.talos.yaml.resolve_plain_tagged`."""
    return resolve_plain_tagged(s)


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


def _inline_text(value: Any) -> str | None:
    """A scalar's one-line text as the writer puts it after ``key:`` or ``-`` (and a space); None for a
    text go-yaml writes as a literal block. Raises _NotFast where the port must decide."""
    if isinstance(value, str):
        # ENC[...] values are unique (no cache hit) and always plain: answered without the analysis.
        if value[:4] == "ENC[" and _SIMPLE_PLAIN.fullmatch(value):
            return value
        style = _string_style(value, False)
        if style == PLAIN:
            if not value or "\u2028" in value or "\u2029" in value:
                raise _NotFast
            return value
        if style == SINGLE:
            if "\u2028" in value or "\u2029" in value:
                raise _NotFast
            return "'" + value.replace("'", "''") + "'"
        if style == DOUBLE:
            return '"' + _double_body(value) + '"'
        return None
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_format_float_g(value)
    raise _NotFast


def inline_text(value: Any) -> str:
    """A scalar's text as the writer puts it on one line (a multi-line text: double-quoted, as in a key)."""
    try:
        text = _inline_text(value)
    except _NotFast:
        text = None
    return text if text is not None else '"' + _double_body(str(value)) + '"'


def _fast_scalar(value: Any, head: str, text_indent: int, out: list[str]) -> None:
    """One line ``head`` + the scalar (or a literal text's lines at ``text_indent``)."""
    text = _inline_text(value)
    if text is None:
        _fast_literal(value, head, text_indent, out)
    else:
        out.append(f"{head} {text}\n")


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
    if isinstance(item, dict | list):
        if not item:
            out.append(f"{head} {{}}\n" if isinstance(item, dict) else f"{head} []\n")
            return
        write = _fast_mapping if isinstance(item, dict) else _fast_sequence
        if in_item:
            write(item, nested, head + " ", out, best)
        else:
            out.append(head + "\n")
            write(item, nested, " " * nested, out, best)
    else:
        _fast_scalar(item, head, text_indent, out)


# --------------------------------------------------------------------------------------------
# reading what the writer writes


_FOREIGN_BREAKS = lazyre.compile("[\r\x85\u2028\u2029\ufeff]")
_UNESCAPES = {letter: chr(code) for code, letter in _ESCAPES.items()}
_DOUBLE_ESCAPE = lazyre.compile(r"\\(?:x([0-9A-F]{2})|u([0-9A-F]{4})|U([0-9A-F]{8})|(.))", re.DOTALL)
_RESOLVED_TYPES = frozenset(("str", "int", "float", "bool", "null"))


def read_written(text: str, indent: int = 4) -> list[dict[str, Any]] | None:
    """The documents of ``text`` if it is exactly what the writer writes for them (sops's and the
    engine's files are), typed as go-yaml types them; None for any other text (read it with a YAML parser).

    Every line is checked against the line the writer would write for what was read so far, so an
    answer is never a misreading: ``emit_yaml(read_written(t)) == t`` whenever it answers.
    """
    if not text.endswith("\n") or _FOREIGN_BREAKS.search(text):
        return None
    reader = _Reader(text[:-1].split("\n"), indent)
    try:
        return reader.documents()
    except _NotFast:
        return None


def _undouble(body: str) -> str:
    def one(m: Any) -> str:
        code = m[1] or m[2] or m[3]
        if code:
            point = int(code, 16)
            if 0xD800 <= point <= 0xDFFF or point > 0x10FFFF:
                raise _NotFast  # a lone surrogate or no character at all: leave it to the parser
            return chr(point)
        if m[4] not in _UNESCAPES:
            raise _NotFast
        return _UNESCAPES[m[4]]

    return _DOUBLE_ESCAPE.sub(one, body) if "\\" in body else body


_MISSING = object()
_B64 = "[A-Za-z0-9+/=]*"
_ENC_VALUE = lazyre.compile(rf"ENC\[AES256_GCM,data:{_B64},iv:{_B64},tag:{_B64},type:[a-z]+\]")
# Checked keys and short scalars by their text: a fleet's files repeat them line after line.
_KEYS: dict[str, str | None] = {}
_SCALARS: dict[str, Any] = {}
_CACHE_LIMIT = 65536


def _scalar_cached(text: str) -> Any:
    value = _SCALARS.get(text, _MISSING)
    if value is not _MISSING:
        return value
    if text[:4] == "ENC[" and _ENC_VALUE.fullmatch(text):
        return text  # a plain string, as the writer writes every ENC[...] value
    value = _scalar_value(text)
    if len(text) <= 256:
        if len(_SCALARS) >= _CACHE_LIMIT:
            _SCALARS.clear()
        _SCALARS[text] = value
    return value


def _entry(content: str) -> tuple[str | None, str]:
    """``_split_key`` with plain keys answered from the cache."""
    if content[:1] not in ("'", '"'):
        end = content.find(": ")
        if end < 0:
            if not content.endswith(":"):
                return None, ""
            end = len(content) - 1
        raw = content[:end]
        key = _KEYS.get(raw, _MISSING)
        if key is _MISSING:
            if len(_KEYS) >= _CACHE_LIMIT:
                _KEYS.clear()
            key = _KEYS[raw] = raw if _key_text(raw) == raw else None
        return (key, content[end + 1 :]) if key is not None else (None, "")
    return _split_key(content)


class _Reader:
    """Reads lines in the writer's layout: each construct at the column the writer puts it."""

    def __init__(self, lines: list[str], best: int) -> None:
        self.lines = lines
        self.i = 0
        self.best = best

    def documents(self) -> list[dict[str, Any]]:
        docs = []
        while True:
            docs.append(self.mapping(0, lead=False))
            if self.i == len(self.lines):
                return docs
            if self.lines[self.i] != "---" or self.i + 1 == len(self.lines):
                raise _NotFast
            self.i += 1

    def mapping(self, column: int, lead: bool) -> dict[str, Any]:
        """Entries at ``column``; with ``lead`` the first is on the current line after a list item's dash."""
        out: dict[str, Any] = {}
        pad = " " * column
        child = self.best * ((column + self.best) // self.best)
        lines = self.lines
        count = len(lines)
        keys, scalars = _KEYS, _SCALARS
        while self.i < count:
            line = lines[self.i]
            if lead:
                lead = False
            elif line == "---" or not line.startswith(pad):
                break  # a document's or an outer collection's end
            # The common line, from what earlier lines proved: a key the writer writes as it is, then a
            # one-line scalar it writes as it is (a known text, or an ENC[...] value).
            end = line.find(": ", column)
            if end > column:
                key = keys.get(line[column:end])
                if key is not None and key not in out:
                    text = line[end + 2 :]
                    value = scalars.get(text, _MISSING)
                    if value is _MISSING and text[:4] == "ENC[" and _ENC_VALUE.fullmatch(text):
                        value = text
                    if value is not _MISSING:
                        out[key] = value
                        self.i += 1
                        continue
            content = line[column:]
            if not content or content[0] == " " or content[:2] == "- " or content == "-":
                raise _NotFast  # deeper than an entry, or a list item where an entry belongs
            key, rest = _entry(content)
            if key is None or key in out:
                raise _NotFast
            if len(rest) > 1 and rest[0] == " " and rest not in (" {}", " []", " |", " |-"):
                out[key] = _scalar_cached(rest[1:])  # the common line: key and a one-line scalar
                self.i += 1
            else:
                out[key] = self.value(rest, child, child)
        if not out:
            raise _NotFast
        return out

    def sequence(self, column: int, lead: bool) -> list[Any]:
        """Items with their dash at ``column``; with ``lead`` the first dash is mid-line (``- - x``)."""
        out: list[Any] = []
        pad = " " * column
        lines = self.lines
        while self.i < len(lines):
            line = lines[self.i]
            if lead:
                lead = False
            elif not line.startswith(pad):
                break
            elif line[column : column + 2] != "- ":
                raise _NotFast
            content = line[column + 2 :]
            item = column + 2
            known = _SCALARS.get(content, _MISSING)  # a text proven a scalar is never a key line
            if known is not _MISSING:
                out.append(known)
                self.i += 1
            elif content[:2] == "- ":
                out.append(self.sequence(item, lead=True))
            elif content in ("{}", "[]", "|", "|-") or _entry(content)[0] is None:
                out.append(self.value(" " + content, item, item))
            else:
                out.append(self.mapping(item, lead=True))
        if not out:
            raise _NotFast
        return out

    def value(self, rest: str, nested: int, text_indent: int) -> Any:
        """What follows ``key:`` (or a list item's dash) on the current line, and below it."""
        if rest == "":
            self.i += 1
            if self.i == len(self.lines):
                raise _NotFast
            line = self.lines[self.i]
            if not line.startswith(" " * nested) or line[nested : nested + 1] in ("", " "):
                raise _NotFast
            if line[nested : nested + 2] == "- ":
                return self.sequence(nested, lead=False)
            return self.mapping(nested, lead=False)
        if rest[0] != " ":
            raise _NotFast
        text = rest[1:]
        if text == "{}":
            self.i += 1
            return {}
        if text == "[]":
            self.i += 1
            return []
        if text in ("|", "|-"):
            return self.literal(text_indent, keep=text == "|")
        self.i += 1
        return _scalar_cached(text)

    def literal(self, text_indent: int, keep: bool) -> str:
        pad = " " * text_indent
        lines = self.lines
        self.i += 1
        body: list[str] = []
        while self.i < len(lines) and (not lines[self.i] or lines[self.i].startswith(pad)):
            line = lines[self.i]
            if line and len(line) == text_indent:
                raise _NotFast  # the writer leaves an empty line empty
            body.append(line[text_indent:])
            self.i += 1
        if not body or not body[0] or body[0][0] == " " or not body[-1]:
            raise _NotFast
        value = "\n".join(body) + ("\n" if keep else "")
        if _inline_text(value) is not None:
            raise _NotFast
        return value


def _split_key(content: str) -> tuple[str | None, str]:
    """A mapping entry's key (None: not an entry in the writer's layout) and what follows its colon."""
    first = content[:1]
    if first == "'":
        end = 1
        while True:
            end = content.find("'", end)
            if end < 0:
                return None, ""
            if content[end + 1 : end + 2] != "'":
                break
            end += 2
        raw, after = content[: end + 1], content[end + 1 :]
        key = raw[1:-1].replace("''", "'")
    elif first == '"':
        end = 1
        while end < len(content) and content[end] != '"':
            end += 2 if content[end] == "\\" else 1
        if end >= len(content):
            return None, ""
        raw, after = content[: end + 1], content[end + 1 :]
        try:
            key = _undouble(raw[1:-1])
        except _NotFast:
            return None, ""
    else:
        end = content.find(": ")
        if end < 0:
            if not content.endswith(":"):
                return None, ""
            end = len(content) - 1
        raw, after = content[:end], content[end:]
        key = raw
    if after[:1] != ":" or _key_text(key) != raw:
        return None, ""
    return key, after[1:]


def _scalar_value(text: str) -> Any:
    """The value of a one-line scalar in the writer's layout (checked: it must be written back the same)."""
    first = text[:1]
    if first == "'":
        if len(text) < 2 or text[-1] != "'":
            raise _NotFast
        value: Any = text[1:-1].replace("''", "'")
    elif first == '"':
        if len(text) < 2 or text[-1] != '"':
            raise _NotFast
        value = _undouble(text[1:-1])
    else:
        tag, value = go_resolve(text)
        if tag not in _RESOLVED_TYPES:
            raise _NotFast
    if _inline_text(value) != text:
        raise _NotFast
    return value
