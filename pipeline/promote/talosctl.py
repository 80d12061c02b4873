"""The optional talosctl backend (`renderer: talosctl` in cluster.yaml) and talosctl's validator.

The built-in renderer is the default and the one the test suite proves against Talos's own
fixtures; this backend hands the same work to the real talosctl when the user asks for it.
Every plaintext file it needs lives in a private folder under rendered/ and is removed at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.layout import RENDERED_DIR


def binary() -> str | None:
    """Path of talosctl when it is on PATH."""
    return _which(os.environ.get("PATH", os.defpath))


@lru_cache(maxsize=4)
def _which(search_path: str) -> str | None:
    # Asked once per rendered node: one PATH search per process (and per PATH value) is enough.
    return shutil.which("talosctl", path=search_path)


def require() -> str:
    """talosctl's path, or a one-line error saying the inventory asked for it."""
    path = binary()
    if path is None:
        raise PipelineError("renderer: talosctl is set but talosctl is not on PATH (install it, or remove "
                            "the setting to use the built-in renderer)", path="cluster.yaml")
    return path


@contextlib.contextmanager
def private_folder(root: Path) -> Iterator[Path]:
    """A 0700 scratch folder under rendered/ (never the system temp folder), removed afterwards."""
    parent = root / RENDERED_DIR
    # Plaintext (a whole base config) is never written through a symlink: rendered/ itself, or a
    # component above the scratch folder, could point outside the repository, where no purge reaches.
    if parent.is_symlink():
        raise PipelineError("refusing to write plaintext through a symlink: remove it", path=f"{RENDERED_DIR}/")
    parent.mkdir(mode=0o700, exist_ok=True)
    if parent.stat().st_uid != os.geteuid():
        raise PipelineError("owned by another user: refusing to write plaintext there", path=f"{RENDERED_DIR}/")
    folder = Path(tempfile.mkdtemp(prefix=".talosctl-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to a new file ``path`` with mode 0600 (never through a symlink, never over a file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def run(args: Sequence[str], subject: str, cwd: Path | None = None) -> str:
    """Run talosctl; its failure becomes one line naming ``subject``."""
    result = subprocess.run([require(), *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:300]
        raise PipelineError(f"talosctl {args[0]} failed: {detail}", path=subject)
    return result.stdout


def patch(root: Path, base_text: str, patch_texts: Sequence[tuple[str, str]]) -> str:
    """`talosctl machineconfig patch` of a base config with templated patches, in order."""
    with private_folder(root) as folder:
        base = write_private(folder / "base.yaml", base_text)
        args = ["machineconfig", "patch", str(base)]
        for index, (_source, text) in enumerate(patch_texts):
            args += ["--patch", f"@{write_private(folder / f'patch-{index}.yaml', text)}"]
        return run([*args, "--output", "-"], patch_texts[-1][0] if patch_texts else "base config")


def validate(path: Path, subject: str) -> None:
    """`talosctl validate --mode metal` of a rendered file."""
    run(["validate", "--config", str(path), "--mode", "metal"], subject)


def gen_secrets(root: Path) -> str:
    """A secrets bundle from `talosctl gen secrets` (the text, kept off the system temp folder)."""
    with private_folder(root) as folder:
        run(["gen", "secrets", "--output-file", str(folder / "secrets.yaml")], "talosctl gen secrets")
        return (folder / "secrets.yaml").read_text(encoding="utf-8")


def gen_config(root: Path, bundle_text: str, name: str, endpoint: str, talos_version: str,
               kubernetes_version: str) -> dict[str, str]:
    """Base configs and talosconfig from `talosctl gen config --with-secrets`: {file name: text}."""
    with private_folder(root) as folder:
        secrets = write_private(folder / "secrets.yaml", bundle_text)
        contract = ".".join(talos_version.lstrip("v").split(".")[:2])
        run(["gen", "config", name, endpoint, "--with-secrets", str(secrets), "--talos-version", f"v{contract}",
             "--kubernetes-version", kubernetes_version.lstrip("v"), "--output-dir", str(folder / "out")],
            "talosctl gen config")
        return {path.name: path.read_text(encoding="utf-8") for path in (folder / "out").iterdir()}
