"""Keyless scan of any file's bytes for secrets, whatever its name, suffix, encoding or parse state.

:func:`scan_bytes` decodes the bytes (UTF-8, UTF-16 or UTF-32 in either byte order, with or without
a BOM, else latin-1; binary data is searched byte-wise) and reports, one line per finding and
never the value:

- ``private-key``: a PEM private key (armour followed by a base64 body), or the base64 text of one
  (what Talos stores in ``key:`` fields); also a long base64 text that decodes to text holding any
  finding below (``in base64 text``).
- ``age-key``: an age identity, ``AGE-SECRET-KEY-1...``.
- ``token``: a Talos/kubeadm token shape (``abcdef.0123456789abcdef``) as the value of a key whose
  name holds "token".
- ``talos-field``: a sensitive Talos field with a value that is not ``ENC[...]``, found line by line
  with an indentation-tracked path (so a YAML file that does not parse is still judged):
  ``secret``, ``token``, ``bootstraptoken``, ``secretboxEncryptionSecret``, ``aescbcEncryptionSecret``,
  ``password``, ``passphrase``, ``privateKey``, ``identityToken``, ``apiToken`` anywhere; ``key`` under
  a CA (``ca``, ``aggregatorCA``, ``serviceAccount``), under ``certs.<name>`` or ``contexts.<name>``;
  ``id`` at ``cluster.id``; ``auth`` under ``auth``. A JSON 6902 op (``path:`` then ``value:`` in one
  list item) is judged at the path it writes.
- ``extension-env``: a plaintext ``environment:`` entry (``NAME=value``) of an ExtensionServiceConfig whose
  value has 8 or more characters or whose name holds KEY, TOKEN, SECRET, PASS, AUTH, CRED or PRIVATE.
- ``k8s-secret``: a Kubernetes ``kind: Secret`` with plaintext ``data:``/``stringData:`` entries, as a
  document or inside a block scalar (``cluster.inlineManifests[].contents``).

Jinja comments ``{# ... #}`` and YAML ``#`` comment blocks are scanned like the rest. Not a finding:
``ENC[...]`` values, empty and null values, template references (``{{ ... }}``, ``${...}``), obvious
placeholders (``...``, ``<...>``), certificates (``crt``, ``-----BEGIN CERTIFICATE-----``), and, for a
field name, a value shorter than 8 characters (the redaction threshold) or one shaped like source
code (a call or subscript: ``_b64(x)``, ``bundle["secret"]``), so Python sources do not trip it.

Flow mappings and one-line JSON objects are judged by the always-sensitive names (``secret``,
``password``...) and, for a JSON 6902 op (``{"op": ..., "path": ..., "value": ...}``), by the path it writes.

Known limits: a flow mapping spread over several lines, or nested inside another on one line, is
judged only by the pattern searches (private keys, age keys, tokens); a secret under an unknown
field name is not found; compressed or encrypted-with-another-tool content is opaque; base64 is
decoded one level deep.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from pipeline import lazyre

# --- decoding -----------------------------------------------------------------------------------

_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
)
_SAMPLE = 4096


def _nul_layout(data: bytes) -> str | None:
    """The UTF-16/32 flavour whose NUL pattern the bytes show (mostly-ASCII text), if any."""
    sample = data[:_SAMPLE]
    sample = sample[:len(sample) // 4 * 4]
    if not sample:
        return None
    counts = [sample[offset::4].count(0) for offset in range(4)]
    quads = len(sample) // 4

    def mostly(count: int) -> bool:
        return count >= 0.6 * quads

    def rarely(count: int) -> bool:
        return count <= 0.2 * quads

    if rarely(counts[0]) and all(mostly(count) for count in counts[1:]):
        return "utf-32-le"
    if all(mostly(count) for count in counts[:3]) and rarely(counts[3]):
        return "utf-32-be"
    if rarely(counts[0]) and rarely(counts[2]) and mostly(counts[1]) and mostly(counts[3]):
        return "utf-16-le"
    if mostly(counts[0]) and mostly(counts[2]) and rarely(counts[1]) and rarely(counts[3]):
        return "utf-16-be"
    return None


def _mostly_printable(text: str) -> bool:
    sample = text[:_SAMPLE]
    return sum(char.isprintable() or char in "\n\r\t" for char in sample) >= 0.95 * len(sample)


def decode(data: bytes) -> tuple[str | None, str]:
    """``(text, encoding)``, or ``(None, "binary")`` for bytes with NULs no UTF-16/32 reading explains."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if b"\0" in data:
        layout = _nul_layout(data)
        if layout is not None:
            try:
                text = data.decode(layout)
            except UnicodeDecodeError:
                text = ""
            if text and _mostly_printable(text):
                return text, layout
        return None, "binary"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


# --- patterns -----------------------------------------------------------------------------------

_PEM_PRIVATE = lazyre.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:\s|\\[nr])*(?:[A-Za-z-]+: [^\n]*(?:\s|\\[nr])+)*"
    r"[A-Za-z0-9+/=]{16}")
_B64_PEM = lazyre.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/]{40,}={0,2}")
_PEM_HEADER = lazyre.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_AGE = lazyre.compile(r"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}", re.IGNORECASE)
_TOKEN = lazyre.compile(
    r"(?i)(?:(?<![\w-])[\w-]{0,40}token[\w-]{0,40}[\"']?[ \t]*[:=]|--[\w-]*token[ =])[ \t]*[\"']?"
    r"([a-z0-9]{6}\.[a-z0-9]{16})(?![a-z0-9.])")
_LONG_B64 = lazyre.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{80,}={0,2}")
_BIN_PATTERNS = (
    (lazyre.compile(_PEM_PRIVATE.pattern.encode()), "PEM private key", "private-key"),
    (lazyre.compile(rb"LS0tLS1CRUdJTi[A-Za-z0-9+/]{40,}"), "base64 of a PEM private key", "private-key"),
    (lazyre.compile(_AGE.pattern.encode(), re.IGNORECASE), "age private key (AGE-SECRET-KEY-1...)", "age-key"),
)

# Field names: anywhere; and those judged only at some paths.
_SECRET_NAMES = frozenset((
    "secret", "token", "bootstraptoken", "secretboxEncryptionSecret", "aescbcEncryptionSecret",
    "secretboxencryptionsecret", "aescbcencryptionsecret", "password", "passphrase", "privateKey",
    "identityToken", "apiToken",
))
_CA_HOLDERS = frozenset(("ca", "aggregatorCA", "serviceAccount", "acceptedCA"))
_KEY_LINE = lazyre.compile(
    r"(?P<dash>(?:-[ \t]+)*)(?P<key>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'#{}\[\],:&*!|>%@`-][^:#\n]*?|-[^\s:#\n][^:#\n]*?)"
    r"[ \t]*:(?:[ \t]+(?P<value>.*?))?[ \t]*$")
_DASH_ONLY = lazyre.compile(r"(?P<dash>(?:-[ \t]+)+|-$)(?P<rest>.*)$")
_BLOCK = lazyre.compile(r"[|>][0-9+-]*(?:[ \t]+#.*)?")
_PLACEHOLDER = lazyre.compile(
    r"(?:\.\.\.|…|x{3,}|\*{3,}|<[^<>]*>|\(secret\)|redacted|changeme|age1\S*|[A-Z_]*REDACTED[A-Z_]*)", re.IGNORECASE)
_ENC = lazyre.compile(r"ENC\[[A-Z0-9_]+,data:")
_NULLS = frozenset(("", "~", "null", "Null", "NULL", '""', "''", "[]", "{}", "true", "false", "True", "False"))
_ENV_ENTRY = lazyre.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
_MIN_SECRET = 8
_TOKEN_SHAPE = lazyre.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
# Source code, not a value: a call or a subscript (`_b64(x)`, `s["k"]`, `a.b(c)`).
_CODE = lazyre.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\s*[(\[].*")
# An environment value is judged when it is long enough to be a credential, or its name says it is one.
_ENV_MIN = 8
_SECRET_ENV_NAME = lazyre.compile(r"KEY|TOKEN|SECRET|PASS|AUTH|CRED|PRIVATE", re.IGNORECASE)
# A sensitive name inside a flow mapping or JSON object ("{" or "," before it on its line).
_INLINE_PAIR = lazyre.compile(
    r"[{,][ \t]*[\"']?(?P<name>" + "|".join(sorted(_SECRET_NAMES)) + r")[\"']?[ \t]*:[ \t]*"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^,}\s][^,}\n]*)")
_FLAT_OBJECT = lazyre.compile(r"\{[^{}]*\}")
_JSON_PATH = lazyre.compile(r"[\"']?path[\"']?[ \t]*:[ \t]*[\"']?(/[^\"',}\s]*)")
_JSON_VALUE = lazyre.compile(r"[\"']?value[\"']?[ \t]*:[ \t]*(\"[^\"]*\"|'[^']*'|[^,}\s][^,}]*)")
_JINJA_COMMENT = lazyre.compile(r"\{#(.*?)#\}", re.DOTALL)
_ANY_SECRET_NAMES = sorted(_SECRET_NAMES | {"key", "id", "auth", "environment", "data", "stringData"})
_ANY_SECRET_KEY = lazyre.compile(r"[\"']?\b(" + "|".join(_ANY_SECRET_NAMES) + r")\b[\"']?[ \t]*:")


@dataclass
class _Findings:
    """Findings by line: the first (most specific) per line wins."""

    by_line: dict[int, str] = field(default_factory=dict)

    def add(self, line: int, what: str, kind: str) -> None:
        self.by_line.setdefault(line, f"{what} ({kind})")


@lru_cache(maxsize=4)
def _line_starts(text: str) -> list[int]:
    return [0, *(match.end() for match in re.finditer("\n", text))]


def _line_of(text: str, offset: int) -> int:
    return bisect_right(_line_starts(text), offset)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if value[:1] not in "\"'":
        value = re.sub(r"[ \t]+#.*$", "", value)  # a trailing comment
    return value.rstrip(",").strip()


def _is_literal(value: str) -> bool:
    """Whether a scalar is a literal value: not empty, ENC[...], a reference or a placeholder."""
    value = _unquote(value)
    if value in _NULLS or _ENC.match(value) or _PLACEHOLDER.fullmatch(value):
        return False
    if value.startswith(("{", "[")):
        return False  # a flow collection or a JSON object opener: its scalars are judged on their own lines
    if "{{" in value or "{%" in value or value.startswith(("${", "$(", "*", "&", "!!binary ENC[")):
        return False
    return not re.fullmatch(r"\$[A-Za-z_]\w*", value)


def _is_plain_secret(value: str) -> bool:
    """Whether a scalar after a sensitive key is a value to refuse: a literal of 8+ characters, not code."""
    if not _is_literal(value):
        return False
    text = _unquote(value).rstrip(")];},").strip("\"'")
    if len(text) < _MIN_SECRET:
        return False  # too short to be a secret (the redaction threshold too); also annotations (`secret: str`)
    return _TOKEN_SHAPE.fullmatch(text) is not None or not _CODE.fullmatch(text)


# --- structure, line by line --------------------------------------------------------------------


@dataclass
class _Entry:
    column: int
    name: str
    item: bool = False
    pointer: str | None = None  # a JSON 6902 op's path, on its list item


def _path(stack: list[_Entry]) -> list[str]:
    parts: list[str] = []
    for entry in stack:
        if entry.item:
            if parts:
                parts[-1] += "[]"
            else:
                parts.append("[]")
        else:
            parts.extend(entry.name.split("\0"))
    return parts


def _sensitive(parts: list[str]) -> str | None:
    """The dotted path when ``parts`` (the keys down to a scalar) names a Talos secret field."""
    names = [part.removesuffix("[]") for part in parts]
    if not names:
        return None
    last = names[-1]
    dotted = ".".join(parts)
    if last in _SECRET_NAMES:
        return dotted
    parent = names[-2] if len(names) >= 2 else ""
    grand = names[-3] if len(names) >= 3 else ""
    if last == "key" and (parent in _CA_HOLDERS or grand in ("certs", "contexts")):
        return dotted
    if last == "id" and names == ["cluster", "id"]:
        return dotted
    if last == "auth" and parent == "auth":
        return dotted
    return None


@dataclass
class _Document:
    kind: str = ""
    env_lines: list[tuple[int, str]] = field(default_factory=list)
    data_lines: list[tuple[int, str]] = field(default_factory=list)


def _scan_structure(lines: list[str], first_line: int, out: _Findings, where: str, depth: int) -> None:
    """Judge ``lines`` (YAML-ish, need not parse) by keys and indentation; ``first_line`` numbers them."""
    stack: list[_Entry] = []
    docs = [_Document()]
    index = 0
    while index < len(lines):
        raw = lines[index].rstrip("\r")
        number = first_line + index
        index += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw.startswith(("---", "...")) and raw[3:4] in ("", " ", "\t"):
            stack, docs = [], [*docs, _Document()]
            continue
        column = len(raw) - len(raw.lstrip(" \t"))
        body = raw[column:]
        dashes = _DASH_ONLY.match(body)
        if dashes:
            # One or more "- " list markers: each opens an item at its column.
            for offset, char in enumerate(dashes.group("dash")):
                if char == "-":
                    item_column = column + offset
                    while stack and (stack[-1].column > item_column or (stack[-1].column == item_column
                                                                        and stack[-1].item)):
                        stack.pop()
                    stack.append(_Entry(item_column, "[]", item=True))
            column += len(dashes.group("dash"))
            body = dashes.group("rest")
            if not body.strip():
                continue
        match = _KEY_LINE.fullmatch(body)
        if not match:
            if stack and stack[-1].item:
                _scalar_item(stack, body, number, docs[-1])
            continue
        key = match.group("key").strip().strip("\"'")
        value = match.group("value") or ""
        while stack and stack[-1].column >= column and not (stack[-1].item and stack[-1].column < column):
            stack.pop()
        item = stack[-1] if stack and stack[-1].item else None
        if key == "path" and item is not None and _unquote(value).startswith("/"):
            item.pointer = _unquote(value)
        name = key
        if key == "value" and item is not None and item.pointer is not None:
            name = "\0".join(part for part in item.pointer.split("/") if part) or key
        stack.append(_Entry(column, name))
        parts = _path(stack)
        doc = docs[-1]
        if len(parts) == 1 and key == "kind":
            doc.kind = _unquote(value)
        block: list[str] | None = None
        if _BLOCK.fullmatch(value.strip()):
            block, index = _take_block(lines, index, column)
        text = "\n".join(block) if block is not None else _unquote(value)
        if block is None and value.strip()[:1] == '"' and "\\n" in value:
            text = _unquote(value).replace("\\n", "\n")
            block = text.split("\n")
        if block is not None:
            secret = literal = any(line.strip() for line in block)
        else:
            literal, secret = _is_literal(value), _is_plain_secret(value)
        dotted = _sensitive(parts) if secret else None
        if dotted is not None:
            out.add(number, f"sensitive field {dotted.replace(chr(0), '.')} is plaintext{where}", "talos-field")
        if literal and len(parts) == 2 and parts[0] in ("data", "stringData"):
            doc.data_lines.append((number, parts[1]))
        if block is not None and depth < 2 and any(":" in line for line in block):
            _scan_structure(_dedent(block), number + 1, out,
                            where or f" (inside the text of {'.'.join(parts).replace(chr(0), '.')})", depth + 1)
    for doc in docs:
        if doc.kind == "ExtensionServiceConfig":
            for number, name in doc.env_lines:
                out.add(number, f"ExtensionServiceConfig environment value {name} is plaintext{where}",
                        "extension-env")
        if doc.kind == "Secret":
            for number, name in doc.data_lines:
                out.add(number, f"Kubernetes Secret entry {name} is plaintext{where}", "k8s-secret")


def _scalar_item(stack: list[_Entry], body: str, number: int, doc: _Document) -> None:
    # A scalar list item: an `environment:` entry (NAME=value) is judged when the document is known.
    parts = _path(stack)
    if len(parts) >= 1 and parts[-1] == "environment[]":
        entry = _ENV_ENTRY.match(_unquote(body))
        if entry and _is_literal(entry.group("value")) and (
                len(entry.group("value")) >= _ENV_MIN or _SECRET_ENV_NAME.search(entry.group("name"))):
            doc.env_lines.append((number, entry.group("name")))


def _take_block(lines: list[str], index: int, column: int) -> tuple[list[str], int]:
    """The lines of a block scalar after its key at ``column``: more indented, or blank."""
    block = []
    while index < len(lines):
        raw = lines[index].rstrip("\r")
        if raw.strip() and len(raw) - len(raw.lstrip(" \t")) <= column:
            break
        block.append(raw)
        index += 1
    while block and not block[-1].strip():
        block.pop()
    return block, index


def _dedent(block: list[str]) -> list[str]:
    widths = [len(line) - len(line.lstrip(" \t")) for line in block if line.strip()]
    cut = min(widths, default=0)
    return [line[cut:] for line in block]


# --- comments -----------------------------------------------------------------------------------


def _comment_blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Runs of `#` comment lines, their markers removed (commented-out YAML keeps its indentation)."""
    run: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.lstrip(" \t")
        if stripped.startswith("#") and not stripped.startswith("#}"):
            if not run:
                start = number
            text = stripped[1:]
            run.append(text[1:] if text.startswith(" ") else text)
            continue
        if run:
            yield start, run
            run = []
    if run:
        yield start, run


# --- the scan -----------------------------------------------------------------------------------


def _scan_patterns(text: str, out: _Findings, where: str) -> None:
    for match in _PEM_PRIVATE.finditer(text):
        out.add(_line_of(text, match.start()), f"PEM private key{where}", "private-key")
    for match in _B64_PEM.finditer(text):
        head = match.group(0)[:88]
        head = head[:len(head) // 4 * 4]
        try:
            decoded = base64.b64decode(head).decode("latin-1")
        except (binascii.Error, ValueError):
            continue
        if _PEM_HEADER.search(decoded):
            out.add(_line_of(text, match.start()), f"base64 of a PEM private key{where}", "private-key")
    for match in _AGE.finditer(text):
        out.add(_line_of(text, match.start()), f"age private key (AGE-SECRET-KEY-1...){where}", "age-key")
    for match in _TOKEN.finditer(text):
        out.add(_line_of(text, match.start(1)), f"token-shaped value of a token key{where}", "token")


def _scan_inline(text: str, out: _Findings, where: str) -> None:
    """Flow mappings and JSON objects on one line: `{password: x}`, `{"op": "add", "path": ..., "value": ...}`."""
    for match in _INLINE_PAIR.finditer(text):
        if _is_plain_secret(match.group("value")):
            out.add(_line_of(text, match.start()), f"sensitive field {match.group('name')} is plaintext{where}",
                    "talos-field")
    for chunk in _FLAT_OBJECT.finditer(text):
        pointer = _JSON_PATH.search(chunk.group(0))
        value = _JSON_VALUE.search(chunk.group(0))
        if pointer and value and _is_plain_secret(value.group(1)):
            parts = [part for part in pointer.group(1).split("/") if part]
            shape = [re.sub(r"^(\d+|-)$", "[]", part) for part in parts]
            merged: list[str] = []
            for part in shape:
                if part == "[]" and merged:
                    merged[-1] += "[]"
                else:
                    merged.append(part)
            dotted = _sensitive(merged)
            if dotted is not None:
                out.add(_line_of(text, chunk.start() + value.start()), f"sensitive field {dotted} is plaintext{where}",
                        "talos-field")


def _scan_text(text: str, out: _Findings, where: str = "", depth: int = 0) -> None:
    # Jinja comments first, on their own (their text is not part of the YAML around them).
    for match in _JINJA_COMMENT.finditer(text):
        first = _line_of(text, match.start())
        nested = _Findings()
        _scan_text(match.group(1), nested, where or " (in a jinja comment)", depth + 1)
        for line, finding in nested.by_line.items():
            out.by_line.setdefault(first + line - 1, finding)
    if "{#" in text:
        text = _JINJA_COMMENT.sub(lambda match: "{#" + re.sub(r"[^\n]", " ", match.group(1)) + "#}", text)
    _scan_patterns(text, out, where)
    _scan_inline(text, out, where)
    lines = text.split("\n")
    _scan_structure(lines, 1, out, where, depth)
    for start, block in _comment_blocks(lines):
        _scan_structure(block, start, out, where or " (in a comment)", depth + 1)
    if depth == 0:
        for match in _LONG_B64.finditer(text):
            _scan_base64(match.group(0), _line_of(text, match.start()), out)


def _scan_base64(run: str, line: int, out: _Findings) -> None:
    # One level of base64: a whole config or key file hidden as base64 text.
    try:
        decoded = base64.b64decode(run + "=" * (-len(run) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return
    if not decoded.isprintable() and sum(char.isprintable() or char in "\n\r\t" for char in decoded) < len(decoded):
        return
    nested = _Findings()
    _scan_text(decoded, nested, "", depth=1)
    for finding in nested.by_line.values():
        what, _, kind = finding.rpartition(" (")
        out.add(line, f"{what} in base64 text", kind.rstrip(")"))
        break


def _scan_binary(data: bytes, out: _Findings) -> None:
    for haystack in (data, data.replace(b"\0", b"")):
        for pattern, what, kind in _BIN_PATTERNS:
            for match in pattern.finditer(haystack):
                if kind == "private-key" and match.group(0).startswith(b"LS0t"):
                    head = match.group(0)[:88]
                    try:
                        decoded = base64.b64decode(head[:len(head) // 4 * 4]).decode("latin-1")
                    except (binascii.Error, ValueError):
                        continue
                    if not _PEM_HEADER.search(decoded):
                        continue
                out.add(haystack.count(b"\n", 0, match.start()) + 1, f"{what} in binary data", kind)


def scan_patterns(text: str, path: str) -> list[str]:
    """Only the pattern searches (private keys, age keys, tokens) of :func:`scan_bytes`, on decoded text.

    For machine-written files whose structure is known (the ledger): a fraction of the cost of a full scan.
    """
    out = _Findings()
    _scan_patterns(text, out, "")
    return [f"{path}:{line}: {finding}" for line, finding in sorted(out.by_line.items())]


def names_a_secret_field(text: str) -> bool:
    """Whether ``text`` spells, as a mapping key, any field name the structure scan judges."""
    return _ANY_SECRET_KEY.search(text) is not None


# Every finding needs one of these in the text (a pattern's fixed part, a judged field name before a
# colon, a JSON 6902 path, a long base64 run, an escape): a text without any is clean, unscanned.
_HINT = lazyre.compile(
    r"(?i)private key|ls0tls1crudjti|age-secret-key|token|secret|passw|passphrase|privatekey|environment|path"
    r"|\\u|\b(?:key|id|auth|data|stringdata)\b[\"']?[ \t]*:|[A-Za-z0-9+/]{80}")


def scan_bytes(data: bytes, path: str) -> list[str]:
    """Every finding in one file's bytes, as ``path:line: what was found (kind)``, in line order."""
    text, encoding = decode(data)
    if text is not None and not _HINT.search(text):
        return []  # most files of a fleet (hostname and address patches) name nothing a finding needs
    out = _Findings()
    if text is None:
        _scan_binary(data, out)
    else:
        _scan_text(text, out, "" if encoding in ("utf-8", "latin-1") else f" ({encoding})")
    return [f"{path}:{line}: {finding}" for line, finding in sorted(out.by_line.items())]
