"""Talos version contracts: which generated-config shape a `talosVersion` asks for."""

from __future__ import annotations

import re

from pipeline.errors import PipelineError

#: Version contracts this generator knows how to reproduce, oldest first.
SUPPORTED_CONTRACTS: tuple[str, ...] = ("v1.11", "v1.12", "v1.13")

_VERSION_PATTERN = re.compile(r"^v(\d+)\.(\d+)($|\.)")


def contract(talos_version: str) -> str:
    """The version contract ("v1.11") of a Talos version ("v1.11.5", "1.11", "v1.11.0-beta.1").

    Raises PipelineError for an unparsable version or a contract this generator does not support.
    """
    # Same rule as Talos's ParseContractFromVersion: "v" optional, major.minor then end or a dot.
    text = str(talos_version).strip()
    match = _VERSION_PATTERN.match("v" + text.removeprefix("v"))
    if match is None:
        raise PipelineError(
            f"cannot parse Talos version {talos_version!r}: expected vMAJOR.MINOR[.PATCH], "
            f"one of the supported contracts {', '.join(SUPPORTED_CONTRACTS)}"
        )
    found = f"v{int(match.group(1))}.{int(match.group(2))}"
    if found not in SUPPORTED_CONTRACTS:
        raise PipelineError(
            f"unsupported Talos version {talos_version!r} (contract {found}): "
            f"supported contracts are {', '.join(SUPPORTED_CONTRACTS)}"
        )
    return found
