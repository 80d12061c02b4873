"""Rules of the volume documents, ported from ``pkg/machinery/config/types/block/*.go`` (VolumeConfig,
UserVolumeConfig, RawVolumeConfig, SwapVolumeConfig, ExistingVolumeConfig ``Validate``; ``ProvisioningSpec``,
``FilesystemSpec`` and ``EncryptionSpec`` (encryption.go) ``Validate``; ``VolumeConfig.V1Alpha1ConflictValidate``)
at v1.11.6, v1.12.11 and v1.13.9. Each version's differences are noted where they apply.
"""

from __future__ import annotations

from typing import Any

from pipeline import lazyre
from pipeline.talos.rules.base import (
    Path,
    RuleFinding,
    as_dict,
    as_list,
    documents_of,
    get,
    is_set,
    machine_config,
    volume_name_chars_ok,
)

# Partition labels hold 36 characters; Talos prefixes user/raw/swap volumes with two ("u-", "r-", "s-").
_MAX_NAME = 36 - 2
_SYSTEM_VOLUMES = ("STATE", "EPHEMERAL", "IMAGECACHE")

# go-humanize ParseBytes: SI ("k", "kb") and IEC ("ki", "kib") units; no unit means bytes.
_UNITS = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    _UNITS.update({_letter: 1000**_power, f"{_letter}b": 1000**_power,
                   f"{_letter}i": 1024**_power, f"{_letter}ib": 1024**_power})
_SIZE = lazyre.compile(r"([0-9][0-9,]*(?:\.[0-9]*)?)\s*([a-zA-Z]*)")


def _bytes(value: Any) -> float | None:
    """An absolute size in bytes, or None (unset, a percentage, negative or unreadable: not compared)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    match = _SIZE.fullmatch(value.strip())
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return float(match.group(1).replace(",", "")) * _UNITS[match.group(2).lower()]


def _provisioning(doc: dict[Any, Any], version: str, required: bool, sizes: bool, add: Any) -> None:
    """Disk selector presence and min/max sizes (ProvisioningSpec.Validate)."""
    spec = as_dict(doc.get("provisioning"))
    at: Path = ("provisioning",)
    if required and not is_set(get(spec, "diskSelector", "match")):
        add((*at, "diskSelector"), "disk selector is required")
    low, high = spec.get("minSize"), spec.get("maxSize")
    if version == "v1.11" or sizes:
        if is_set(low) and is_set(high):
            low_b, high_b = _bytes(low), _bytes(high)
            if low_b is not None and high_b is not None and low_b > high_b:
                add((*at, "minSize"), "min size is greater than max size")
        elif required and not is_set(low) and not is_set(high):
            add(at, "min size or max size is required")
    elif is_set(low) or is_set(high) or spec.get("grow") is not None:
        add(at, "min size, max size and grow are not supported (volumeType disk)")


def _encryption(doc: dict[Any, Any], version: str, add: Any) -> None:
    """EncryptionSpec.Validate (encryption.go): luks2, at least one key, unique slots, each key with a source;
    TPM PCRs 0-23 (v1.12+, where PCRs can be chosen)."""
    spec = as_dict(doc.get("encryption"))
    if not spec:
        return
    if spec.get("provider") != "luks2":
        add(("encryption", "provider"), "unsupported encryption provider (luks2 only)")
    keys = as_list(spec.get("keys"))
    if not keys:
        add(("encryption", "keys"), "encryption keys are required")
    slots: set[Any] = set()
    for k, key in enumerate(keys):
        key = as_dict(key)
        slot = key.get("slot") or 0
        if slot in slots:
            add(("encryption", "keys", k, "slot"), "duplicate key slot")
        slots.add(slot)
        if all(key.get(kind) is None for kind in ("static", "nodeID", "kms", "tpm")):
            add(("encryption", "keys", k), "at least one encryption key type must be specified")
        if version != "v1.11":
            for i, pcr in enumerate(as_list(get(key, "tpm", "options", "pcrs"))):
                if not isinstance(pcr, int) or not 0 <= pcr <= 23:
                    add(("encryption", "keys", k, "tpm", "options", "pcrs", i), "TPM PCR is out of range (0-23)")


def _filesystem(doc: dict[Any, Any], add: Any) -> None:
    """Filesystem type is xfs or ext4; project quota only on xfs (FilesystemSpec.Validate)."""
    fs = as_dict(doc.get("filesystem"))
    fs_type = fs.get("type") or ""
    if fs_type not in ("", "xfs", "ext4"):
        add(("filesystem", "type"), "unsupported filesystem type (xfs or ext4)")
    elif fs.get("projectQuotaSupport") is True and fs_type not in ("", "xfs"):
        add(("filesystem", "projectQuotaSupport"), "project quota support is only available for xfs filesystem")


def _name(doc: dict[Any, Any], add: Any, max_length: int | None) -> None:
    name = doc.get("name")
    text = name if isinstance(name, str) else ""
    if not text:
        add(("name",), "name is required")
    elif max_length is not None and len(text) > max_length:
        add(("name",), f"name must be between 1 and {max_length} characters long")
    if not volume_name_chars_ok(text):
        add(("name",), "name can only contain ASCII letters, digits, and hyphens")


def block_rules(documents: Any, version: str) -> list[RuleFinding]:
    findings: list[RuleFinding] = []

    def adder(index: int, kind: str) -> Any:
        def add(path: Path, reason: str) -> None:
            findings.append(RuleFinding(index, kind, path, reason))
        return add

    legacy = machine_config(documents)
    for index, doc in documents_of(documents, "VolumeConfig"):
        add = adder(index, "VolumeConfig")
        name = doc.get("name")
        if name not in _SYSTEM_VOLUMES:
            add(("name",), f"only {', '.join(_SYSTEM_VOLUMES)} volumes are supported")
            continue
        if name == "STATE":
            if as_dict(doc.get("provisioning")):
                add(("provisioning",), "provisioning config is not allowed for the STATE volume")
            for k, key in enumerate(as_list(get(doc, "encryption", "keys"))):
                if as_dict(key).get("lockToState") is True:
                    add(("encryption", "keys", k, "lockToState"), "state-locked key is not allowed for STATE")
        _provisioning(doc, version, False, True, add)
        _encryption(doc, version, add)
        legacy_encryption = get(legacy[1], "machine", "systemDiskEncryption", name.lower()) if legacy else None
        if version != "v1.11" and name in ("STATE", "EPHEMERAL") and is_set(doc.get("encryption")) \
                and legacy and legacy_encryption is not None:
            findings.append(RuleFinding(legacy[0], "v1alpha1",
                                            ("machine", "systemDiskEncryption", name.lower()),
                                            f"system disk encryption for {name} is configured in both "
                                            "v1alpha1 and VolumeConfig"))

    for index, doc in documents_of(documents, "UserVolumeConfig"):
        add = adder(index, "UserVolumeConfig")
        _name(doc, add, _MAX_NAME)
        volume_type = doc.get("volumeType") or "partition"
        if version == "v1.11":
            volume_type = "partition"  # v1.11 has no volumeType (strict decoding refuses it)
        if volume_type == "directory":
            for key in ("provisioning", "encryption", "filesystem", *(("mount",) if version == "v1.13" else ())):
                if as_dict(doc.get(key)):
                    add((key,), f"{key} spec is invalid for volumeType directory")
        elif volume_type in ("disk", "partition"):
            _provisioning(doc, version, True, volume_type == "partition", add)
            _filesystem(doc, add)
            _encryption(doc, version, add)
        else:
            add(("volumeType",), "unsupported volume type (partition, disk or directory)")

    for kind in ("RawVolumeConfig", "SwapVolumeConfig"):
        for index, doc in documents_of(documents, kind):
            add = adder(index, kind)
            _name(doc, add, _MAX_NAME)
            _provisioning(doc, version, True, True, add)
            _encryption(doc, version, add)

    for index, doc in documents_of(documents, "ExistingVolumeConfig"):
        add = adder(index, "ExistingVolumeConfig")
        _name(doc, add, None)
        if not is_set(get(doc, "discovery", "volumeSelector", "match")):
            add(("discovery", "volumeSelector"), "volume selector is required")
    return findings
