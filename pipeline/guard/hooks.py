"""`doit hooks`: a git pre-commit hook that runs the keyless guard on what is about to be committed."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.state import git

MARKER = "# talos-promote pre-commit guard"
CONSOLE_SCRIPT = "talos-promote-guard"


def hook_script(python: str | None = None) -> str:
    """The hook: the interpreter that installed it (`python -m pipeline.guard.hook`), else the console script."""
    interpreter = shlex.quote(python or sys.executable)
    return (
        "#!/bin/sh\n"
        f"{MARKER} (installed by `doit hooks`; `doit hooks --force` reinstalls it).\n"
        "# Refuses a commit that would put plaintext secrets or a non-SOPS artefact into git. Needs no key.\n"
        f"PY={interpreter}\n"
        'if [ -x "$PY" ]; then exec "$PY" -m pipeline.guard.hook; fi\n'
        f"if command -v {CONSOLE_SCRIPT} >/dev/null 2>&1; then exec {CONSOLE_SCRIPT}; fi\n"
        f'echo "talos-promote guard: $PY is gone and {CONSOLE_SCRIPT} is not on PATH; '
        'run doit hooks again" >&2\n'
        "exit 1\n"
    )


def _display(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def install(root: Path, force: bool = False) -> str:
    """Install the pre-commit hook; returns what was done, in one line.

    A hook that is not ours is never replaced silently: without ``force`` this refuses and says
    so; with it, the old hook is kept beside the new one as ``pre-commit.orig``.
    """
    if not git.is_repository(root):
        raise PipelineError("not the top of a git repository: nothing to install a hook into")
    path = git.git_path(root, "hooks/pre-commit")
    shown = _display(root, path)
    script = hook_script()
    kept = ""
    if path.is_file() or path.is_symlink():
        current = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        if current == script:
            return f"hooks: the pre-commit guard is already installed ({shown})"
        if MARKER not in current:
            backup = path.with_name("pre-commit.orig")
            if not force:
                raise PipelineError("a pre-commit hook is already installed and it is not ours: left as it is "
                                    f"(doit hooks --force replaces it and keeps it as {backup.name})", path=shown)
            if backup.exists() or backup.is_symlink():
                raise PipelineError(f"{backup.name} exists too: move one of them away first", path=shown)
            os.replace(path, backup)
            kept = f"; your previous hook is kept as {_display(root, backup)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(script, encoding="utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return f"hooks: installed the pre-commit guard at {shown}{kept}"
