"""Where things live in a cluster repository: the folders and artefact names every package shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.talos.inventory import Inventory, Node

SECRETS_ARTEFACT = "encrypted/secrets.encrypted.yaml"
TALOSCONFIG_ARTEFACT = "encrypted/talosconfig.encrypted.yaml"
VARS_ARTEFACT = "encrypted/vars.encrypted.yaml"  # the user's secret template variables (`doit secrets`)


RENDERED_DIR = "rendered"


ENCRYPTED_DIR = "encrypted"


def base_artefact(role: str) -> str:
    """Repo-relative path of the encrypted base config for ``role``."""
    return f"{ENCRYPTED_DIR}/{role}.encrypted.yaml"


def node_artefact(inventory: Inventory, node: Node | str) -> str:
    """Repo-relative path of a node's encrypted artefact."""
    return f"{ENCRYPTED_DIR}/{inventory.artefact_name(node)}.encrypted.yaml"


def rendered_path(inventory: Inventory, node: Node | str) -> str:
    """Repo-relative path of a node's transient plaintext."""
    return f"{RENDERED_DIR}/{inventory.artefact_name(node)}.yaml"
