"""`doit import`: adopt an existing cluster without ever regenerating its identity.

Three starting points, one module:

- talosctl files (``adopt_identity``): a secrets bundle (plaintext or SOPS-encrypted, e.g. talhelper's
  talsecret.sops.yaml) or a control-plane config to read it from, and optionally the base configs
  and the talosconfig. Every input is checked against the bundle before anything is written; the
  plaintext reaches sops on stdin only, so the repository never holds it; the adoption is recorded
  in the ledger's ``adoptions`` (the guard accepts the new bundle; an accidental change later is
  still refused). What was not given (bases, talosconfig) bootstrap makes from the imported bundle.
- talhelper (``adopt_talconfig``): talconfig.yaml (+ talenv.yaml) -> cluster.yaml and patches/.
- a repository made by hand as in the seed (``adopt_rules``): the hand-made `.sops.yaml` is replaced
  by generated rules, and each artefact encrypted under other settings is decrypted and
  re-encrypted (in memory), compared, and replaced atomically.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.layout import ENCRYPTED_DIR, SECRETS_ARTEFACT, TALOSCONFIG_ARTEFACT, base_artefact
from pipeline.promote import bootstrap
from pipeline.promote import stage as staging
from pipeline.sops import metadata
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, load_sops_config, parse_sops_config, render_sops_config
from pipeline.state import git, ledger
from pipeline.state.ledger import LEDGER_FILE, sha256_bytes, sha256_file
from pipeline.talos.inventory import INVENTORY_FILE, ROLES, Inventory
from pipeline.talos.yaml import load_documents

Emit = Callable[[str], None]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# The settings a creation rule stores in each file it encrypts (sops metadata): what re-encryption changes.
_RULE_SETTINGS = ("encrypted_regex", "unencrypted_regex", "encrypted_suffix", "unencrypted_suffix",
                  "encrypted_comment_regex", "unencrypted_comment_regex", "mac_only_encrypted")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class ImportInputs:
    """What the user handed `doit import` (paths as given; None when not given)."""

    secrets: Path | None = None
    from_config: Path | None = None
    talosconfig: Path | None = None
    controlplane: Path | None = None
    worker: Path | None = None


@dataclass
class AdoptReport:
    """What an identity import wrote, and which inputs were plaintext (the user should remove them)."""

    written: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)  # by bootstrap, from the imported bundle
    removed: list[str] = field(default_factory=list)  # the replaced identity's derived artefacts
    plaintext_inputs: list[str] = field(default_factory=list)
    replaced: bool = False


# --- reading the inputs ----------------------------------------------------------------------


@dataclass
class _Input:
    name: str  # as the user gave it (messages)
    text: str  # decrypted when it was a SOPS file: memory only
    documents: list[Any]
    encrypted: bool


def _is_sops_file(documents: list[Any]) -> bool:
    # sops keeps its metadata in a top-level `sops` mapping (in each document of a multi-document file).
    return bool(documents) and all(isinstance(doc, dict) and isinstance(doc.get("sops"), dict) for doc in documents)


def _read_input(root: Path, given: Path) -> _Input:
    path = given if given.is_absolute() else root / given
    name = str(given)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("no such file", path=name) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineError(f"cannot read it ({type(error).__name__})", path=name) from None
    documents = _parse(text, name)
    encrypted = _is_sops_file(documents)
    if encrypted:
        # sops checks the MAC; the plaintext stays in this process.
        out = sops.run_sops(["--decrypt", "--input-type", "yaml", "--output-type", "yaml", str(path.resolve())],
                            root, name)
        text = out.decode()
        documents = _parse(text, name)
    return _Input(name, text, documents, encrypted)


def _parse(text: str, name: str) -> list[Any]:
    # Typed as talosctl and sops (go-yaml v3) read them: what is imported is what the cluster holds.
    return [doc for doc in load_documents(text, name) if doc is not None]


def _bundle_of(root: Path, inputs: ImportInputs) -> tuple[dict, dict[str, _Input], list[str]]:
    """The bundle, every input read, and why the inputs disagree (one entry per file and field)."""
    from pipeline.talos import adopt as checks  # cryptography: only when importing
    from pipeline.talos.secrets_bundle import validate_bundle

    read: dict[str, _Input] = {}
    for key in ("secrets", "from_config", "talosconfig", "controlplane", "worker"):
        given = getattr(inputs, key)
        if given is not None:
            read[key] = _read_input(root, given)
    problems: list[str] = []
    if "secrets" in read:
        source = read["secrets"]
        if len(source.documents) != 1:
            raise PipelineError("a secrets bundle is one YAML document", path=source.name)
        bundle = source.documents[0]
        validate_bundle(bundle, source.name)
        if "from_config" in read:
            problems += checks.check_same_cluster(bundle, {read["from_config"].name: read["from_config"].documents})
    else:
        source = read["from_config"]
        bundle = checks.bundle_from_controlplane_config(source.documents, source.name)
    for role in ROLES:
        if role in read:
            base = read[role]
            role_problems = checks.check_base_config(base.documents, role, base.name)
            problems += role_problems or checks.check_same_cluster(bundle, {base.name: base.documents})
    if "talosconfig" in read:
        talos = read["talosconfig"]
        document = talos.documents[0] if len(talos.documents) == 1 else None
        problems += checks.check_talosconfig(document, bundle, talos.name)
    return bundle, read, problems


def _one_line(problems: list[str], bundle_name: str) -> str:
    """The disagreements as one line: per file, the fields that differ (names only, never values)."""
    by_file: dict[str, list[str]] = {}
    other: list[str] = []
    for line in problems:
        name, sep, rest = line.partition(": ")
        field_name = rest.split(" ", 1)[0]
        if sep and (" differs from " in rest or " is set but " in rest):
            by_file.setdefault(name, []).append(field_name)
        else:
            other.append(line)
    parts = [f"{name}: {', '.join(fields)}" for name, fields in by_file.items()]
    detail = "; ".join(parts + other)
    return f"the inputs are not of one cluster: these differ from the secrets bundle ({bundle_name}): {detail}"


# --- the identity ----------------------------------------------------------------------------


def holds_identity(root: Path) -> bool:
    """Whether the repository holds a secrets bundle (on disk, or recorded in the ledger: git history has it)."""
    return (root / SECRETS_ARTEFACT).is_file() or bool(ledger.load_ledger(root).bases.get("secrets"))


def _check_artefact(artefact: str, ciphertext: bytes) -> None:
    findings = metadata.scan_artefact(ciphertext.decode(errors="replace"), artefact)
    if findings:
        raise PipelineError(f"sops output failed the guard, nothing written: {findings[0]}", path=artefact)


def adopt_identity(inventory: Inventory, inputs: ImportInputs, replace: bool = False) -> AdoptReport:
    """Import an existing cluster's secrets bundle (and optionally its base configs and talosconfig).

    Refuses, before writing anything: inputs of different clusters (one line naming the fields), a
    repository that already holds a bundle unless ``replace``. Writes each input encrypted to its
    artefact name, records the adoption in the ledger, then lets bootstrap make what was not given
    from the imported bundle (bases, a talosconfig whose client certificate the imported OS CA signs).
    """
    if inputs.secrets is None and inputs.from_config is None:
        raise PipelineError("import needs the cluster's secrets: --secrets FILE (talosctl gen secrets, or "
                            "talhelper's talsecret.sops.yaml) or --from-config controlplane.yaml")
    if (inputs.controlplane is None) != (inputs.worker is None):
        # Bases the user brings are never regenerated; a generated partner would be, taking the other along.
        raise PipelineError("--controlplane and --worker go together: bring both base configs, or neither "
                            "(then both are generated from the bundle)")
    root = inventory.root
    bundle, read, problems = _bundle_of(root, inputs)
    bundle_name = (read.get("secrets") or read["from_config"]).name
    if problems:
        raise PipelineError(_one_line(problems, bundle_name))
    held = holds_identity(root)
    derived = [artefact for artefact in (*(base_artefact(role) for role in ROLES), TALOSCONFIG_ARTEFACT)
               if (root / artefact).is_file()]
    if held and not replace:
        raise PipelineError("the repository already holds a secrets bundle (a cluster identity); importing another "
                            "one means rebuilding every node: pass --replace to do it deliberately",
                            path=SECRETS_ARTEFACT)
    if derived and not replace:
        raise PipelineError("exists without a secrets bundle, maybe of another cluster: pass --replace to replace it "
                            "with what the import brings or makes", path=derived[0])
    report = AdoptReport(replaced=held)
    report.plaintext_inputs = list(dict.fromkeys(item.name for item in read.values() if not item.encrypted))
    prepared = bootstrap.prepare(inventory)  # the key and .sops.yaml, when missing
    report.made.extend(prepared.made)
    if prepared.new_key:
        bootstrap.announce_new_key(prepared.new_key)

    # Everything is encrypted and checked in memory before the first write.
    texts = {SECRETS_ARTEFACT: yaml.safe_dump(bundle, sort_keys=False)}
    for role in ROLES:
        if role in read:
            texts[base_artefact(role)] = read[role].text  # as given: sops keeps its content
    if "talosconfig" in read:
        texts[TALOSCONFIG_ARTEFACT] = read["talosconfig"].text
    ciphertexts = {artefact: sops.encrypt(text.encode(), artefact, root) for artefact, text in texts.items()}
    for artefact, data in ciphertexts.items():
        _check_artefact(artefact, data)

    new_sha = sha256_bytes(ciphertexts[SECRETS_ARTEFACT])
    with ledger.updating(root) as record:
        # Written ahead of the bundle: a kill after it leaves a bundle the guard knows as deliberate.
        record.adoptions.append({
            "adoption": 1 + len(record.adoptions), "artefact": SECRETS_ARTEFACT,
            "from": sha256_file(root / SECRETS_ARTEFACT) or record.bases.get("secrets"), "to": new_sha,
            "at": _now(), "deliberate": "doit import --replace" if held else "doit import",
            "source": "secrets bundle" if "secrets" in read else "control-plane config",
            "bases": "imported" if any(role in read for role in ROLES) else "generated",
            "talosconfig": "imported" if "talosconfig" in read else "generated",
        })
    (root / ENCRYPTED_DIR).mkdir(exist_ok=True)
    for artefact, data in ciphertexts.items():
        ledger.atomic_write(root / artefact, data)
        report.written.append(artefact)
    for artefact in derived:
        # Made from the replaced identity (or of unknown origin): bootstrap remakes it from the imported bundle.
        if artefact not in ciphertexts:
            (root / artefact).unlink()
            report.removed.append(artefact)
    with ledger.updating(root) as record:
        record.bases["secrets"] = new_sha
        # Bases the user brought are never regenerated; for generated ones bootstrap records the params again.
        record.bases.pop("params", None)
    made = bootstrap.bootstrap(inventory)
    report.made.extend(path for path in made.made if path not in report.made)
    staging.stage(inventory)
    return report


# --- talhelper -------------------------------------------------------------------------------


@dataclass
class TalconfigReport:
    """What a talconfig import wrote and what it could not convert."""

    written: list[str]
    unconverted: list[str]
    notes: list[str]
    unused_patches: list[str]


def adopt_talconfig(root: Path, talconfig: Path, talenv: Sequence[Path] = (), replace: bool = False,
                    environ: Mapping[str, str] | None = None) -> TalconfigReport:
    """Write cluster.yaml and patches/ converted from talhelper's talconfig.yaml (+ talenv files).

    Refuses to overwrite an existing cluster.yaml or patch file unless ``replace``; other files under
    patches/ are left and reported as unused.
    """
    from pipeline.talos.talconfig import import_talconfig

    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else root / path

    result = import_talconfig(resolve(talconfig), [resolve(path) for path in talenv], environ=environ)
    targets = {INVENTORY_FILE: result.cluster_yaml,
               **{f"patches/{name}": text for name, text in result.patches.items()}}
    existing = [path for path in targets if (root / path).exists()]
    if existing and not replace:
        more = f" (+{len(existing) - 1} more)" if len(existing) > 1 else ""
        raise PipelineError(f"already exists{more}: the import would overwrite it; pass --replace to let the "
                            "talconfig's cluster replace it", path=existing[0])
    for path, text in targets.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        ledger.atomic_write(target, text.encode())
    folder = root / "patches"
    unused = sorted(path.relative_to(root).as_posix() for path in folder.rglob("*")
                    if path.is_file() and path.relative_to(root).as_posix() not in targets)
    return TalconfigReport(written=list(targets), unconverted=list(result.unconverted), notes=list(result.notes),
                           unused_patches=unused)


# --- a hand-made `.sops.yaml` ----------------------------------------------------------------


def _settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {key: raw.get(key) for key in _RULE_SETTINGS if raw.get(key) not in (None, False)}


def _rule_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What sops stores in a file this rule encrypts: with no key selector, its default unencrypted_suffix."""
    settings = _settings(raw)
    if not any(key in settings for key in _RULE_SETTINGS[:4]):
        settings["unencrypted_suffix"] = "_unencrypted"  # measured: sops 3.11 writes it for whole-file rules
    return settings


def _artefact_settings(text: str) -> dict[str, Any] | None:
    try:
        document = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        return None
    meta = document.get("sops") if isinstance(document, dict) else None
    return _settings(meta) if isinstance(meta, dict) else None


@contextmanager
def _scratch_with(config_text: str) -> Iterator[Path]:
    """A private folder (0700) holding only a `.sops.yaml`: sops encrypts there under the new rules."""
    path = Path(tempfile.mkdtemp(prefix="talos-promote-adopt-"))
    try:
        (path / SOPS_CONFIG).write_text(config_text, encoding="utf-8")
        (path / ENCRYPTED_DIR).mkdir()
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class RulesReport:
    """What `doit import --adopt-rules` changed."""

    diff: list[str]
    reencrypted: list[str]
    unchanged: list[str]


def adopt_rules(inventory: Inventory, emit: Emit = lambda _line: None) -> RulesReport:
    """Replace a hand-made `.sops.yaml` with generated rules (same recipients) and re-encrypt what they change.

    Each artefact whose stored encryption settings differ from its new rule's is decrypted (memory
    only), re-encrypted under the new rules, decrypted again and compared, then replaced atomically;
    the others keep their bytes. The bundle's new ciphertext is recorded as a deliberate adoption.
    """
    root = inventory.root
    config = load_sops_config(root)
    if config is None:
        raise PipelineError("no .sops.yaml here: run doit, which generates one", path=SOPS_CONFIG)
    recipients = list(config.recipients())
    if not recipients:
        raise PipelineError("its rules name no age recipient: nothing to carry over", path=SOPS_CONFIG)
    new_text = render_sops_config(recipients)
    new_config = parse_sops_config(new_text)
    diff = [line.rstrip("\n") for line in difflib.unified_diff(
        config.text.splitlines(keepends=True), new_text.splitlines(keepends=True),
        f"{SOPS_CONFIG} (yours)", f"{SOPS_CONFIG} (generated)")]
    report = RulesReport(diff=diff, reencrypted=[], unchanged=[])
    for line in diff:
        emit(line)
    folder = root / ENCRYPTED_DIR
    paths = sorted(f"{ENCRYPTED_DIR}/{path.name}" for path in folder.glob("*.encrypted.yaml")) \
        if folder.is_dir() else []
    todo: list[str] = []
    for artefact in paths:
        rule = new_config.rule_for(artefact)
        stored = _artefact_settings((root / artefact).read_text(encoding="utf-8"))
        if rule is None or stored is None:
            raise PipelineError("not a SOPS file the generated rules cover: left as it is, nothing changed",
                                path=artefact)
        (todo if stored != _rule_settings(rule.raw) else report.unchanged).append(artefact)
    replacements: dict[str, tuple[str, bytes]] = {}
    with _scratch_with(new_text) as scratch:
        for artefact in todo:
            before = (root / artefact).read_bytes()
            plaintext = sops.decrypt(artefact, root)
            data = sops.encrypt(plaintext.encode(), artefact, scratch)
            _check_artefact(artefact, data)
            (scratch / artefact).write_bytes(data)
            again = sops.decrypt(artefact, scratch)
            if _parse(again, artefact) != _parse(plaintext, artefact):
                raise PipelineError("re-encrypted under the new rules it decrypts to other documents: nothing "
                                    "changed", path=artefact)
            replacements[artefact] = (sha256_bytes(before), data)
    if not todo and config.text == new_text:
        return report
    with ledger.locked(root):
        record = ledger.load_ledger(root)
        if SECRETS_ARTEFACT in replacements:
            old, data = replacements[SECRETS_ARTEFACT]
            record.adoptions.append({"adoption": 1 + len(record.adoptions), "artefact": SECRETS_ARTEFACT,
                                     "from": old, "to": sha256_bytes(data), "at": _now(),
                                     "deliberate": "doit import --adopt-rules", "source": "same bundle"})
            _save(root, record)  # ahead of the bundle, as for an import
        ledger.atomic_write(root / SOPS_CONFIG, new_text.encode())
        for artefact, (old, data) in replacements.items():
            ledger.atomic_write(root / artefact, data)
            new = sha256_bytes(data)
            report.reencrypted.append(artefact)
            for entry in record.nodes.values():
                if entry.get("artefact") == artefact and entry.get("artefact_sha256") == old:
                    entry["artefact_sha256"] = new  # same documents: the node stays current
            for name, value in list(record.bases.items()):
                if value == old:
                    record.bases[name] = new
        _save(root, record)
    if git.is_repository(root):
        staging.stage(inventory)
        git.stage(root, [SOPS_CONFIG])
    return report


def _save(root: Path, record: ledger.Ledger) -> None:
    path = root / LEDGER_FILE
    text = record.to_text()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(exist_ok=True)
        ledger.atomic_write(path, text.encode())


def plaintext_hint(names: Sequence[str]) -> str:
    """The line telling the user to remove the plaintext inputs (quoted for a POSIX shell)."""
    quoted = " ".join(name if all(c.isalnum() or c in "._/-~" for c in name) else "'" + name.replace("'", "'\\''")
                      + "'" for name in names)
    return (f"the repository holds only ciphertext; now remove the plaintext inputs: rm {quoted}"
            if names else "")


__all__ = ["AdoptReport", "ImportInputs", "RulesReport", "TalconfigReport", "adopt_identity", "adopt_rules",
           "adopt_talconfig", "holds_identity", "plaintext_hint"]
