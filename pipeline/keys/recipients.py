"""Who can decrypt: named recipients, the .sops.yaml they generate, access hints and new identities."""

from __future__ import annotations

from pathlib import Path

import pyrage

from pipeline.errors import PipelineError
from pipeline.sops import identities as keys
from pipeline.sops import metadata
from pipeline.sops.config import SOPS_CONFIG, SopsConfig, load_sops_config, parse_sops_config, render_sops_config
from pipeline.talos.inventory import INVENTORY_FILE, Inventory

_NO_IDENTITY = "no age identity here can decrypt this file"


def recipient_names(inventory: Inventory | None) -> dict[str, str]:
    """age public key -> the name cluster.yaml gives it (empty without ``recipients:``)."""
    return {r.key: r.name for r in inventory.recipients} if inventory else {}


def describe_keys(public_keys: tuple[str, ...] | list[str], names: dict[str, str]) -> str:
    """``name (age1...)`` for each key, comma-separated; public keys only, never a secret."""
    return ", ".join(f"{names[key]} ({key})" if key in names else key for key in public_keys) or "nobody"


def validate_recipients(inventory: Inventory) -> None:
    """Every ``recipients:`` key must be a real age public key (bech32 checksum included)."""
    seen: dict[str, str] = {}
    for index, recipient in enumerate(inventory.recipients):
        try:
            pyrage.x25519.Recipient.from_str(recipient.key)
        except Exception:  # pyrage raises its own error types
            raise PipelineError(f"recipients[{index}] ({recipient.name}): {recipient.key} is not a valid age "
                                "public key (bad checksum: copy it again from the key file)",
                                path=INVENTORY_FILE) from None
        if recipient.key in seen:
            raise PipelineError(f"recipients[{index}] ({recipient.name}): same key as {seen[recipient.key]}",
                                path=INVENTORY_FILE)
        seen[recipient.key] = recipient.name


def access_hint(needed: tuple[str, ...], names: dict[str, str], search: keys.KeySearch | None = None) -> str:
    """Which recipients a file needs and which identities were found (public keys only)."""
    search = search or keys.find_identities()
    return (f"it needs one of {describe_keys(needed, names)}; identities found: "
            f"{', '.join(search.public_keys) or 'none'} (looked at {', '.join(search.looked_at)})")


def _explained(error: PipelineError, text: str, names: dict[str, str]) -> PipelineError:
    """Enrich sops's "no identity" failure with who the file needs and who we are."""
    if error.message.startswith(_NO_IDENTITY):
        hint = access_hint(metadata.artefact_recipients(text), names)
        return PipelineError(f"{_NO_IDENTITY}: {hint}", path=error.path)
    return error


def target_config(inventory: Inventory) -> tuple[SopsConfig, str | None, list[str]]:
    """The creation rules artefacts must follow, the new `.sops.yaml` text if it must be written, notes.

    A generated `.sops.yaml` (it starts with the generated header) follows ``recipients:``; without
    ``recipients:`` it keeps the key bootstrap wrote into it. A `.sops.yaml` without the header is
    the user's own: it is only read, and wins over ``recipients:``.
    """
    root = inventory.root
    config = load_sops_config(root)
    if config is None:
        raise PipelineError("no .sops.yaml: run doit bootstrap first", path=SOPS_CONFIG)
    wanted = [r.key for r in inventory.recipients]
    notes: list[str] = []
    if not wanted:
        if not config.generated or not config.recipients():
            return config, None, notes
        # No recipients: in cluster.yaml: a generated file keeps the keys it names, and its rules
        # follow this version of the pipeline (new artefacts, new sensitive fields).
        wanted = list(config.recipients())
    else:
        validate_recipients(inventory)
    if not config.generated:
        if set(wanted) != set(config.recipients()):
            notes.append(f"{SOPS_CONFIG} is yours (no generated header): it wins over recipients: in "
                         f"{INVENTORY_FILE}, which is not applied")
        return config, None, notes
    text = render_sops_config(wanted)
    if text == config.text:
        return config, None, notes
    return parse_sops_config(text), text, notes


def keygen(out: str, root: Path) -> tuple[Path, str]:
    """A new age identity at ``out`` (age-keygen's format, 0600); never overwrites, never in the repo."""
    if not out:
        raise PipelineError("keygen needs --out FILE: where to write the new private key (outside this repo)")
    path = Path(out).expanduser()
    if not path.is_absolute():
        path = (root / path)
    if path.resolve().is_relative_to(root.resolve()):
        raise PipelineError("refusing to write a private key inside the repository: choose a path outside it "
                            "(e.g. ~/.config/sops/age/new-key.txt)", path=out)
    if path.exists() or path.is_symlink():
        raise PipelineError("refusing to overwrite an existing file", path=out)
    return path, keys.write_identity(path)
