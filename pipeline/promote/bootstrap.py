"""Bootstrap: the key, `.sops.yaml`, the secrets bundle and the base configs, each only when missing."""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.layout import ENCRYPTED_DIR, SECRETS_ARTEFACT, TALOSCONFIG_ARTEFACT, base_artefact
from pipeline.promote import talosctl
from pipeline.sops import identities as keys
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, load_sops_config, render_sops_config
from pipeline.state import ledger
from pipeline.talos.baseconfig import ClusterParams, dump_documents, generate_base, generate_talosconfig
from pipeline.talos.inventory import ROLES, Inventory
from pipeline.talos.yaml import load_one


@dataclass
class BootstrapReport:
    """What a bootstrap run made (and nothing else: existing files are never touched)."""

    made: list[str] = field(default_factory=list)
    new_key: str | None = None


def cluster_params(inventory: Inventory) -> ClusterParams:
    """The base-config inputs the inventory declares."""
    cluster = inventory.cluster
    return ClusterParams(
        name=cluster.name,
        endpoint=cluster.endpoint,
        talos_version=cluster.talos_version,
        kubernetes_version=cluster.kubernetes_version,
        install_disk=cluster.install_disk,
        install_image=cluster.install_image,
    )


def params_digest(inventory: Inventory) -> str:
    """Digest of the inventory fields a base config is generated from."""
    params = cluster_params(inventory)
    return ledger.sha256_bytes(ledger.canonical(params.__dict__))


def missing(inventory: Inventory) -> list[str]:
    """What bootstrap would make now (empty: nothing to do)."""
    root = inventory.root
    wanted = [SOPS_CONFIG, SECRETS_ARTEFACT, *(base_artefact(role) for role in ROLES), TALOSCONFIG_ARTEFACT]
    out = [path for path in wanted if not (root / path).is_file()]
    if _bases_outdated(inventory):
        out.extend(base_artefact(role) for role in ROLES if base_artefact(role) not in out)
    return out


def _bases_outdated(inventory: Inventory) -> bool:
    # Only bases this pipeline generated (their params are in the ledger) follow the inventory;
    # a base the user brought from `talosctl gen config` is never replaced.
    recorded = ledger.load_ledger(inventory.root).bases.get("params")
    return recorded is not None and recorded != params_digest(inventory)


def _require_identity(root: Path, declared: tuple[str, ...] = ()) -> BootstrapReport:
    report = BootstrapReport()
    config = load_sops_config(root)
    search = keys.find_identities()
    if config is None and not declared:
        if not search.public_keys and not search.external:
            report.new_key = keys.write_identity(keys.key_file_target())
        return report
    # cluster.yaml's recipients: will be the rules: a key made here would not be one of them.
    needed = config.recipients() if config is not None else declared
    if needed and not search.external and not set(needed) & set(search.public_keys):
        found = ", ".join(search.public_keys) or "none"
        raise PipelineError(
            f"this repository is encrypted for {', '.join(needed)}; no identity here matches "
            f"(looked at {', '.join(search.looked_at)}; public keys found: {found})",
            path=SOPS_CONFIG)
    return report


def _endpoints(inventory: Inventory) -> list[str]:
    out = []
    for node in inventory.nodes.values():
        if node.role == "controlplane" and node.address:
            out.append(str(ipaddress.ip_interface(node.address).ip))
    return out


def _encrypt_to(root: Path, artefact: str, text: str) -> None:
    ciphertext = sops.encrypt(text.encode(), artefact, root)
    ledger.atomic_write(root / artefact, ciphertext)


def bootstrap(inventory: Inventory) -> BootstrapReport:
    """Make whatever is missing, in dependency order; never overwrite an existing secret."""
    root = inventory.root
    report = _require_identity(root, tuple(r.key for r in inventory.recipients))
    if not (root / SOPS_CONFIG).is_file():
        recipients = [r.key for r in inventory.recipients]
        if not recipients:
            search = keys.find_identities()
            if not search.public_keys:
                raise PipelineError("no age identity to encrypt to: set recipients: in cluster.yaml",
                                    path=SOPS_CONFIG)
            recipients = [search.public_keys[0]]
        (root / SOPS_CONFIG).write_text(render_sops_config(recipients), encoding="utf-8")
        report.made.append(SOPS_CONFIG)
    (root / ENCRYPTED_DIR).mkdir(exist_ok=True)

    use_talosctl = inventory.renderer == "talosctl"
    if use_talosctl:
        talosctl.require()
    bundle = None
    if not (root / SECRETS_ARTEFACT).is_file():
        if use_talosctl:
            bundle = load_one(talosctl.gen_secrets(root), "talosctl gen secrets")
        else:
            from pipeline.talos.secrets_bundle import generate_bundle  # cryptography: only at bootstrap

            bundle = generate_bundle(inventory.cluster.talos_version)
        # The bundle reaches sops on stdin: its plaintext never touches the disk.
        _encrypt_to(root, SECRETS_ARTEFACT, dump_documents([bundle]))
        report.made.append(SECRETS_ARTEFACT)
    # The bundle's ciphertext digest, recorded on first sight and never replaced here: `doit check`
    # flags any later change that the ledger's `rotations` does not record as deliberate.
    with ledger.updating(root) as record:
        record.bases.setdefault("secrets", ledger.sha256_file(root / SECRETS_ARTEFACT))

    todo = [path for path in missing(inventory) if path not in (SOPS_CONFIG, SECRETS_ARTEFACT)]
    if todo:
        if bundle is None:
            bundle = load_one(sops.decrypt(SECRETS_ARTEFACT, root), SECRETS_ARTEFACT)
            from pipeline.talos.secrets_bundle import validate_bundle

            validate_bundle(bundle, SECRETS_ARTEFACT)
        params = cluster_params(inventory)
        if use_talosctl:
            _bootstrap_with_talosctl(inventory, bundle, todo, report)
            todo = []
        for role in ROLES:
            if base_artefact(role) in todo:
                _encrypt_to(root, base_artefact(role), dump_documents(generate_base(role, bundle, params)))
                report.made.append(base_artefact(role))
        if TALOSCONFIG_ARTEFACT in todo:
            talosconfig = generate_talosconfig(bundle, params, _endpoints(inventory))
            _encrypt_to(root, TALOSCONFIG_ARTEFACT, dump_documents([talosconfig]))
            report.made.append(TALOSCONFIG_ARTEFACT)
        if any(base_artefact(role) in report.made for role in ROLES):
            with ledger.updating(root) as record:
                record.bases["params"] = params_digest(inventory)
    if report.new_key:
        announce_new_key(report.new_key)
    return report


def _bootstrap_with_talosctl(inventory: Inventory, bundle: dict, todo: list[str], report: BootstrapReport) -> None:
    """Base configs and talosconfig from `talosctl gen config --with-secrets` (renderer: talosctl)."""
    cluster = inventory.cluster
    files = talosctl.gen_config(inventory.root, dump_documents([bundle]), cluster.name,
                                cluster.endpoint, cluster.talos_version, cluster.kubernetes_version)
    wanted = {base_artefact("controlplane"): "controlplane.yaml", base_artefact("worker"): "worker.yaml",
              TALOSCONFIG_ARTEFACT: "talosconfig"}
    for artefact, name in wanted.items():
        if artefact in todo:
            _encrypt_to(inventory.root, artefact, files[name])
            report.made.append(artefact)


def announce_new_key(public_key: str) -> None:
    """Tell the user, loudly, that a new root of trust exists and must be backed up."""
    path = keys.key_file_target()
    bar = "!" * 72
    print(
        f"{bar}\n"
        f"A new age identity was created: {path} (public key {public_key}).\n"
        "It is the ONLY key that can decrypt this cluster's secrets. Back it up NOW, outside this\n"
        "machine and this repository (e.g. a password manager). Lose it and the secrets are gone.\n"
        f"{bar}",
        file=sys.stderr,
    )
