"""Keys over a platform's life: rekey, data-key rotation, new identities and recovery drills.

Plain functions, no doit (``key_tasks.py`` wires them in). Every artefact change follows the
pipeline's rule: sops works on a copy in a private scratch folder, the result is checked (keyless
guard, recipients, a decrypt), and only then does it replace the artefact with a temp file and a
rename in the same folder. The ledger is carried along so that the next ``doit`` is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import yaml

from pipeline.errors import PipelineError
from pipeline.guard import scan as guard
from pipeline.promote.render import ENCRYPTED_DIR, node_artefact, render_node
from pipeline.sops import identities as keys
from pipeline.sops import runner as sops
from pipeline.sops.config import SOPS_CONFIG, SopsConfig, load_sops_config, parse_sops_config, render_sops_config
from pipeline.state import git, ledger
from pipeline.state.ledger import LEDGER_FILE, Ledger, sha256_bytes, sha256_file
from pipeline.talos.inventory import INVENTORY_FILE, Inventory, load_inventory

ARTEFACT_SUFFIX = ".encrypted.yaml"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NO_IDENTITY = "no age identity here can decrypt this file"

Emit = Callable[[str], None]


def _quiet(_: str) -> None:
    """An ``emit`` that drops progress lines."""


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def artefacts(root: Path) -> list[str]:
    """Repo-relative paths of every SOPS artefact: each ``encrypted/*.encrypted.yaml``, sorted."""
    folder = root / ENCRYPTED_DIR
    if not folder.is_dir():
        return []
    return sorted(f"{ENCRYPTED_DIR}/{path.name}" for path in folder.glob(f"*{ARTEFACT_SUFFIX}")
                  if path.is_file() and not path.name.startswith("."))


def _documents(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]


# --- recipients -------------------------------------------------------------------------------


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
        hint = access_hint(guard.artefact_recipients(text), names)
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
        return config, None, notes
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


def sops_config_outdated(inventory: Inventory) -> bool:
    """Whether a generated `.sops.yaml` no longer names cluster.yaml's ``recipients:`` (run `doit rekey`).

    Keyless, no sops, no artefact read: cheap enough for every promotion to mention it.
    """
    wanted = [r.key for r in inventory.recipients]
    try:
        config = load_sops_config(inventory.root)
    except PipelineError:
        return False
    return bool(wanted) and config is not None and config.generated and config.text != render_sops_config(wanted)


SCRATCH_PREFIX = "talos-promote-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_scratch() -> None:
    """Scratch folders of killed runs (their pid is gone): ciphertext only, but never left around."""
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-")[1:2]
        if pid and pid[0].isdigit() and int(pid[0]) != os.getpid() and not _pid_alive(int(pid[0])) \
                and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _scratch(kind: str) -> Iterator[Path]:
    """A private temp folder (0700), ``talos-promote-<kind>-<pid>-*``, removed on every path out.

    Only a SIGKILL can leave one behind; the next rekey, rotate or drill removes it.
    """
    _remove_stale_scratch()
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _save(root: Path, record: Ledger) -> None:
    """Write the ledger (the caller holds ``ledger.locked``)."""
    path = root / LEDGER_FILE
    text = record.to_text()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        ledger.atomic_write(path, text.encode())


def carry_forward(record: Ledger, artefact: str, old: str, new: str) -> None:
    """Tell the ledger an artefact's bytes changed but its content did not (rekey, rotation).

    Node entries that recorded the old ciphertext digest take the new one; node intents that
    named the old digest as their base take the new one too (the base is an input of every node of
    its role), and so does any digest in ``bases``. Entries that did not match the old digest
    were stale before and stay stale: nothing is laundered.
    """
    base_before, base_after = f"base {old}", f"base {new}"
    for entry in record.nodes.values():
        if entry.get("artefact") == artefact and entry.get("artefact_sha256") == old:
            entry["artefact_sha256"] = new
        inputs = entry.get("inputs")
        if isinstance(inputs, list) and base_before in inputs:
            consistent = entry.get("intent") == sha256_bytes(ledger.canonical(inputs))
            entry["inputs"] = [base_after if item == base_before else item for item in inputs]
            if consistent:
                entry["intent"] = sha256_bytes(ledger.canonical(entry["inputs"]))
    for name, value in list(record.bases.items()):
        if value == old:
            record.bases[name] = new


def _replace(root: Path, artefact: str, snapshot_sha: str, data: bytes,
             before_write: Callable[[Ledger], None] | None = None) -> str:
    """Swap in a checked artefact under the ledger lock, only if nobody changed it meanwhile."""
    new_sha = sha256_bytes(data)
    with ledger.locked(root):
        if sha256_file(root / artefact) != snapshot_sha:
            raise PipelineError("changed by someone else while this ran; left as it is, run again",
                                path=artefact)
        record = ledger.load_ledger(root)
        if before_write is not None:
            before_write(record)  # a journal entry, written ahead of the artefact
            _save(root, record)
        ledger.atomic_write(root / artefact, data)
        carry_forward(record, artefact, snapshot_sha, new_sha)
        _save(root, record)
    return new_sha


def _check_result(artefact: str, after: str, recipients: tuple[str, ...]) -> None:
    """The keyless checks every sops output passes before it may replace an artefact."""
    findings = guard.scan_artefact(after, artefact)
    if findings:
        raise PipelineError(f"sops output failed the guard, artefact left as it was: {findings[0]}", path=artefact)
    if guard.artefact_recipients(after) != recipients:
        raise PipelineError("sops output names other recipients than expected, artefact left as it was",
                            path=artefact)


def _identities_or_fail(paths: list[tuple[str, tuple[str, ...]]], names: dict[str, str],
                        what: str) -> keys.KeySearch:
    """Refuse before touching anything when no identity here opens one of the files."""
    search = keys.find_identities()
    if search.external:
        return search  # SOPS_AGE_KEY_CMD or ssh keys: sops will tell
    for artefact, needed in paths:
        if not set(needed) & set(search.public_keys):
            raise PipelineError(f"cannot {what}: {_NO_IDENTITY}: {access_hint(needed, names, search)}",
                                path=artefact)
    return search


# --- rekey ------------------------------------------------------------------------------------


@dataclass
class RekeyPlan:
    """What `doit rekey` would do: the rules, a new `.sops.yaml` if any, and the artefacts to re-wrap."""

    config: SopsConfig
    new_config_text: str | None
    todo: list[tuple[str, tuple[str, ...], tuple[str, ...]]]  # (artefact, has, wants)
    notes: list[str] = field(default_factory=list)


@dataclass
class RekeyReport:
    """What `doit rekey` did."""

    config_written: bool = False
    rekeyed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_rekey(inventory: Inventory) -> RekeyPlan:
    """Compare every artefact's recipients with its creation rule's (keyless, runs no sops)."""
    root = inventory.root
    config, new_text, notes = target_config(inventory)
    todo = []
    for artefact in artefacts(root):
        rule = config.rule_for(artefact)
        if rule is None:
            raise PipelineError("no .sops.yaml creation rule matches this artefact path", path=artefact)
        has = guard.artefact_recipients((root / artefact).read_text(encoding="utf-8"))
        wants = tuple(sorted(rule.recipients))
        if not wants:
            raise PipelineError("its creation rule names no age recipient", path=artefact)
        if has != wants:
            todo.append((artefact, has, wants))
    return RekeyPlan(config, new_text, todo, notes)


def rekey(inventory: Inventory, emit: Emit = _quiet) -> RekeyReport:
    """Make every artefact's recipients those of its creation rule (`sops updatekeys`), atomically.

    A generated `.sops.yaml` is regenerated from ``recipients:`` first. Nothing to do runs no sops.
    Refuses, before changing anything, when no identity here can open a file that needs re-wrapping,
    or when the new recipients would lock out every identity here (the usual typo).
    """
    root = inventory.root
    plan = plan_rekey(inventory)
    report = RekeyReport(notes=list(plan.notes))
    if plan.new_config_text is None and not plan.todo:
        return report
    names = recipient_names(inventory)
    search = _identities_or_fail([(a, has) for a, has, _ in plan.todo], names, "rekey")
    if not search.external:
        for artefact, _, wants in plan.todo:
            if not set(wants) & set(search.public_keys):
                raise PipelineError(
                    f"refusing to rekey: the new recipients ({describe_keys(wants, names)}) include none of "
                    f"the identities here ({', '.join(search.public_keys)}): you would lock yourself out. "
                    "Run it with a key that stays a recipient (SOPS_AGE_KEY_FILE=...)", path=artefact)
    if plan.new_config_text is not None:
        ledger.atomic_write(root / SOPS_CONFIG, plan.new_config_text.encode())
        report.config_written = True
        emit(f"rekey: {SOPS_CONFIG} regenerated for {describe_keys(plan.config.recipients(), names)}")
    config_text = plan.new_config_text or plan.config.text
    errors: list[PipelineError] = []
    with _scratch("rekey") as scratch:
        (scratch / SOPS_CONFIG).write_text(config_text, encoding="utf-8")
        for artefact, has, wants in plan.todo:
            try:
                _rekey_one(root, scratch, artefact, wants, names)
            except PipelineError as error:
                errors.append(error)
                emit(f"rekey: FAILED {error}")
                continue
            report.rekeyed.append(artefact)
            added = [key for key in wants if key not in has]
            removed = [key for key in has if key not in wants]
            change = "; ".join(part for part in (
                f"+{describe_keys(added, names)}" if added else "",
                f"-{describe_keys(removed, names)}" if removed else "") if part)
            emit(f"rekey: {artefact}: {change}")
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PipelineError(f"{errors[0]}{more}; the other artefacts were rekeyed, run doit rekey again")
    return report


def _scratch_copy(root: Path, scratch: Path, artefact: str) -> tuple[bytes, Path]:
    """Copy ``artefact`` (ciphertext only) to the same relative path under ``scratch``; (its bytes, the copy)."""
    data = (root / artefact).read_bytes()
    copy = scratch / artefact
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(data)
    return data, copy


def _rekey_one(root: Path, scratch: Path, artefact: str, wants: tuple[str, ...], names: dict[str, str]) -> None:
    data, copy = _scratch_copy(root, scratch, artefact)
    before = data.decode()
    # `sops updatekeys` rewrites its file in place and has no --filename-override: it runs on a copy
    # at the same path relative to a copy of .sops.yaml, so the same creation rule applies.
    try:
        sops.run_sops(["--config", str(scratch / SOPS_CONFIG), "updatekeys", "--yes", artefact], scratch, artefact)
        after = copy.read_text(encoding="utf-8")
        _check_result(artefact, after, wants)
        if not _same_payload(before, after):
            raise PipelineError("sops updatekeys changed the encrypted content, artefact left as it was",
                                path=artefact)
        sops.decrypt(artefact, scratch)  # the re-wrapped data key still opens it (MAC checked)
    except PipelineError as error:
        raise _explained(error, before, names) from None
    _replace(root, artefact, sha256_bytes(data), after.encode())


def _same_payload(before: str, after: str) -> bool:
    """Same ENC[] values and MAC: only the wrapping of the data key changed."""
    def payload(text: str) -> list[Any]:
        out = []
        for doc in _documents(text):
            if isinstance(doc, dict):
                meta = doc.get("sops") or {}
                out.append(({k: v for k, v in doc.items() if k != "sops"}, meta.get("mac")))
            else:
                out.append(doc)
        return out
    return payload(before) == payload(after)


# --- rotate -----------------------------------------------------------------------------------


@dataclass
class RotateReport:
    """What `doit rotate` did: rotation number, artefacts rotated now, skipped as already done."""

    rotation: int
    rotated: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


def open_rotation(record: Ledger) -> tuple[int, dict[str, dict[str, Any]]] | None:
    """The unfinished rotation in the ledger (number, artefact -> journal entry), if any."""
    numbers = [entry["rotation"] for entry in record.rotations
               if isinstance(entry, dict) and isinstance(entry.get("rotation"), int)]
    if not numbers:
        return None
    last = max(numbers)
    mine = [entry for entry in record.rotations if isinstance(entry, dict) and entry.get("rotation") == last]
    if any("finished" in entry for entry in mine):
        return None
    return last, {entry["artefact"]: entry for entry in mine if "artefact" in entry}


def rotate(inventory: Inventory, emit: Emit = _quiet,
           after_each: Callable[[str], None] | None = None) -> RotateReport:
    """New data key for every artefact (sops rotate), verified and atomic per file, resumable.

    The ledger's ``rotations`` journal gets one entry per artefact (``from``/``to`` ciphertext
    digests) written before the artefact is replaced, then a ``finished`` entry. A rerun after an
    interruption continues the same rotation and skips every artefact already rotated in it.
    """
    root = inventory.root
    names = recipient_names(inventory)
    paths = artefacts(root)
    if not paths:
        raise PipelineError("no artefacts to rotate: run doit first", path=ENCRYPTED_DIR)
    texts = {artefact: (root / artefact).read_text(encoding="utf-8") for artefact in paths}
    _identities_or_fail([(a, guard.artefact_recipients(texts[a])) for a in paths], names, "rotate")

    record = ledger.load_ledger(root)
    current = open_rotation(record)
    number, journal = current if current else (
        1 + max([e["rotation"] for e in record.rotations
                 if isinstance(e, dict) and isinstance(e.get("rotation"), int)] or [0]), {})
    report = RotateReport(number)
    if current:
        emit(f"rotate: resuming rotation {number}")
    with _scratch("rotate") as scratch:
        for artefact in paths:
            sha = sha256_file(root / artefact)
            done = journal.get(artefact)
            if done and done.get("to") == sha:
                with ledger.locked(root):  # the kill may have come between artefact and ledger
                    record = ledger.load_ledger(root)
                    carry_forward(record, artefact, done["from"], done["to"])
                    _save(root, record)
                report.resumed.append(artefact)
                emit(f"rotate: {artefact}: already rotated in rotation {number}")
                continue
            _rotate_one(root, scratch, artefact, number, names)
            report.rotated.append(artefact)
            emit(f"rotate: {artefact}: new data key, same documents")
            if after_each is not None:
                after_each(artefact)
    with ledger.locked(root):
        record = ledger.load_ledger(root)
        record.rotations.append({"rotation": number, "finished": _now(), "deliberate": "doit rotate",
                                 "artefacts": len(report.rotated) + len(report.resumed)})
        _save(root, record)
    return report


def _rotate_one(root: Path, scratch: Path, artefact: str, number: int, names: dict[str, str]) -> None:
    data, copy = _scratch_copy(root, scratch, artefact)
    before = data.decode()
    try:
        old = _documents(sops.decrypt(artefact, scratch))
        rotated = sops.rotate(artefact, scratch)  # to stdout: the copy is untouched
        copy.write_bytes(rotated)
        new = _documents(sops.decrypt(artefact, scratch))
    except PipelineError as error:
        raise _explained(error, before, names) from None
    after = rotated.decode()
    _check_result(artefact, after, guard.artefact_recipients(before))
    if new != old:
        raise PipelineError("the rotated artefact decrypts to other documents, left as it was", path=artefact)
    if rotated == data:
        raise PipelineError("sops rotate returned the same bytes, left as it was", path=artefact)
    old_sha, new_sha = sha256_bytes(data), sha256_bytes(rotated)

    def journal(record: Ledger) -> None:
        record.rotations[:] = [e for e in record.rotations if not (
            isinstance(e, dict) and e.get("rotation") == number and e.get("artefact") == artefact)]
        record.rotations.append({"rotation": number, "artefact": artefact, "from": old_sha, "to": new_sha,
                                 "at": _now()})

    _replace(root, artefact, old_sha, rotated, before_write=journal)


# --- keygen -----------------------------------------------------------------------------------


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


# --- drill ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillLine:
    """One artefact's outcome in a drill: ``ok``, ``cannot decrypt``, ``drifted``, ``cannot re-render``, ``missing``."""

    artefact: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether this artefact was recovered."""
        return self.status == "ok"

    def __str__(self) -> str:
        return f"{self.artefact}: {self.status}{f' ({self.detail})' if self.detail else ''}"


@dataclass
class DrillReport:
    """A drill's outcome: one line per artefact, the key's public key, the commit, the time it took."""

    lines: list[DrillLine]
    public_keys: tuple[str, ...]
    commit: str
    seconds: float

    @property
    def failures(self) -> list[DrillLine]:
        """Artefacts that could not be recovered."""
        return [line for line in self.lines if not line.ok]


def _key_file_identities(key_file: Path) -> tuple[str, ...]:
    try:
        text = key_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("key file does not exist", path=key_file) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineError(f"cannot read the key file ({error.__class__.__name__})", path=key_file) from None
    found = tuple(keys.public_keys_of(text))
    if not found:
        raise PipelineError("no age identity in this file (expected a key file made by age-keygen or doit keygen)",
                            path=key_file)
    return found


def _drill_env(home: Path, key_file: Path) -> dict[str, str]:
    """The environment of a clean machine: empty HOME, only the drilled key, no other sops settings."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SOPS_", "XDG_", "GIT_", "PYTHON"))}
    package_parent = Path(__file__).resolve().parents[2]
    env.update(HOME=str(home), SOPS_AGE_KEY_FILE=str(key_file), PYTHONPATH=str(package_parent),
               PYTHONDONTWRITEBYTECODE="1", GIT_CONFIG_NOSYSTEM="1")
    return env


def drill(root: Path, key_file: Path, emit: Emit = _quiet) -> DrillReport:
    """Recovery drill: clone HEAD into a temp folder, empty HOME, only ``key_file``; decrypt and re-render.

    One line per artefact (ok / cannot decrypt / drifted / cannot re-render / missing). Nothing is
    left behind: plaintext stays in the worker process's memory and the folder is removed on every
    path out, interruptions included.
    """
    started = time.monotonic()
    key_file = key_file.expanduser()
    key_file = (key_file if key_file.is_absolute() else Path.cwd() / key_file).resolve()
    public = _key_file_identities(key_file)
    if not git.is_repository(root):
        raise PipelineError("not a git repository: a drill recovers the committed state (HEAD)", path=root)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=False)
    if head.returncode != 0:
        raise PipelineError("nothing committed yet: a drill recovers HEAD", path=root)
    commit = head.stdout.strip()
    dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                           cwd=root, capture_output=True, text=True, check=False).stdout.strip()
    if dirty:
        emit(f"drill: note: uncommitted changes are not part of this drill (it recovers HEAD {commit})")
    lines: list[DrillLine] = []
    with _scratch("drill") as scratch:
        home, clone = scratch / "home", scratch / "repo"
        home.mkdir(mode=0o700)
        env = _drill_env(home, key_file)
        cloned = subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(root), str(clone)],
                                env=env, cwd=scratch, capture_output=True, text=True, check=False)
        if cloned.returncode != 0:
            detail = (cloned.stderr.strip().splitlines() or ["?"])[-1]
            raise PipelineError(f"git clone of HEAD failed: {detail}", path=root)
        worker = subprocess.Popen(
            [sys.executable, "-P", "-m", "pipeline.keys.keyring", "drill-worker", str(clone)],
            env=env, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None
            for raw in worker.stdout:
                item = json.loads(raw)
                line = DrillLine(item["artefact"], item["status"], item.get("detail", ""))
                lines.append(line)
                emit(f"drill: {line}")
            stderr = worker.stderr.read() if worker.stderr else ""
            code = worker.wait()
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
        if code != 0:
            raise RuntimeError(f"the drill worker failed (exit {code}):\n{stderr}")
    return DrillReport(lines, public, commit, time.monotonic() - started)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Dotted path of the first place two parsed documents differ (never their values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}.{key}".lstrip(".")
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path.lstrip('.') or '(top)'} (length)"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else (path.lstrip(".") or "(top)")


def _drill_worker(clone: Path) -> int:
    """Runs in the drill's clean environment: decrypt every artefact, re-render every node, compare.

    Prints one JSON line per artefact on stdout; plaintext never leaves this process's memory.
    """
    def out(line: DrillLine) -> None:
        print(json.dumps({"artefact": line.artefact, "status": line.status, "detail": line.detail}), flush=True)

    search = keys.find_identities()
    inventory: Inventory | None
    try:
        inventory = load_inventory(clone)
        inventory_error = ""
    except PipelineError as error:
        inventory, inventory_error = None, str(error)
    names = recipient_names(inventory)
    by_artefact = {node_artefact(inventory, node): node for node in inventory.nodes.values()} if inventory else {}
    for artefact in artefacts(clone):
        text = (clone / artefact).read_text(encoding="utf-8")
        try:
            documents = _documents(sops.decrypt(artefact, clone))
        except PipelineError as error:
            needed = guard.artefact_recipients(text)
            if not set(needed) & set(search.public_keys):
                detail = (f"encrypted for {describe_keys(needed, names)}, not for this key "
                          f"({', '.join(search.public_keys)})")
            else:
                detail = error.message
            out(DrillLine(artefact, "cannot decrypt", detail))
            continue
        node = by_artefact.get(artefact)
        if node is None or inventory is None:
            out(DrillLine(artefact, "ok"))
            continue
        try:
            rendered = _documents(render_node(inventory, node).text)
        except PipelineError as error:
            out(DrillLine(artefact, "cannot re-render", str(error)))
            continue
        where = _first_difference(rendered, documents)
        if where is None:
            out(DrillLine(artefact, "ok"))
        else:
            out(DrillLine(artefact, "drifted", f"differs from what cluster.yaml and patches/ render, at {where}"))
    if inventory is None:
        out(DrillLine(INVENTORY_FILE, "cannot re-render", inventory_error))
    else:
        for artefact, node in by_artefact.items():
            if not (clone / artefact).is_file():
                out(DrillLine(artefact, "missing", f"node {node.name} has no artefact at HEAD"))
    return 0


if __name__ == "__main__":  # the drill's worker process
    if len(sys.argv) == 3 and sys.argv[1] == "drill-worker":
        sys.exit(_drill_worker(Path(sys.argv[2])))
    sys.exit("usage: python -m pipeline.keys.keyring drill-worker CLONE")
