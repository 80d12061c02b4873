"""`talos-promote-guard`: the keyless guard as a command, for git and pre-commit hooks (no dodo.py needed).

By default it judges the git index alone, i.e. exactly what the next commit would hold; ``--all``
judges the work tree too and whether every artefact is current (what `doit check` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.guard import scan as guard
from pipeline.state import git

PROG = "talos-promote-guard"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Refuse a commit that would put plaintext Talos secrets, a non-SOPS artefact or conflict "
        "markers into git. Needs no key and no network. Exit 0: safe; 1: findings, one per line."))
    parser.add_argument("--all", action="store_true",
                        help="judge the work tree too, and whether every artefact is current (like doit check)")
    parser.add_argument("--root", type=Path, default=None, help="the repository (default: the one around the cwd)")
    # The pre-commit framework may pass file names; the guard always judges the whole index.
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the guard; print one line per finding on stderr; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        root = args.root or git.toplevel(Path.cwd())
        if root is None:
            if not args.all:
                raise PipelineError("not inside a git repository (use --all to judge a plain folder)")
            root = Path.cwd()
        findings = guard.check(root, stale=args.all, worktree=args.all)
    except PipelineError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    if not findings:
        return 0
    for line in findings:
        print(line, file=sys.stderr)
    what = "problem" if len(findings) == 1 else "problems"
    verdict = "" if args.all else "commit refused: "
    print(f"{PROG}: {verdict}{len(findings)} {what} (the keyless guard of talos-promote)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
