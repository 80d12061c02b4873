"""One YAML layer with go-yaml v3 semantics: read and write YAML as Talos and sops do.

Talos and sops read YAML with go-yaml v3 (``gopkg.in/yaml.v3``), which follows YAML 1.2's core
schema plus a few extensions of its own, not PyYAML's YAML 1.1 table. This module parses with
PyYAML (libyaml's C parser when available) and then types every scalar by go-yaml v3's rules
(``resolve.go`` and ``decode.go`` of its ``v3`` branch), checked against the sops binary.

Reading (``load_documents``, ``load_one``, ``load_documents_with_lines``):

- A plain scalar is typed as go-yaml v3 types it when decoding into ``interface{}``: null for
  ``""``/``~``/``null``/``Null``/``NULL``; bools only for ``true``/``True``/``TRUE`` and the three
  spellings of false (``yes``, ``on``, ``y`` ... are strings); ints in Go syntax (``0x1F``,
  ``0o17``, ``0b101``, a leading-zero octal ``017``, a ``+`` sign, ``_`` anywhere); floats such as
  ``.5``, ``1e3``, ``1.`` and ``.inf``/``.nan``; an integer past the uint64 range is a float, and
  ``08`` (no octal) the float 8.0, as in Go.
- Go types ``2024-06-01`` (and its RFC 3339 forms) as a ``time.Time``. Talos decodes every such
  value into a Go string field, where go-yaml keeps the source text, and sops rewrites an unquoted
  date as ``2024-06-01T00:00:00Z``. A timestamp is therefore loaded as its source text (a ``str``)
  and ``dump_documents`` quotes it, so the artefact keeps what the user wrote. ``12:30:00`` is a
  plain string in go-yaml v3 (no sexagesimal numbers).
- Quoted and block scalars are strings. ``! 123`` is an int (go-yaml treats the non-specific tag
  ``!`` as no tag), ``! "123"`` a string. Explicit ``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null`` and ``!!timestamp`` are honoured as go-yaml does (``!!float 1`` is 1.0, ``!!int 1.5``
  is an error); ``!!map`` and ``!!seq`` on collections are accepted.
- Refused, each as a one-line PipelineError naming file:line: duplicate mapping keys (go-yaml v3
  refuses them too: it compares the keys' source text), ``!!set``, ``!!omap``, ``!!pairs``,
  ``!!binary`` and every other tag (go-yaml would silently turn them into maps, lists or decoded
  bytes; refusing keeps the result deterministic and free of values the user did not write), a
  ``null`` mapping key, a non-scalar key, a quoted ``"<<"`` key (sops rewrites it into a merge key),
  an integer outside the signed 64-bit range (sops cannot encrypt it), recursive anchors, alias
  expansion beyond ``max_alias_nodes`` nodes, nesting deeper than ``max_depth`` and text larger
  than ``max_bytes``. Stricter than go-yaml (checked with sops), deliberately: a redefined anchor
  (go-yaml uses the later one) and an alias to an anchor of an earlier document are refused too.
- Mapping keys are always strings: the key's source text, as Talos decodes every key into a Go
  string (sops accepts only string keys). ``1: a`` has the key ``"1"``.
- Merge keys (``<<``) merge as go-yaml does: the mapping's own keys win, then each merged mapping
  in order, the first one to define a key winning; an alias to a list is no merge value. Aliases
  are expanded into fresh objects (no shared mutable values between two places of a document).
- ``load_documents_with_lines`` also gives, per document, the line of every key path and the
  source text of every plain non-string scalar (``Document.raw``: for fields Talos decodes into a
  Go string, where ``1e3`` stays "1e3").

Writing (``dump_documents``): go-yaml's layout as sops and talosctl write it (4 spaces per level,
a sequence indented under its key, a "- " item's content 2 columns in; for a typical Talos config
the text is byte for byte what ``sops -d`` gives back), keys in the given order, strings double-quoted
whenever go-yaml would type them as anything but a string (plus the YAML 1.1 bools and
sexagesimal numbers go-yaml's own encoder quotes, and ``<<``), multi-line strings as literal
blocks, ints in decimal, floats in Python's shortest round-trip form (``1.0``, ``1e+16``,
``.inf``, ``.nan``) so that Go reads a float.

What sops itself does to values (measured with sops 3.11, its go-yaml writer):

- it re-emits an integral float below 1e6 with no decimal point (``1.0`` comes back as ``1``, an
  int), so compare decrypted documents numerically for floats;
- it turns a multi-line string that starts with a tab into null, and writes a multi-line string
  that starts with a space or a line break, inside a list, or a key with a line break, as YAML that
  neither it nor go-yaml can read back. ``dump_documents`` refuses these (``sops_hazard`` names the
  place); ``for_sops=False`` writes them anyway (go-yaml reads this module's text correctly);
- it refuses non-string keys and integers beyond int64, and does not apply merge keys (it keeps
  ``<<`` as a key and writes a ``"<<"`` string as ``!!merge <<``).

Speed: a 200-line Talos config loads in about 2-3 ms with libyaml (about what PyYAML's own
CSafeLoader takes); the pure-Python parser is used when libyaml is missing, with the same results.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline import lazyre
from pipeline.errors import PipelineError

__all__ = [
    "DEFAULT_MAX_ALIAS_NODES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "Document",
    "GoDumper",
    "LineMap",
    "dump_documents",
    "go_quotes",
    "line_of",
    "load_documents",
    "load_documents_with_lines",
    "load_one",
    "load_one_with_lines",
    "resolve_plain",
    "sops_hazard",
]

# Key paths such as ("machine", "files", 0, "permissions") mapped to 1-based source lines.
LineMap = dict[tuple[Any, ...], int]

DEFAULT_MAX_BYTES = 1024 * 1024
"""Largest YAML text accepted, in UTF-8 bytes (1 MiB)."""
DEFAULT_MAX_ALIAS_NODES = 100_000
"""Most nodes a document may gain by expanding aliases (a billion-laughs document needs ~10^9)."""
DEFAULT_MAX_DEPTH = 256
"""Deepest nesting of collections after alias expansion (Talos configs nest about 10 deep)."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MERGE, _MAP, _SEQ = (_TAG + t for t in ("timestamp", "merge", "map", "seq"))
# The tag this module's resolver gives a scalar without a specific tag (no tag, or "!"). Whether
# it is typed (plain) or a string (quoted, block) is decided from the node's style.
_IMPLICIT = "tag:goyaml.invalid,2024:implicit"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP, _MERGE})


class _Timestamp(str):
    """Internal marker: a scalar go-yaml types as !!timestamp (kept as its text)."""


# ---------------------------------------------------------------------------
# go-yaml v3's scalar resolution (resolve.go)

_LOOKUP: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_MISSING = object()
_DIGITS = frozenset("0123456789")
_MAP_HINT = frozenset("yYnNtTfFoO~")
_NUM_HINT = frozenset("+-0123456789")

# Go's strconv.ParseInt(s, 0, 64) syntax, applied after go-yaml removed every "_".
_GO_INT = lazyre.compile(r"([+-]?)(?:0[bB]([01]+)|0[oO]([0-7]+)|0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))")
# go-yaml's yamlStyleFloat, applied to the text without "_".
_YAML_FLOAT = lazyre.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
# Go's strconv.ParseFloat syntax for a text starting with ".": "_" only between two digits.
_GO_DOT_FLOAT = lazyre.compile(r"\.[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+(?:_[0-9]+)*)?")
# The two prefixed forms go-yaml retries with a sign after the prefix ("0b-101" is -5).
_PREFIX_RETRY = lazyre.compile(r"(-?)0([bo])([+-]?)([0-9a-zA-Z]+)")


def _go_int(plain: str) -> int | None:
    """strconv.ParseInt(plain, 0, 64), then ParseUint for values past int64; None if neither."""
    match = _GO_INT.fullmatch(plain)
    if match is None:
        return None
    sign, binary, octal, hexa, leading_zero, decimal = match.groups()
    if binary is not None:
        value = int(binary, 2)
    elif octal is not None:
        value = int(octal, 8)
    elif hexa is not None:
        value = int(hexa, 16)
    elif leading_zero is not None:
        value = int(leading_zero, 8)  # "0" or a leading-zero octal such as 017
    else:
        value = int(decimal)
    if sign == "-":
        value = -value
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    if not sign and value <= _UINT64_MAX:
        return value  # a Go uint64
    return None


def _prefix_retry(plain: str) -> int | None:
    # resolve.go's explicit 0b/0o branches: ParseInt(rest, 2 or 8), which accepts a sign of its own.
    match = _PREFIX_RETRY.fullmatch(plain)
    if match is None:
        return None
    minus, kind, sign, digits = match.groups()
    if (kind == "b" and not set(digits) <= {"0", "1"}) or (kind == "o" and not set(digits) <= set("01234567")):
        return None
    if minus and sign:
        return None  # "-0b-1": ParseInt("--1") fails
    value = int(digits, 2 if kind == "b" else 8)
    if minus or sign == "-":
        value = -value
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    if not minus and not sign and value <= _UINT64_MAX:
        return value
    return None


def _getnum(text: str, pos: int) -> tuple[int, int] | None:
    # time.Parse's getnum(s, false): one or two digits.
    if pos >= len(text) or text[pos] not in _DIGITS:
        return None
    if pos + 1 < len(text) and text[pos + 1] in _DIGITS:
        return int(text[pos : pos + 2]), pos + 2
    return int(text[pos]), pos + 1


def _is_timestamp(text: str) -> bool:
    """Whether go-yaml's parseTimestamp accepts ``text`` (its four time.Parse layouts)."""
    if len(text) < 5 or text[4] != "-" or not all(c in _DIGITS for c in text[:4]):
        return False
    year = int(text[:4])
    got = _getnum(text, 5)
    if got is None:
        return False
    month, pos = got
    if not 1 <= month <= 12 or pos >= len(text) or text[pos] != "-":
        return False
    got = _getnum(text, pos + 1)
    if got is None:
        return False
    day, pos = got
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return False
    if pos == len(text):
        return True  # "2006-1-2"
    zoned = text[pos] in "Tt"
    if zoned:
        pos += 1
    elif text[pos] == " ":
        while pos < len(text) and text[pos] == " ":
            pos += 1  # a space in a Go layout matches one or more spaces
    else:
        return False
    for limit, separator in ((24, ":"), (60, ":"), (60, "")):
        got = _getnum(text, pos)
        if got is None or got[0] >= limit:
            return False
        pos = got[1]
        if separator:
            if pos >= len(text) or text[pos] != separator:
                return False
            pos += 1
    if pos + 1 < len(text) and text[pos] in ".," and text[pos + 1] in _DIGITS:
        pos += 1
        while pos < len(text) and text[pos] in _DIGITS:
            pos += 1
    if zoned:
        if pos < len(text) and text[pos] == "Z":
            pos += 1
        else:
            zone = text[pos : pos + 6]
            if (
                len(zone) < 6
                or zone[0] not in "+-"
                or zone[3] != ":"
                or not all(c in _DIGITS for c in zone[1:3] + zone[4:6])
                or int(zone[1:3]) > 24
                or int(zone[4:6]) > 60
            ):
                return False
            pos += 6
    return pos == len(text)


def _resolve(text: str, timestamps: bool = True) -> Any:
    """go-yaml v3's resolve() for an untagged plain scalar; a timestamp comes back as _Timestamp."""
    if not text:
        return None
    hint = text[0]
    if hint in _MAP_HINT:
        return _LOOKUP.get(text, text)
    if hint == ".":
        found = _LOOKUP.get(text, _MISSING)
        if found is not _MISSING:
            return found
        if _GO_DOT_FLOAT.fullmatch(text):
            value = float(text.replace("_", ""))
            if not math.isinf(value):  # Go: ErrRange, so the text stays a string
                return value
        return text
    if hint not in _NUM_HINT:
        return text
    found = _LOOKUP.get(text, _MISSING)
    if found is not _MISSING:
        return found
    if timestamps and hint in _DIGITS and _is_timestamp(text):
        return _Timestamp(text)
    plain = text.replace("_", "")
    number = _go_int(plain)
    if number is not None:
        return number
    if _YAML_FLOAT.fullmatch(plain):
        value = float(plain)
        if not math.isinf(value):
            return value
    number = _prefix_retry(plain)
    if number is not None:
        return number
    return text


def resolve_plain(text: str) -> Any:
    """The value go-yaml v3 gives the plain (unquoted, untagged) scalar ``text``.

    None, bool, int, float or str; a timestamp is returned as its text (see the module notes).
    """
    value = _resolve(text)
    return str(value) if isinstance(value, _Timestamp) else value


_TAG_NAMES = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}
_INT64_MAX = (1 << 63) - 1


def resolve_plain_tagged(text: str) -> tuple[str, Any]:
    """go-yaml v3's (tag, value) for the plain scalar ``text``: tag one of str, int, float, bool, null,
    timestamp (value: the text), merge (``<<``) or uint (an integer above int64, which sops cannot hold)."""
    if text == "<<":
        return "merge", text
    value = _resolve(text)
    if isinstance(value, _Timestamp):
        return "timestamp", str(value)
    tag = _TAG_NAMES[type(value)]
    if tag == "int" and value > _INT64_MAX:
        return "uint", value
    return tag, value


_BASE60 = lazyre.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_OLD_BOOLS = frozenset(
    ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off", "OFF")
)


def go_quotes(text: str) -> bool:
    """Whether a string must be quoted to stay a string for go-yaml (and for YAML 1.1 readers).

    True when go-yaml v3 would type the plain scalar as anything but a string, for the YAML 1.1
    bools and sexagesimal numbers go-yaml's own encoder quotes, and for ``<<`` (a merge key).
    """
    if text in _OLD_BOOLS or text == "<<":
        return True
    if type(_resolve(text)) is not str:
        return True
    return text[:1] in _NUM_HINT and ":" in text and _BASE60.fullmatch(text) is not None


def _resolve_tagged(tag: str, text: str) -> Any:
    """resolve() with an explicit tag, with go-yaml's check; None only for !!null."""
    if tag in (_STR, _MERGE):
        return text  # !!merge on anything but a "<<" key is not resolvable: the text stays a string
    value = _resolve(text, timestamps=tag == _TIMESTAMP)
    kind = _TAG_OF_TYPE.get(type(value), _STR)
    if kind == tag:
        return str(value) if kind == _TIMESTAMP else value
    if tag == _FLOAT and kind == _INT:
        return float(value)
    raise ValueError(f"cannot decode a {_short(kind)} value as a {_short(tag)}")


def _short(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


# ---------------------------------------------------------------------------
# Loading

_BASE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """PyYAML's (C) parser and composer with a resolver that leaves all typing to this module."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return _IMPLICIT
        return _MAP if kind is MappingNode else _SEQ


@dataclass(frozen=True)
class Document:
    """One loaded YAML document.

    ``value`` is the document (None for an empty one), ``line`` the line it starts on, ``lines``
    maps every key path and list index path to its 1-based line, and ``raw`` maps the path of every
    plain scalar typed as a non-string (int, float, bool, null) to its source text, for decoders
    that put such a value into a Go string field (go-yaml then keeps the text, e.g. ``1e3``).
    """

    value: Any
    line: int
    lines: LineMap = field(repr=False)
    raw: dict[tuple[Any, ...], str] = field(repr=False)


class _Refusal(Exception):
    def __init__(self, message: str, node: Node | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = node.start_mark.line + 1 if node is not None else None


def _is_plain(node: ScalarNode) -> bool:
    return not node.style  # None (Python parser) or "" (C parser) for a plain scalar


def _is_merge_key(node: Node) -> bool:
    return (
        isinstance(node, ScalarNode)
        and node.value == "<<"
        and (node.tag == _MERGE or (node.tag == _IMPLICIT and _is_plain(node)))
    )


def _check_tag(node: Node) -> None:
    tag = node.tag
    if isinstance(node, ScalarNode):
        ok = tag == _IMPLICIT or tag in _SCALAR_TAGS
    elif isinstance(node, MappingNode):
        ok = tag == _MAP
    else:
        ok = tag == _SEQ
    if not ok:
        what = _short(tag)
        hint = (
            " (sets, ordered maps and binary data have no JSON form Talos or sops keep)"
            if what in ("!!set", "!!omap", "!!pairs", "!!binary")
            else ""
        )
        raise _Refusal(f"the YAML tag {what} is not supported{hint}", node)


class _Builder:
    """Turns a composed node graph into plain Python values, with lines, as go-yaml decodes it."""

    def __init__(self, max_alias_nodes: int, max_depth: int) -> None:
        self.max_alias_nodes = max_alias_nodes
        self.max_depth = max_depth

    # -- alias accounting: expanded size of the node graph, memoised so a bomb costs its own size

    def check_expansion(self, root: Node) -> None:
        # Per node: its expanded size and height, memoised, so a bomb costs only its own text.
        measured: dict[int, tuple[int, int]] = {}
        visiting: set[int] = set()

        def measure(node: Node) -> tuple[int, int]:
            key = id(node)
            known = measured.get(key)
            if known is not None:
                return known
            if isinstance(node, ScalarNode):
                measured[key] = (1, 0)
                return 1, 0
            if key in visiting:
                raise _Refusal("an anchor's value contains an alias to itself", node)
            if len(visiting) >= self.max_depth:
                raise _Refusal(f"nested more than {self.max_depth} levels deep (after expanding aliases)", node)
            visiting.add(key)
            children = [item for pair in node.value for item in pair] if isinstance(node, MappingNode) else node.value
            size, height = 1, 0
            for child in children:
                child_size, child_height = measure(child)
                size += child_size
                height = max(height, child_height + 1)
            visiting.discard(key)
            if height > self.max_depth:
                raise _Refusal(f"nested more than {self.max_depth} levels deep (after expanding aliases)", node)
            measured[key] = (size, height)
            return size, height

        expanded = measure(root)[0]
        if expanded - len(measured) > self.max_alias_nodes:
            raise _Refusal(
                f"aliases expand the document by more than {self.max_alias_nodes} nodes "
                "(an alias bomb?); refused before expanding it",
                root,
            )

    # -- construction

    def build(self, node: Node, path: tuple[Any, ...], lines: LineMap, raw: dict[tuple[Any, ...], str]) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        _check_tag(node)
        if len(path) > self.max_depth:
            raise _Refusal(f"nested more than {self.max_depth} levels deep (after expanding aliases)", node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path, raw)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, index), lines, raw) for index, item in enumerate(node.value)]
        return self.mapping(node, path, lines, raw)

    def scalar(self, node: ScalarNode, path: tuple[Any, ...], raw: dict[tuple[Any, ...], str]) -> Any:
        text = node.value
        if node.tag == _IMPLICIT:
            if not _is_plain(node):
                return text
            value = _resolve(text)
            if type(value) is str:
                return value
            if isinstance(value, _Timestamp):
                return str(value)
        else:
            try:
                value = _resolve_tagged(node.tag, text)
            except ValueError as error:
                raise _Refusal(str(error), node) from None
            if type(value) is str:
                return value
        if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
            raise _Refusal("an integer outside the signed 64-bit range (sops cannot encrypt it; quote it)", node)
        raw[path] = text
        return value

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise _Refusal("a mapping key must be a scalar", node)
        _check_tag(node)
        text = node.value
        if node.tag == _IMPLICIT:
            if _is_plain(node) and _resolve(text) is None:
                raise _Refusal("a mapping key is null", node)
            if text == "<<":
                raise _Refusal('a quoted "<<" key is not supported (sops rewrites it into a merge key)', node)
        else:
            try:
                value = _resolve_tagged(node.tag, text)
            except ValueError as error:
                raise _Refusal(str(error), node) from None
            if value is None:
                raise _Refusal("a mapping key is null", node)
        return text

    def mapping(
        self, node: MappingNode, path: tuple[Any, ...], lines: LineMap, raw: dict[tuple[Any, ...], str]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if _is_merge_key(key_node):
                if merges:
                    raise _Refusal(f"duplicate key '<<' (first defined on line {first_line['<<']})", key_node)
                first_line["<<"] = line
                merges.append((key_node, value_node))
                continue
            key = self.key(key_node)
            if key in first_line:
                raise _Refusal(f"duplicate key '{key}' (first defined on line {first_line[key]})", key_node)
            first_line[key] = line
            here = (*path, key)
            lines[here] = line
            if type(value_node) is ScalarNode:
                # build()'s steps for a scalar, without the call (most values are scalars); its line
                # entry is the key's, set just above.
                _check_tag(value_node)
                if len(here) > self.max_depth:
                    raise _Refusal(f"nested more than {self.max_depth} levels deep (after expanding aliases)",
                                   value_node)
                result[key] = self.scalar(value_node, here, raw)
            else:
                result[key] = self.build(value_node, here, lines, raw)
            lines[here] = line  # the key's line, not its value's
        for key_node, merge in merges:
            self.merge(key_node, merge, path, result, lines, raw)
        return result

    def merge(
        self,
        key_node: Node,
        merge: Node,
        path: tuple[Any, ...],
        result: dict[str, Any],
        lines: LineMap,
        raw: dict[tuple[Any, ...], str],
    ) -> None:
        _check_tag(merge)
        # An alias to a list is refused by go-yaml (only aliases to mappings merge). The composer
        # hands back the anchored node itself; an alias is recognised by starting before its key.
        aliased = merge.start_mark.index < key_node.start_mark.index
        if isinstance(merge, MappingNode):
            sources = [merge]
        elif (
            isinstance(merge, SequenceNode)
            and not aliased
            and all(isinstance(item, MappingNode) for item in merge.value)
        ):
            sources = merge.value
        else:
            raise _Refusal("a merge key (<<) needs a mapping or a list of mappings as its value", key_node)
        depth = len(path)
        for source in sources:
            _check_tag(source)
            source_lines: LineMap = {}
            source_raw: dict[tuple[Any, ...], str] = {}
            merged = self.mapping(source, path, source_lines, source_raw)
            taken = {key for key in merged if key not in result}
            for key in taken:
                result[key] = merged[key]
            for table, into in ((source_lines, lines), (source_raw, raw)):
                for where, what in table.items():
                    if len(where) > depth and where[depth] in taken:
                        into.setdefault(where, what)


def _check_size(text: str, source: str, max_bytes: int) -> None:
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes):
        raise PipelineError(f"the YAML text is larger than the limit of {max_bytes} bytes", path=source)


def load_documents_with_lines(
    text: str,
    source: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> list[Document]:
    """Every document of a YAML stream, typed as go-yaml v3 types it, with its line map.

    Empty documents (``---`` with nothing after it) are kept as ``None`` values. Bad or refused
    input raises PipelineError naming ``source`` and the line.
    """
    source = str(source)
    _check_size(text, source, max_bytes)
    builder = _Builder(max_alias_nodes, max_depth)
    has_aliases = "*" in text  # an alias needs its "*" indicator: no "*", no expansion to measure
    documents: list[Document] = []
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            line = node.start_mark.line + 1
            if has_aliases:
                builder.check_expansion(node)
            lines: LineMap = {}
            raw: dict[tuple[Any, ...], str] = {}
            value = builder.build(node, (), lines, raw)
            lines[()] = line
            documents.append(Document(value, line, lines, raw))
    except _Refusal as error:
        raise PipelineError(error.message, path=source, line=error.line) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        context = error.context or ""
        if "duplicate anchor" in context:
            what = context.split(";")[0].replace("found duplicate anchor", "the anchor")
            message = f"{what} is defined twice (refused: go-yaml would silently use the later one)"
        else:
            message = f"invalid YAML: {error.problem or context}"
            if error.problem and context:
                message += f" ({context})"
        raise PipelineError(message, path=source, line=line) from None
    except yaml.YAMLError as error:
        raise PipelineError(f"invalid YAML: {error}", path=source) from None
    except RecursionError:  # only the pure-Python parser, which has no nesting limit of its own
        raise PipelineError("invalid YAML: nested too deeply", path=source) from None
    return documents


def load_documents(
    text: str,
    source: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> list[Any]:
    """The values of every document in ``text`` (see ``load_documents_with_lines``)."""
    return [
        document.value
        for document in load_documents_with_lines(
            text, source, max_bytes=max_bytes, max_alias_nodes=max_alias_nodes, max_depth=max_depth
        )
    ]


def load_one(
    text: str,
    source: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """The single document of ``text`` (None for an empty text); PipelineError for two or more."""
    documents = load_documents_with_lines(
        text, source, max_bytes=max_bytes, max_alias_nodes=max_alias_nodes, max_depth=max_depth
    )
    if len(documents) > 1:
        raise PipelineError(
            f"expected one YAML document, found {len(documents)}", path=str(source), line=documents[1].line
        )
    return documents[0].value if documents else None


def load_one_with_lines(text: str, source: str | Path) -> tuple[Any, LineMap]:
    """The single document of ``text`` and its line map (``(None, {})`` for an empty text)."""
    documents = load_documents_with_lines(text, source)
    if len(documents) > 1:
        raise PipelineError(
            f"expected one YAML document, found {len(documents)}", path=str(source), line=documents[1].line
        )
    return (documents[0].value, documents[0].lines) if documents else (None, {})


def line_of(lines: LineMap, path: Iterable[Any]) -> int | None:
    """The line of the deepest known prefix of ``path`` (the closest thing to point at)."""
    path = tuple(path)
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


# ---------------------------------------------------------------------------
# Dumping

# Characters libyaml turns into "\n" or treats as line breaks inside a literal block: a string
# holding one is written double-quoted (escaped) instead.
_NO_LITERAL = lazyre.compile("[\r\x85\u2028\u2029\ufeff]")


class _Dumper(yaml.SafeDumper):
    """PyYAML's emitter with go-yaml's typing of plain scalars and go-yaml's indentation."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            # A plain scalar gets the tag go-yaml gives its text; a string that must be quoted so
            # gets a tag other than !!str, and the emitter quotes it.
            return _plain_tag(value) if implicit[0] else _STR
        return _MAP if kind is MappingNode else _SEQ

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # go-yaml's layout: a block sequence is indented under its key, the content of a "- " item
        # starts 2 columns in, and any other nesting goes to the next multiple of the indent step.
        self.indents.append(self.indent)
        if self.indent is None:
            self.indent = self.best_indent if flow else 0
        elif self.states and self.states[-1] == self.expect_block_sequence_item:
            self.indent += 2
        else:
            self.indent = self.best_indent * ((self.indent + self.best_indent) // self.best_indent)

    def determine_block_hints(self, text: str) -> str:
        # An explicit indentation indicator counts from the enclosing block's indentation, which
        # is 2 (not the indent step) below a literal that is a "- " item.
        hints = super().determine_block_hints(text)
        if hints[:1].isdigit():
            parent = self.indents[-1] if self.indents and self.indents[-1] is not None else 0
            hints = str(self.indent - parent) + hints[1:]
        return hints

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style  # go-yaml quotes with double quotes

    # Two output-neutral shortcuts for speed (configs repeat long certificates): the emitter's
    # per-character analysis of a scalar is memoised, and a plain scalar that the emitter would
    # not break (no space, no line break) is written in one piece.
    def analyze_scalar(self, scalar: str) -> Any:
        return scalar_analysis(scalar)

    def write_plain(self, text: str, split: bool = True) -> None:
        if not text or self.encoding or _PLAIN_BREAKS.search(text):
            super().write_plain(text, split)
            return
        if self.root_context:
            self.open_ended = True
        if not self.whitespace:
            self.column += 1
            self.stream.write(" ")
        self.whitespace = self.indention = False
        self.column += len(text)
        self.stream.write(text)


_PLAIN_BREAKS = lazyre.compile("[ \n\x85\u2028\u2029]")


@lru_cache(maxsize=8192)
def scalar_analysis(scalar: str) -> Any:
    """PyYAML's analysis of a scalar for an emitter with allow_unicode (memoised: configs repeat long values)."""
    # Emitter.analyze_scalar reads nothing of the emitter but allow_unicode (always on here).
    probe = yaml.emitter.Emitter.__new__(yaml.emitter.Emitter)
    probe.allow_unicode = True
    return yaml.emitter.Emitter.analyze_scalar(probe, scalar)


_TAG_OF_TYPE = {type(None): _NULL, bool: _BOOL, int: _INT, float: _FLOAT, _Timestamp: _TIMESTAMP}


def _plain_tag(text: str) -> str:
    tag = _TAG_OF_TYPE.get(type(_resolve(text)), _STR)
    if tag == _STR and go_quotes(text):
        return _TIMESTAMP  # any tag but !!str: quoted for YAML 1.1 readers or as a merge key
    return tag


def _represent_str(dumper: _Dumper, value: str) -> ScalarNode:
    style = "|" if "\n" in value and not _NO_LITERAL.search(value) else None
    if style is None and "\n" in value:
        style = '"'
    return dumper.represent_scalar(_STR, value, style=style)


def _represent_int(dumper: _Dumper, value: int) -> ScalarNode:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise PipelineError("cannot write an integer outside the signed 64-bit range (sops cannot encrypt it)")
    return dumper.represent_scalar(_INT, str(int(value)))


def _represent_float(dumper: _Dumper, value: float) -> ScalarNode:
    if math.isnan(value):
        text = ".nan"
    elif math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(float(value))  # shortest round trip, always with "." or "e": Go reads a float
    return dumper.represent_scalar(_FLOAT, text)


def _represent_bool(dumper: _Dumper, value: bool) -> ScalarNode:
    return dumper.represent_scalar(_BOOL, "true" if value else "false")


def _represent_none(dumper: _Dumper, value: None) -> ScalarNode:
    return dumper.represent_scalar(_NULL, "null")


def _represent_dict(dumper: _Dumper, value: dict[Any, Any]) -> Node:
    for key in value:
        if not isinstance(key, str):
            raise PipelineError(f"cannot write a mapping key of type {type(key).__name__}: keys must be strings")
        if key == "<<":
            raise PipelineError('cannot write a "<<" key: sops would turn it into a merge key')
    return dumper.represent_mapping(_MAP, value.items())


def _represent_list(dumper: _Dumper, value: list[Any] | tuple[Any, ...]) -> Node:
    return dumper.represent_sequence(_SEQ, value)


def _refuse(dumper: _Dumper, value: Any) -> Node:
    raise TypeError(f"cannot write a {type(value).__name__} as YAML for go-yaml")


_Dumper.yaml_representers = {}
_Dumper.yaml_multi_representers = {}
for _type, _represent in (
    (str, _represent_str),
    (bool, _represent_bool),
    (int, _represent_int),
    (float, _represent_float),
    (type(None), _represent_none),
    (dict, _represent_dict),
    (list, _represent_list),
    (tuple, _represent_list),
):
    _Dumper.add_representer(_type, _represent)
_Dumper.add_multi_representer(str, _represent_str)
_Dumper.add_multi_representer(dict, _represent_dict)
_Dumper.add_representer(None, _refuse)


class _NoAliasDumper(_Dumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value used twice is written twice: no anchors in the output


GoDumper = _NoAliasDumper
"""The PyYAML dumper behind ``dump_documents`` (go-yaml's typing, quoting and layout, no anchors), for
writers that build on PyYAML's emitter (the fragment-memoising dumper of ``baseconfig``)."""


def _path_text(index: int, path: tuple[Any, ...]) -> str:
    text = f"document {index + 1}"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


_BLOCK_INDICATOR_NEEDED = frozenset(" \n\r\x85\u2028\u2029")
_LINE_BREAKS = lazyre.compile("[\n\r\x85\u2028\u2029]")


def _may_be_hazard(document: Any) -> bool:
    """Whether ``document`` has a string with a line break or a key with one (what sops_hazard looks at).

    A quick pre-check: no place is tracked, so a clean document (every node of a healthy fleet) costs
    one pass without building a path per value; sops_hazard then walks a suspect one to name the place.
    """
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and _LINE_BREAKS.search(key):
                    return True
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, str) and "\n" in value:
            return True
    return False


def sops_hazard(documents: Iterable[Any]) -> str | None:
    """Why sops (its go-yaml writer) would corrupt one of these documents' strings, or None.

    Measured with sops 3.11: a multi-line string starting with a tab comes back as null, and one
    starting with a space or a line break is written as a literal block that neither sops nor
    go-yaml can read back when it is a list item or a value of a mapping that is a list item; a
    mapping key with a line break is refused too (sops writes it as a block key, with the same bugs).
    The answer names the place (document and key path), never the value.
    """
    documents = list(documents)
    if not any(_may_be_hazard(document) for document in documents):
        return None  # the usual case: no multi-line string and no key with a line break at all
    for index, document in enumerate(documents):
        # (value, path, whether it is a list item, whether a leading-space literal breaks there)
        stack: list[tuple[Any, tuple[Any, ...], bool, bool]] = [(document, (), False, False)]
        while stack:
            value, path, list_item, fragile = stack.pop()
            if isinstance(value, dict):
                for key in value:
                    if isinstance(key, str) and _LINE_BREAKS.search(key):
                        return f"{_path_text(index, path)}: a mapping key with a line break cannot pass through sops"
                stack.extend((item, (*path, key), False, list_item) for key, item in value.items())
            elif isinstance(value, (list, tuple)):
                stack.extend((item, (*path, position), True, True) for position, item in enumerate(value))
            elif isinstance(value, str) and "\n" in value:
                if value[0] == "\t":
                    return f"{_path_text(index, path)}: sops turns a multi-line string that starts with a tab into null"
                if value[0] in _BLOCK_INDICATOR_NEEDED and fragile:
                    return (
                        f"{_path_text(index, path)}: sops writes a multi-line string that starts with a space or an "
                        "empty line, inside a list, as YAML it cannot read back"
                    )
    return None


def dump_documents(documents: Iterable[Any], *, for_sops: bool = True) -> str:
    """YAML text of ``documents`` that go-yaml v3 (so sops and Talos) reads back to the same values.

    go-yaml's layout (sops's and talosctl's: 4-space steps, sequences indented under their key),
    keys in the given order, ``---`` between documents, no anchors, no line folding.
    Only dict (str keys), list/tuple, str, int (signed 64-bit), float, bool and None are written.
    With ``for_sops`` (the default), a string sops would corrupt is a PipelineError (see
    ``sops_hazard``).
    """
    documents = list(documents)
    if for_sops:
        problem = sops_hazard(documents)
        if problem:
            raise PipelineError(problem)
    return yaml.dump_all(
        documents,
        Dumper=_NoAliasDumper,
        indent=4,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=2**31 - 1,
    )
