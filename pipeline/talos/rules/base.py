"""What every ported rule shares: the finding it returns and the parsers Talos's checks rely on.

Imports only the foundation (``pipeline.lazyre``), so ``talos.schema`` may call the rules without
an import cycle. A finding names the document (index, kind) and the path of the field, never its value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

from pipeline import lazyre

MACHINE_CONFIG = "v1alpha1"
PathKey = str | int
Path = tuple[PathKey, ...]


class RuleFinding(NamedTuple):
    """One broken rule: the document's index and kind, the field's path (a tuple) and the reason."""

    doc_index: int
    kind: str
    path: Path
    reason: str


def kind_of(doc: Any) -> str:
    """The document's kind; the machine config (or a patch of it) has none."""
    if isinstance(doc, dict) and "kind" in doc:
        return str(doc["kind"])
    return MACHINE_CONFIG


def get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def as_dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def is_set(value: Any) -> bool:
    """Go's zero value counts as unset: "", 0, false, empty list/map, null."""
    return value not in (None, "", 0, False, [], {})


def documents_of(documents: Any, kind: str) -> Iterator[tuple[int, dict[Any, Any]]]:
    for index, doc in enumerate(documents):
        if isinstance(doc, dict) and kind_of(doc) == kind:
            yield index, doc


def machine_config(documents: Any) -> tuple[int, dict[Any, Any]] | None:
    return next(documents_of(documents, MACHINE_CONFIG), None)


def parse_ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP as Go's ``net.ParseIP``/``netip.ParseAddr`` reads it: no zone, no leading zeros; else None."""
    if not isinstance(text, str) or "%" in text:
        return None
    return _parse_ip(text)


# Every node of a fleet names the same gateways, resolvers and subnets, and ipaddress's pure-Python
# parsing was most of the rules' time: parsed once per text. The results are immutable, so sharing
# them between callers is safe; the key is the text itself.
@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


_PREFIX_LEN = lazyre.compile(r"[0-9]{1,3}")


def parse_cidr(text: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """``address/bits`` as Go's ``net.ParseCIDR``/``netip.ParsePrefix`` read it (no netmask form); else None."""
    if not isinstance(text, str) or "/" not in text:
        return None
    return _parse_cidr(text)


@lru_cache(maxsize=4096)
def _parse_cidr(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    address, _, bits = text.partition("/")
    ip = parse_ip(address)
    if ip is None or not _PREFIX_LEN.fullmatch(bits) or int(bits) > ip.max_prefixlen:
        return None
    # Built from the parsed address's integer (what the text form would be parsed into again): the same
    # interface, without ipaddress parsing the address a second time.
    interface = ipaddress.IPv4Interface if ip.version == 4 else ipaddress.IPv6Interface
    return interface((int(ip), int(bits)))


def ip_or_cidr_ok(text: Any) -> bool:
    """Talos's "IP or CIDR" fields: a CIDR when there is a slash, else an IP."""
    return parse_cidr(text) is not None if isinstance(text, str) and "/" in text else parse_ip(text) is not None


def subnet_filter_ok(text: Any) -> bool:
    """A subnet filter entry: an IP or CIDR, optionally negated with a leading ``!``."""
    return isinstance(text, str) and ip_or_cidr_ok(text.removeprefix("!"))


_URL = lazyre.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>[^/?#]*)(?P<path>[^?#]*)")


def split_url(text: Any) -> tuple[str, str, str] | None:
    """(scheme, host, path) of an absolute URL, or None when it is not one."""
    if not isinstance(text, str) or any(ch.isspace() for ch in text):
        return None
    match = _URL.match(text)
    if not match:
        return None
    host = match.group("host").rsplit("@", 1)[-1]
    return match.group("scheme").lower(), host, match.group("path")


def endpoint_url_ok(text: Any) -> bool:
    """A manifest/CNI URL: an absolute URL with a scheme and a host."""
    parts = split_url(text)
    return parts is not None and bool(parts[1])


_NAME_CHARS = lazyre.compile(r"[A-Za-z0-9-]*")


def volume_name_chars_ok(name: str) -> bool:
    """Volume names: ASCII letters, digits and hyphens only (they become partition labels)."""
    return bool(_NAME_CHARS.fullmatch(name))


def wireguard_key_ok(key: Any) -> bool:
    """A WireGuard key: standard base64 of exactly 32 bytes."""
    if not isinstance(key, str):
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def duration_negative(text: Any) -> bool:
    """A Go duration string below zero (``-5s``); ``-0s`` is zero."""
    return isinstance(text, str) and text.startswith("-") and bool(re.search(r"[1-9]", text))
