"""The one action wrapper: every task's action goes through it, so every failure reads the same.

It is also the redaction boundary: every failure line and every report line an action returns is
passed through :func:`redacted`, which replaces any known secret of the run (and simple transforms
of it) by ``(secret)``. The reporter, watch, plan and drill print through the same function.

Bad input (PipelineError), an environment that refuses (OSError: a read-only folder, a full disk,
a path that is not a directory) and Ctrl-C become a task failure: one line, exit 1, never a
traceback. A successful action returns a dict of values for the reporter, with the sops runs it
made. A writing action first merges the ledger entries this run's encrypt tasks journaled, so it
sees them; read-only actions never write the ledger.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import yaml
from doit.exceptions import TaskFailed

from pipeline.errors import PipelineError
from pipeline.layout import SECRETS_ARTEFACT, TALOSCONFIG_ARTEFACT, base_artefact
from pipeline.promote import render as rendering
from pipeline.redact import SecretSet, redact
from pipeline.sops import identities
from pipeline.sops import runner as sops
from pipeline.state import journal
from pipeline.state.ledger import file_identity

TaskDict = dict[str, Any]


# --- the redaction boundary ---------------------------------------------------------------------

# (root, identities of the files read) -> the secrets collected from them, so `doit watch` and a
# run's many lines collect once.
_FULL: dict[tuple[str, tuple[Any, ...]], SecretSet] = {}
# Every value of these is secret (certificates aside); of the others (machine configs, the talosctl
# client config, whose context names and endpoints are not), only the sensitive fields.
_WHOLE_FILE_ARTEFACTS = (SECRETS_ARTEFACT, "encrypted/vars.encrypted.yaml")
_BASES = (base_artefact("controlplane"), base_artefact("worker"), TALOSCONFIG_ARTEFACT)


def _identity_texts() -> list[str]:
    """The age identities sops would use (the variable and the files): never decrypted, just read."""
    texts = [os.environ.get("SOPS_AGE_KEY", "")]
    explicit = os.environ.get("SOPS_AGE_KEY_FILE")
    for path in ([Path(explicit).expanduser()] if explicit else []) + [identities.default_key_file()]:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            texts.append(path.read_text(encoding="utf-8"))
    return [text for text in texts if "AGE-SECRET-KEY-" in text]


def known_secrets(root: Path | None = None, full: bool = False) -> SecretSet:
    """Every secret value this run knows, for redaction.

    Always (cheap, no sops run): the age identities in use and the sensitive values of every base
    config this process already decrypted. With ``full`` (a failure, or output built from decrypted
    content) and a key at hand: also the secrets bundle, both base configs' sensitive fields, the
    talosconfig and encrypted template variables, decrypted once per process while they are unchanged.
    A no-op run prints no line that needs this, so it decrypts nothing.
    """
    root = Path.cwd() if root is None else root
    keys = _identity_texts()
    seen = rendering.secrets_seen(root)
    files = [*_WHOLE_FILE_ARTEFACTS, *_BASES]
    full_key = (tuple(file_identity(root / name) for name in files) if full and keys else None)
    memo_key = (str(root), tuple(keys), tuple(sorted(seen.values())), full_key)
    if _LAST[0] == memo_key and _LAST[1] is not None:
        return _LAST[1]  # the same sources as the last line's: the same (already indexed) set
    secrets = SecretSet()
    for text in keys:
        secrets.add_age_identity(text)
    secrets.update(seen)
    if full_key is not None:
        secrets.update(_collect(root, files, (str(root), full_key, tuple(keys))))
    _LAST[:] = [memo_key, secrets]
    return secrets


_LAST: list[Any] = [None, None]  # (sources, SecretSet) of the last call: a run's many lines share one index


def _collect(root: Path, files: list[str], key: tuple[Any, ...]) -> SecretSet:
    """Decrypt the run's encrypted files (once per process while they are unchanged) and track their secrets."""
    collected = _FULL.get(key)
    if collected is None:
        collected = SecretSet()
        for name in files:
            if not (root / name).is_file():
                continue
            try:
                text = sops.decrypt(name, root)
                documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
            except (PipelineError, OSError, yaml.YAMLError):
                continue  # cannot read it: the failure being reported may be exactly that
            if name in _WHOLE_FILE_ARTEFACTS:
                collected.add_documents(documents)
                collected.update(rendering.sensitive_values(documents))  # its certificates are public
            else:
                collected.update(rendering.sensitive_values(documents))
        _FULL.clear()  # one repository state at a time
        _FULL[key] = collected
    return collected


# Whether this process has had plaintext in memory (an action ran sops, or a base config was decrypted):
# before that, no value of an encrypted file can be in any message, and a failure decrypts nothing.
_TOUCHED = [False]


def touched_plaintext(root: Path | None = None) -> bool:
    """Whether a secret value from an encrypted file can be in this process's messages."""
    return _TOUCHED[0] or len(rendering.secrets_seen(Path.cwd() if root is None else root)) > 0


def redacted(text: str, full: bool = True, root: Path | None = None) -> str:
    """``text`` with every known secret of the run replaced by ``(secret)`` (see :func:`known_secrets`).

    ``full`` is honoured once the process had plaintext in memory (:func:`touched_plaintext`).
    """
    if not text:
        return text
    try:
        return redact(text, known_secrets(root, full=full and touched_plaintext(root)))
    except Exception:
        return "(a message was withheld: it could not be checked for secrets)"


def say(message: str) -> None:
    """A user-facing line (stderr: doit captures an action's stdout), redacted."""
    print(redacted(message), file=sys.stderr, flush=True)


class Lines:
    """An action's report lines: printed by the reporter on success, to stderr before a failure's line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def flush_to_stderr(self) -> None:
        """Print what was collected (the steps done before a failure)."""
        for line in self.lines:
            say(f"  {line}")  # say() redacts


def os_error_line(error: OSError, root: Path | None = None) -> str:
    """An OSError as one line naming the file (relative to the repository when inside it)."""
    name = error.filename
    reason = error.strerror or error.__class__.__name__
    if name:
        if root is not None:
            with contextlib.suppress(ValueError, OSError):
                name = Path(name).resolve().relative_to(root.resolve()).as_posix()
        return f"{name}: {reason}"
    return reason


def action(func: Callable[..., Any], *, writes: bool = False, reveals: bool = False) -> Callable[..., Any]:
    """Wrap ``func`` as a doit action (see the module docstring).

    ``writes``: merge journaled ledger entries before running. ``reveals``: the action handles
    decrypted content without running sops in this process (the drill's clean-room workers), so its
    failure is redacted against every secret. A ``func`` with an ``emit`` parameter gets a
    :class:`Lines` collector, whose lines become the report's.
    """
    signature = inspect.signature(func)
    wants_emit = "emit" in signature.parameters

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = Path.cwd()
        runs = sops.runs_in_this_thread()
        lines = Lines()
        if wants_emit:
            kwargs["emit"] = lines
        try:
            if writes:
                journal.flush_ledger(root)
            result = func(*args, **kwargs)
        except PipelineError as error:
            _note_plaintext(runs, reveals)
            lines.flush_to_stderr()
            return TaskFailed(redacted(str(error), root=root))
        except OSError as error:
            _note_plaintext(runs, reveals)
            lines.flush_to_stderr()
            return TaskFailed(redacted(os_error_line(error, root), root=root))
        except KeyboardInterrupt:
            lines.flush_to_stderr()
            return TaskFailed("interrupted: every artefact is whole (each is replaced atomically); run it again")
        _note_plaintext(runs, reveals)
        values = dict(result) if isinstance(result, dict) else {}
        # Report lines of a success: against what the process knows already (a promotion's lines name
        # nodes and files; the tasks that print decrypted content redact it fully themselves).
        values["lines"] = [redacted(str(line), full=False, root=root) for line in [*lines.lines,
                                                                                  *values.get("lines", [])]]
        values["sops_runs"] = sops.runs_in_this_thread() - runs
        return values

    # doit passes an action the task options its signature names: hide `emit`, which the wrapper supplies.
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "emit"])
    return wrapper


def _note_plaintext(runs_before: int, reveals: bool) -> None:
    if reveals or sops.runs_in_this_thread() > runs_before:
        _TOUCHED[0] = True


def failing(basename: str, error: PipelineError, doc: str) -> TaskDict:
    """A task that reports bad input: the graph cannot be built from a broken inventory."""
    return {"basename": basename, "doc": doc, "actions": [lambda: TaskFailed(redacted(str(error)))], "verbosity": 2}
