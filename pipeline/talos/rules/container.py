"""Whole-config checks of ``pkg/machinery/config/container/container.go`` (``New``): at most one machine
config, no two documents of one kind and name, and no two documents of conflicting kinds with one name
(``ConflictsWithKinds`` of the link kinds, the VIP kinds and the user/existing volume kinds).
"""

from __future__ import annotations

from typing import Any

from pipeline.talos.rules.base import MACHINE_CONFIG, RuleFinding, kind_of

# Each kind a link kind conflicts with (network/link.go conflictingLinkKinds): one link, one kind.
_LINKS = {"v1.11": (), "v1.12": ("BondConfig", "BridgeConfig", "DummyLinkConfig", "LinkConfig", "VLANConfig",
                                  "WireguardConfig")}
_LINKS["v1.13"] = (*_LINKS["v1.12"], "VRFConfig")
_PAIRS = {"v1.11": (("UserVolumeConfig", "ExistingVolumeConfig"),),
          "v1.12": (("UserVolumeConfig", "ExistingVolumeConfig"), ("Layer2VIPConfig", "HCloudVIPConfig"))}
_PAIRS["v1.13"] = _PAIRS["v1.12"]


def _group(kind: str, version: str) -> str:
    """Kinds that conflict share a group: two documents of one group and one name cannot coexist."""
    if kind in _LINKS[version]:
        return "link"
    for pair in _PAIRS[version]:
        if kind in pair:
            return "/".join(pair)
    return kind


def container_rules(documents: Any, version: str) -> list[RuleFinding]:
    findings: list[RuleFinding] = []
    seen: dict[tuple[str, str], str] = {}
    machine_configs = 0
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            continue
        kind = kind_of(doc)
        if kind == MACHINE_CONFIG:
            machine_configs += 1
            if machine_configs > 1:
                findings.append(RuleFinding(index, kind, (), "duplicate v1alpha1 config document"))
            continue
        if "$patch" in doc:
            continue  # a patch's delete selector (container.go's `selector`), not a document of its own
        name = doc.get("name")
        key = (_group(kind, version), "" if name is None else str(name))
        previous = seen.get(key)
        if previous == kind:
            findings.append(RuleFinding(index, kind, ("name",) if name is not None else (),
                                        f"duplicate document: another {kind} has this name"))
        elif previous is not None:
            findings.append(RuleFinding(index, kind, ("name",) if name is not None else (),
                                        f"conflicting documents: a {previous} has this name"))
        else:
            seen[key] = kind
    return findings
