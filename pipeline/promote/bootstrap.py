"""Bootstrap: the key, `.sops.yaml`, the secrets bundle and the base configs, each only when missing."""

from __future__ import annotations

import copy
import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import ENCRYPTED_DIR, SECRETS_ARTEFACT, TALOSCONFIG_ARTEFACT, base_artefact, node_artefact
from pipeline.promote import talosctl
from pipeline.sops import identities as keys
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, hand_made_problems, load_sops_config, render_sops_config
from pipeline.state import git, ledger
from pipeline.talos.baseconfig import ClusterParams, dump_documents, generate_base, generate_talosconfig
from pipeline.talos.inventory import INVENTORY_FILE, ROLES, Inventory
from pipeline.talos.validation import validate_machine_config
from pipeline.talos.yaml import load_one


@dataclass
class BootstrapReport:
    """What a bootstrap run made (and nothing else: existing files are never touched)."""

    made: list[str] = field(default_factory=list)
    new_key: str | None = None
    new_cluster: bool = False


NEW_CLUSTER_FLAG = "doit bootstrap --new-cluster"


def lost_bundle(root: Path) -> str | None:
    """Why a missing secrets bundle must not be generated anew (None: it never existed here).

    The bundle is the cluster's identity: every machine's certificates and tokens derive from it,
    and a new one is a new cluster that none of the running nodes will trust. When git history
    (HEAD or any other commit) or the ledger shows this repository had one, it was lost, not never
    made: the answer names the command that brings it back.
    """
    if (root / SECRETS_ARTEFACT).is_file():
        return None
    rev = git.last_revision_holding(root, SECRETS_ARTEFACT)
    if rev is not None:
        return (f"missing, but git history holds it: restore it with `git checkout {rev} -- {SECRETS_ARTEFACT}` "
                f"(a new bundle is a new cluster: only `{NEW_CLUSTER_FLAG}` makes one)")
    try:
        recorded = ledger.load_ledger(root).bases.get("secrets")
    except PipelineError:
        recorded = None
    if recorded:
        return (f"missing, but {ledger.LEDGER_FILE} records one ({recorded[:19]}...): restore it from your backup "
                f"(a new bundle is a new cluster: only `{NEW_CLUSTER_FLAG}` makes one)")
    return None


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


def _validated_bases(inventory: Inventory, bundle: dict, roles: list[str]) -> dict[str, str]:
    """The base configs for ``roles``, generated and validated in memory before any of them is written.

    A bad endpoint (or any other inventory value Talos would refuse) stops here, with every committed
    base config as it was, instead of after they were replaced.
    """
    params = cluster_params(inventory)
    out = {}
    for role in roles:
        documents = generate_base(role, bundle, params)
        validate_machine_config(_with_install_target(documents), INVENTORY_FILE)
        out[role] = dump_documents(documents)
    return out


def _with_install_target(documents: list[Any]) -> list[Any]:
    """A copy of base documents with an install disk where none is set: nodes' patches may give one
    (talhelper's per-node installDisk), so the base is judged on what cluster.yaml decides."""
    checked = copy.deepcopy(documents)
    for doc in checked:
        if isinstance(doc, dict) and not doc.get("kind") and isinstance(doc.get("machine"), dict):
            install = doc["machine"].setdefault("install", {}) or {}
            if isinstance(install, dict) and not (install.get("disk") or install.get("diskSelector")):
                install["disk"] = "/dev/set-by-node-patches"
                doc["machine"]["install"] = install
    return checked


def hand_made_rule_problems(inventory: Inventory) -> list[str]:
    """What a hand-made `.sops.yaml` lacks for this pipeline's artefacts (none for a generated one)."""
    config = load_sops_config(inventory.root)
    if config is None or config.generated:
        return []
    return hand_made_problems(config, [node_artefact(inventory, node) for node in inventory.nodes.values()])


def prepare(inventory: Inventory) -> BootstrapReport:
    """The age identity and `.sops.yaml` (each made only when missing) and encrypted/: what encrypting needs.

    A hand-made `.sops.yaml` with no rule for an artefact this pipeline writes stops here, with one
    line per problem and its fix on stderr, before anything is made.
    """
    root = inventory.root
    report = _require_identity(root, tuple(r.key for r in inventory.recipients))
    problems = hand_made_rule_problems(inventory)
    if any("no creation rule" in line for line in problems):
        for line in problems:
            print(line, file=sys.stderr)
        raise PipelineError(f"{len(problems)} problem(s) above: fix each as it says, or let "
                            "`doit import --adopt-rules` replace the rules (it shows the change first)",
                            path=SOPS_CONFIG)
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
    return report


def bootstrap(inventory: Inventory, *, new_cluster: bool = False) -> BootstrapReport:
    """Make whatever is missing, in dependency order; never overwrite an existing secret.

    A secrets bundle that git history (or the ledger) shows this repository had is never made anew:
    the run stops with the command that restores it. ``new_cluster`` (`doit bootstrap --new-cluster`)
    is the one way to a new bundle where none is, and with it new base configs and talosconfig.
    """
    root = inventory.root
    lost = lost_bundle(root)
    if new_cluster:
        if (root / SECRETS_ARTEFACT).is_file():
            raise PipelineError("a secrets bundle exists: --new-cluster only makes one where none is "
                                "(`doit rotate` changes the encryption, never the cluster)", path=SECRETS_ARTEFACT)
    elif lost is not None:
        raise PipelineError(lost, path=SECRETS_ARTEFACT)
    report = prepare(inventory)
    report.new_cluster = new_cluster

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
        if not use_talosctl:
            # Checked before the bundle is written: a bad endpoint leaves the repository as it was.
            _validated_bases(inventory, bundle, list(ROLES))
        _encrypt_to(root, SECRETS_ARTEFACT, dump_documents([bundle]))
        report.made.append(SECRETS_ARTEFACT)
    # The bundle's ciphertext digest, recorded on first sight and never replaced here: `doit check`
    # flags any later change that the ledger's `rotations` does not record as deliberate. A new
    # cluster is the one deliberate replacement, and it says so.
    with ledger.updating(root) as record:
        if new_cluster:
            record.bases["secrets"] = ledger.sha256_file(root / SECRETS_ARTEFACT)
        record.bases.setdefault("secrets", ledger.sha256_file(root / SECRETS_ARTEFACT))

    todo = [path for path in missing(inventory) if path not in (SOPS_CONFIG, SECRETS_ARTEFACT)]
    if new_cluster:
        # The old base configs and talosconfig hold the old cluster's secrets: they go with it.
        todo = [*dict.fromkeys([*todo, *(base_artefact(role) for role in ROLES), TALOSCONFIG_ARTEFACT])]
    if todo:
        if bundle is None:
            bundle = load_one(sops.decrypt(SECRETS_ARTEFACT, root), SECRETS_ARTEFACT)
            from pipeline.talos.secrets_bundle import validate_bundle

            validate_bundle(bundle, SECRETS_ARTEFACT)
        params = cluster_params(inventory)
        if use_talosctl:
            _bootstrap_with_talosctl(inventory, bundle, todo, report)
            todo = []
        texts = _validated_bases(inventory, bundle, [role for role in ROLES if base_artefact(role) in todo])
        for role, text in texts.items():
            _encrypt_to(root, base_artefact(role), text)
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
    if new_cluster:
        announce_new_cluster()
    return report


def announce_new_cluster() -> None:
    """Tell the user, loudly, that this repository now describes a different cluster."""
    bar = "!" * 72
    print(
        f"{bar}\n"
        f"A NEW CLUSTER IDENTITY was generated: {SECRETS_ARTEFACT}, the base configs and talosconfig.\n"
        "Nodes already installed from the old bundle will NOT accept configs made from this one: it is\n"
        "for a cluster you are about to install (or reinstall). If you meant to recover the old one,\n"
        "discard these files and restore the old bundle from git history or your backup instead.\n"
        f"{bar}",
        file=sys.stderr,
    )


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
