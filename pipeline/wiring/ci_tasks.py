"""The tasks CI and reviewers call by name: check, verify, plan, hooks.

None of them writes to the repository's state: no rendered/ file, no artefact, no ledger entry.
Findings are printed one per line (stderr); the task then fails with exit 1 and a one-line summary.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError
from pipeline.wiring import session as sessions
from pipeline.wiring.action import TaskDict, action, redacted, say

# dodo.py imports this module on every doit run, a promotion or a no-op included: the modules
# behind these tasks (plan, verify, hooks) are imported by their actions, only when called.
PLAN_FORMATS = ("text", "markdown")  # pipeline.review.plan.FORMATS; tests keep the two in step


def _fail_with(findings: list[str], what: str) -> None:
    """One line per finding, then a failure: exit 1 with a one-line message, never a traceback."""
    if len(findings) == 1:
        raise PipelineError(findings[0])
    for line in findings:
        say(line)
    raise PipelineError(f"{len(findings)} {what} (one per line above)")


def task_check() -> TaskDict:
    """Keyless guard (no key, no network): nothing plaintext, every secret ENC[...], every artefact current."""

    def run() -> dict[str, Any]:
        session = sessions.current()
        inventory = session.inventory()  # parsed once already, while doit loaded the tasks
        known = None if isinstance(inventory, PipelineError) else inventory
        from pipeline.guard import scan as guard

        findings = guard.check(session.root, stale=True, inventory=known)
        if findings:
            _fail_with(findings, "problems")
        return {"lines": ["check: safe and current (no key used)"]}

    return {"actions": [action(run)], "doc": task_check.__doc__, "verbosity": 2}


def task_verify() -> TaskDict:
    """With a key: every artefact decrypts (MAC intact) and matches what its intent renders today."""

    def run() -> dict[str, Any]:
        from pipeline.review.verify import verify

        result = verify(sessions.current().root)
        if result.findings:
            _fail_with(result.findings, "problems")
        return {"lines": [result.summary()]}

    return {"actions": [action(run)], "doc": task_verify.__doc__, "verbosity": 2}


def task_plan() -> TaskDict:
    """What doit would change, per node and field, secrets redacted (--format markdown; --output FILE)."""

    def run(fmt: str, output: str) -> dict[str, Any]:
        from pipeline.review.plan import render_plan
        from pipeline.state.ledger import atomic_write

        # Through the redaction boundary, whatever plan redacted itself: against the identities and every
        # base config this process decrypted (a node plan shows was rendered from its base, so that is
        # known; a plan that changes nothing decrypts nothing, and neither does this).
        text = redacted(render_plan(sessions.current().root, fmt), full=False)
        if not output:
            print(text, end="", flush=True)
            return {}
        atomic_write(sessions.current().root / output, text.encode())
        return {"lines": [f"plan written to {output}"]}

    return {
        "actions": [action(run)],
        "params": [
            {"name": "fmt", "long": "format", "default": "text", "choices": [(name, "") for name in PLAN_FORMATS],
             "help": "text (default) or markdown (for a pull-request comment)"},
            {"name": "output", "long": "output", "default": "", "help": "write the plan to this file"},
        ],
        "doc": task_plan.__doc__,
        "verbosity": 2,
    }


def task_hooks() -> TaskDict:
    """Install the git pre-commit guard (--force replaces a foreign hook; --diff adds the readable-diff driver)."""

    def run(force: bool, diff: bool) -> dict[str, Any]:
        from pipeline.guard import hooks

        lines = [hooks.install(sessions.current().root, force=force)]
        if diff:
            from pipeline.review import textconv

            lines.append(textconv.install(sessions.current().root))
        return {"lines": lines}

    return {
        "actions": [action(run)],
        "params": [{"name": "force", "long": "force", "type": bool, "default": False,
                    "help": "replace an existing pre-commit hook that is not ours (kept as pre-commit.orig)"},
                   {"name": "diff", "long": "diff", "type": bool, "default": False,
                    "help": "also set up the git diff driver: artefacts diff as decrypted documents, "
                            "secrets as keyed digests"}],
        "doc": task_hooks.__doc__,
        "verbosity": 2,
    }
