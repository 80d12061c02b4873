"""The one redaction boundary: no message leaves the pipeline holding a known secret value.

Two tools, used together on every error and report line:

- :func:`redact` replaces every known secret (a :class:`SecretSet`), and simple transforms of it,
  by ``(secret)``. Matching is by 8-character windows ("shingles"), so any substring of 8 or more
  characters of a secret is caught, in any letter case, reversed, base64-encoded (standard or
  URL-safe, at any alignment inside a longer base64 text) or base64-decoded (a PEM inside a base64
  ``crt``/``key`` value). Values shorter than 8 characters are not tracked (too short to tell from
  ordinary text).
- :func:`safe_library_message` rewrites the text of an exception raised by jsonpatch, jsonpointer,
  jinja2, PyYAML, jsonschema or Python itself into one that names paths, operation names and types,
  never the values those libraries like to print (a whole parent mapping, a tested value, the
  offending YAML line, a validated instance).

Known limits: a secret split by a line break or other characters inside the message is redacted
piecewise (each run of 8+ characters), a secret re-encoded in a way not listed above (hex, gzip,
double base64, ROT13...) is not recognised; false redactions are possible (a secret sharing an
8-character run with ordinary words of a message).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pipeline import lazyre

WINDOW = 8
MARK = "(secret)"

# Talos machine-config fields whose values are secret (the names sops encrypts, see
# pipeline.sopsconfig.SENSITIVE_FIELDS), minus `crt`: certificates are public.
SENSITIVE_FIELDS = frozenset((
    "token", "key", "id", "secret", "secretboxEncryptionSecret", "aescbcEncryptionSecret", "bootstraptoken",
    "secretboxencryptionsecret", "aescbcencryptionsecret", "password", "auth", "identityToken", "privateKey",
    "passphrase", "apiToken",
))

_NOT_SECRET = frozenset(("true", "false", "yes", "no", "on", "off", "null", "none", "~"))
_NUMBER = lazyre.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?")
_BASE64 = lazyre.compile(r"[A-Za-z0-9+/\-_\s]+={0,2}\s*")
_PEM_ARMOUR = lazyre.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")
# Case folding and the URL-safe base64 alphabet folded onto the standard one: one index serves all.
_FOLD = str.maketrans({"-": "+", "_": "/"})


def _fold(text: str) -> str:
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: keep positions aligned
        lowered = "".join(char.lower() if len(char.lower()) == 1 else char for char in text)
    return lowered.translate(_FOLD)


def _b64_alignments(data: bytes) -> Iterator[str]:
    """The base64 text of ``data`` as it appears inside any longer base64 text (all 3 alignments)."""
    for skip in range(3):
        part = data[skip:]
        whole = len(part) // 3 * 3
        if whole:
            yield base64.b64encode(part[:whole]).decode("ascii")


def _decoded(value: str) -> str | None:
    """The text a base64 value encodes (a PEM inside a crt/key field), if it is base64 of text."""
    if len(value) < 12 or not _BASE64.fullmatch(value):
        return None
    compact = "".join(value.split()).translate(_FOLD)
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _pieces(text: str) -> Iterator[str]:
    """A value as it may be quoted: whole, and (for PEM or wrapped text) its armour-less lines and body."""
    armoured = bool(_PEM_ARMOUR.search(text))
    if not armoured:
        yield text  # the armour lines of a PEM are not secret: only its body is tracked
    if "\n" in text or armoured:
        body = _PEM_ARMOUR.sub("\n", text)
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        yield from lines
        yield "".join(lines)


def _is_candidate(value: Any) -> bool:
    if not isinstance(value, str):
        return False  # bool, int, float, None: not secrets
    stripped = value.strip()
    return len(stripped) >= WINDOW and stripped.lower() not in _NOT_SECRET and not _NUMBER.fullmatch(stripped)


class SecretSet:
    """Known secret values, indexed for :func:`redact` (every 8-character window of every form).

    The index is rebuilt lazily on the first :func:`redact` after an :meth:`add`; adding is cheap.
    """

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self._values: set[str] = set()
        self._public: set[str] = set()
        self._dirty = True
        self._index: frozenset[str] = frozenset()
        self._either: frozenset[str] = frozenset()
        for value in values:
            self.add(value)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value.strip() in self._values

    def add(self, value: Any) -> None:
        """Track one value (ignored when it cannot be a secret: not text, < 8 characters, a number)."""
        if _is_candidate(value):
            self._values.add(value.strip())
            self._dirty = True

    def update(self, other: SecretSet) -> None:
        """Track every value ``other`` tracks (and know what it knows to be public)."""
        if other._values - self._values or other._public - self._public:
            self._values |= other._values
            self._public |= other._public
            self._dirty = True

    def add_public(self, values: Iterable[Any]) -> None:
        """Values known to be public (certificates...): their 8-character windows never count as secret.

        A PEM key and a PEM certificate share their armour (``LS0tLS1CRUdJTi...`` in base64): without
        this, a certificate quoted anywhere would look like a piece of a key.
        """
        for value in values:
            if isinstance(value, str) and len(value.strip()) >= WINDOW:
                self._public.add(value.strip())
                self._dirty = True

    def values(self) -> frozenset[str]:
        """The tracked values (for a caller that must compare them whole)."""
        return frozenset(self._values)

    def add_documents(self, docs: Iterable[Any], paths_predicate: Callable[[str], bool] | None = None) -> None:
        """Track the values of parsed YAML documents whose dotted path (``a.b[0].c``) the predicate accepts.

        ``paths_predicate=None`` tracks every value (the secrets bundle, a decrypted vars file); use
        :func:`is_sensitive_path` for a machine config. A predicate that accepts a mapping's or list's
        path tracks everything under it.
        """
        for doc in docs:
            for path, value in _leaves(doc, "", paths_predicate):
                if paths_predicate is None or paths_predicate(path) or path.endswith("\0"):
                    self.add(value)
                elif isinstance(value, str) and "Secret" in value and path.endswith(".contents"):
                    self._add_manifest_secrets(value)

    def _add_manifest_secrets(self, text: str) -> None:
        # An inline manifest holding a Kubernetes Secret: its data (and what the base64 decodes to).
        import yaml  # here: most callers never have an inline manifest

        try:
            manifests = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            return
        for manifest in manifests:
            if not isinstance(manifest, dict) or manifest.get("kind") != "Secret":
                continue
            for section in ("data", "stringData"):
                entries = manifest.get(section)
                for value in entries.values() if isinstance(entries, dict) else ():
                    self.add(value)
                    if section == "data" and isinstance(value, str):
                        self.add(_decoded(value))

    def add_age_identity(self, text: str) -> None:
        """Track every `AGE-SECRET-KEY-1...` line of an age identity file's text."""
        for match in re.finditer(r"AGE-SECRET-KEY-1[0-9A-Za-z]+", text):
            self.add(match.group(0))

    # --- the index ------------------------------------------------------------------------------

    def _forms(self) -> Iterator[str]:
        for value in self._values:
            forms = list(_pieces(value))
            decoded = _decoded(value)
            if decoded is not None:
                forms.extend(_pieces(decoded))
            for form in list(forms):
                forms.extend(_b64_alignments(form.encode("utf-8")))
            for form in forms:
                if len(form) >= WINDOW:
                    yield _fold(form)

    def _build(self) -> None:
        index: set[str] = set()
        for form in self._forms():
            index.update(form[start:start + WINDOW] for start in range(len(form) - WINDOW + 1))
        if self._public:
            public = SecretSet(self._public)
            for form in public._forms():
                index.difference_update(form[start:start + WINDOW] for start in range(len(form) - WINDOW + 1))
        self._index = frozenset(index)
        # Forward and reversed windows in one set: "is anything here?" is then one pass over a text.
        self._either = self._index | {window[::-1] for window in self._index}
        self._dirty = False

    def _any_window(self, folded: str) -> bool:
        """Whether some 8-character window of ``folded`` is a window of a secret (forwards or reversed)."""
        if self._dirty:
            self._build()
        if not self._either or len(folded) < WINDOW:
            return False
        return not self._either.isdisjoint(folded[start:start + WINDOW]
                                           for start in range(len(folded) - WINDOW + 1))

    def _covered(self, folded: str) -> list[bool]:
        """Which positions of ``folded`` lie inside a window of a secret (forwards or reversed)."""
        if self._dirty:
            self._build()
        length = len(folded)
        covered = [False] * length
        if not self._index or length < WINDOW:
            return covered
        span = range(length - WINDOW + 1)
        for text, backwards in ((folded, False), (folded[::-1], True)):
            # One C-level set intersection per direction: the common case (no secret) costs no Python loop.
            hits = {text[start:start + WINDOW] for start in span} & self._index
            for hit in hits:
                start = text.find(hit)
                while start >= 0:
                    first = length - start - WINDOW if backwards else start
                    covered[first:first + WINDOW] = [True] * WINDOW
                    start = text.find(hit, start + 1)
        return covered


def _leaves(value: Any, path: str, predicate: Callable[[str], bool] | None) -> Iterator[tuple[str, Any]]:
    # A container whose own path is sensitive has every leaf tracked: "\0" marks them.
    if predicate is not None and path and predicate(path) and isinstance(value, (dict, list)):
        for _, leaf in _leaves(value, path, None):
            yield path + "\0", leaf
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key), predicate)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]", predicate)
    else:
        yield path, value


def is_sensitive_path(path: str) -> bool:
    """Whether a dotted machine-config path names a secret.

    Its last key is a sensitive field name, or it is an ``environment`` entry (ExtensionServiceConfig
    values are credentials by default). An inline manifest's Kubernetes Secret is found by
    :meth:`SecretSet.add_documents` itself.
    """
    if re.fullmatch(r"(.*\.)?environment\[\d+\]", path):
        return True
    last = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
    return last in SENSITIVE_FIELDS


def contains_secret(text: str, secrets: SecretSet) -> bool:
    """Whether ``text`` holds a known secret, a piece of 8+ characters of one, or a transform of one."""
    return bool(text) and len(secrets) > 0 and secrets._any_window(_fold(text))


def redact(text: str, secrets: SecretSet) -> str:
    """``text`` with every run covered by a known secret (or a transform of one) replaced by ``(secret)``."""
    if not text or not len(secrets):
        return text
    covered = secrets._covered(_fold(text))
    if not any(covered):
        return text
    out: list[str] = []
    index, length = 0, len(text)
    while index < length:
        if covered[index]:
            while index < length and covered[index]:
                index += 1
            out.append(MARK)
        else:
            start = index
            while index < length and not covered[index]:
                index += 1
            out.append(text[start:index])
    return "".join(out)


# --- library exception texts --------------------------------------------------------------------

# Quoted words a message may keep: Python and jinja2 type names, never data.
_TYPE_NAMES = frozenset((
    "str", "int", "float", "bool", "bytes", "list", "dict", "tuple", "set", "NoneType", "object", "none",
    "dict object", "list object", "str object", "int object", "float object", "bool object", "tuple object",
    "NoneType object", "Undefined", "StrictUndefined", "function", "method", "builtin_function_or_method",
))
_QUOTED = lazyre.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_CONTAINER_REPR = lazyre.compile(r"[{\[].*[}\]]", re.DOTALL)
_LONG_RUN = lazyre.compile(r"[A-Za-z0-9+=_\-]{20,}")
_MARKER = lazyre.compile(r"<[a-z ]+>")  # PyYAML's '<stream end>', '<document start>'...
_IDENTIFIER = lazyre.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _scrub(text: str, keep_identifiers: bool = False) -> str:
    """Best effort for texts from unknown sources: no quoted data, container reprs or long tokens."""
    def quoted(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1]
        if len(inner) <= 3 or inner in _TYPE_NAMES or _MARKER.fullmatch(inner) or (
                keep_identifiers and _IDENTIFIER.fullmatch(inner)):
            return match.group(0)
        return "'...'"

    text = _CONTAINER_REPR.sub("{...}", text)
    text = _QUOTED.sub(quoted, text)
    text = _LONG_RUN.sub(lambda match: match.group(0) if match.group(0).isalpha() else "...", text)
    return " ".join(text.split())


def _op_fields(op: Any) -> dict[str, Any]:
    operation = getattr(op, "operation", op)
    return operation if isinstance(operation, Mapping) else {}


def _describe_op(op: Any) -> str:
    fields = _op_fields(op)
    parts = []
    if isinstance(fields.get("op"), str):
        parts.append(f"op {fields['op']!r}" if _IDENTIFIER.fullmatch(fields["op"]) else "op (not a known name)")
    for name in ("path", "from"):
        if isinstance(fields.get(name), str):
            parts.append(f"{name} {fields[name]}")
    return ", ".join(parts)


def _pointer_message(text: str) -> str:
    member = re.match(r"member '(.*?)' not found", text, re.DOTALL)
    if member:
        return f"member {member.group(1)!r} not found"
    index = re.match(r"index '(.*?)' is out of bounds", text)
    if index:
        return f"index {index.group(1)!r} is out of bounds"
    token = re.match(r"Cannot apply token '(.*?)' to non-container type (<class '\w+'>)", text)
    if token:
        return f"cannot apply token {token.group(1)!r} to a non-container ({token.group(2)})"
    for fixed in ("Location must start with /", "Cannot set root in place", "Cannot set value in a string",
                  "Invalid suffix", "is not a valid sequence index"):
        if fixed in text:
            return _scrub(text, keep_identifiers=True)
    return "invalid JSON pointer"


def _jsonpatch_message(error: BaseException, op: Any) -> str:
    name = type(error).__name__
    text = str(error)
    where = _describe_op(op if op is not None else getattr(error, "op", None))
    if name == "JsonPatchTestFailed":
        body = "test failed: the value at path differs from the tested value"
        if "not found" in text or "out of bounds" in text:
            body = "test failed: " + _pointer_message(text)
    elif missing := re.match(r"can't (remove|replace) a non-existent object '(.*)'$", text, re.DOTALL):
        body = f"cannot {missing.group(1)} a non-existent member {missing.group(2)!r}"
    elif text.startswith(("member '", "index '", "Cannot apply token")):
        body = _pointer_message(text)
    elif text.startswith("unable to fully resolve json pointer"):
        body = "unable to resolve the path"
    elif text.startswith("Unknown operation"):
        body = "unknown operation"
    else:
        body = _scrub(text, keep_identifiers=True)
    return f"{name}: {body}" + (f" ({where})" if where else "")


def _yaml_message(error: BaseException) -> str:
    parts = []
    for name in ("context", "problem"):
        value = getattr(error, name, None)
        if isinstance(value, str) and value:
            parts.append(_scrub(value, keep_identifiers=True))
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"YAML error: {'; '.join(parts) or type(error).__name__}{where}"


def _schema_message(error: Any) -> str:
    path = "/" + "/".join(str(part) for part in getattr(error, "absolute_path", ()) or ())
    keyword = getattr(error, "validator", None)
    expected = getattr(error, "validator_value", None)
    instance = getattr(error, "instance", None)
    kind = type(instance).__name__
    if keyword == "required" and isinstance(instance, Mapping) and isinstance(expected, list):
        detail = "missing " + ", ".join(repr(name) for name in expected if name not in instance)
    elif keyword == "additionalProperties" and isinstance(instance, Mapping):
        detail = "unexpected properties"
        if isinstance(error.schema, Mapping) and isinstance(error.schema.get("properties"), Mapping):
            extra = [key for key in instance if key not in error.schema["properties"]]
            detail += " " + ", ".join(repr(str(key)) for key in extra)
    elif keyword == "type":
        detail = f"a {kind}, expected {expected}"
    elif keyword == "enum" and isinstance(expected, list):
        detail = f"a {kind} not among the {len(expected)} allowed values"
    else:
        detail = f"a {kind} fails {keyword!r}"
    return f"validation error at {path}: {detail}"


def _jinja_message(error: BaseException) -> str:
    name = type(error).__name__
    message = getattr(error, "message", None) or str(error)
    return f"{name}: {_scrub(message, keep_identifiers=True)}"


def _python_message(error: BaseException) -> str:
    name = type(error).__name__
    if isinstance(error, KeyError):
        key = error.args[0] if error.args else None
        return f"{name}: missing key" + (f" {key!r}" if isinstance(key, str) and _IDENTIFIER.fullmatch(key) else "")
    text = str(error)
    literal = re.match(r"(invalid literal for \w+\(\) with base \d+|could not convert string to \w+)", text)
    if literal:
        return f"{name}: {literal.group(1)}"
    return f"{name}: {_scrub(text)}" if text else name


def safe_library_message(error: BaseException, op: Any = None, secrets: SecretSet | None = None) -> str:
    """One line describing ``error`` by paths, op names and types, never by the values it printed.

    ``op``: the JSON 6902 operation being applied (its ``op``, ``path`` and ``from`` are named,
    never its ``value``), when the exception does not carry it. ``secrets``: also redact the result
    (names copied from a path could still spell a secret).
    """
    module = type(error).__module__.split(".")[0]
    if module == "jsonpatch":
        text = _jsonpatch_message(error, op)
    elif module == "jsonpointer":
        where = _describe_op(op)
        text = f"{type(error).__name__}: {_pointer_message(str(error))}" + (f" ({where})" if where else "")
    elif module == "yaml":
        text = _yaml_message(error)
    elif module == "jsonschema" and hasattr(error, "validator"):
        text = _schema_message(error)
    elif module == "jinja2":
        text = _jinja_message(error)
    else:
        text = _python_message(error)
    text = " ".join(text.split())
    return redact(text, secrets) if secrets is not None else text
