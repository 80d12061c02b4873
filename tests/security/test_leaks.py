"""Issue 14's leaks, each a test: error texts, a secret copied to a plain field, sandbox escapes, symlinks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import Repo
from tests.security.secrets_of import leaks, needles, secret_values


@pytest.fixture
def secrets(promoted: Repo) -> list[str]:
    return needles(secret_values(promoted))


def run(repo: Repo, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = repo.doit(*args, env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.returncode, output


def patch(repo: Repo, name: str, text: str) -> None:
    (repo.path / "patches" / name).write_text(text)


TYPO = "- op: add\n  path: /cluster/apiserver/extraArgs\n  value: {feature-gates: X=true}\n"


def test_a_json6902_typo_names_the_path_not_the_parent_mapping(promoted: Repo, secrets: list[str]) -> None:
    patch(promoted, "cp1.yaml", TYPO)
    for args in (("-v", "2"), (), ("verify",), ("plan",), ("plan", "--format", "markdown")):
        code, output = run(promoted, *args)
        assert code == 1, output
        assert "/cluster/apiserver/extraArgs" in output and "patches/cp1.yaml" in output, output
        assert leaks(output, secrets) == [], (args, leaks(output, secrets))


def test_a_test_op_does_not_print_the_tested_value(promoted: Repo, secrets: list[str]) -> None:
    patch(promoted, "cp1.yaml", "- op: test\n  path: /cluster/secret\n  value: guess\n"
                                "- op: test\n  path: /machine/token\n  value: {a: b}\n")
    code, output = run(promoted)
    assert code == 1 and "test failed" in output and "/cluster/secret" in output, output
    assert leaks(output, secrets) == []


@pytest.mark.parametrize("target", ["/machine/type", "/version", "/cluster/controlPlane/endpoint"])
def test_a_secret_copied_into_a_validated_field_is_not_printed(promoted: Repo, secrets: list[str],
                                                               target: str) -> None:
    patch(promoted, "cp1.yaml", f"- op: copy\n  from: /cluster/secret\n  path: {target}\n")
    code, output = run(promoted)
    assert code == 1 and ("patches/cp1.yaml" in output or "node cp1" in output), output
    assert leaks(output, secrets) == []


# Annotations, not labels: Talos refuses a label value that is not a Kubernetes name (a base64 secret is not),
# before the secret guard would see it; an annotation's value is free text.
@pytest.mark.parametrize("target", ["/machine/network/hostname", "/machine/nodeAnnotations/leak"])
def test_a_secret_copied_into_a_plain_field_is_refused(promoted: Repo, secrets: list[str], target: str) -> None:
    labels = "- op: add\n  path: /machine/nodeAnnotations\n  value: {rack: r1}\n" if "nodeAnnotations" in target else ""
    patch(promoted, "w1.yaml", f"{labels}- op: copy\n  from: /cluster/secret\n  path: {target}\n")
    before = promoted.artefacts()
    code, output = run(promoted)
    assert code == 1, output
    field = target.strip("/").replace("/", ".")
    line = next(line for line in output.splitlines() if "FAILED" in line)
    assert "patches/w1.yaml" in line and field in line and "refused" in line, line
    assert promoted.artefacts() == before  # nothing written, nothing staged
    assert promoted.git("diff", "--cached", "--name-only") == ""
    assert leaks(output, secrets) == []
    code, output = run(promoted, "plan")  # plan still shows what would change, redacted
    assert "(secret" in output and leaks(output, secrets) == [], output


ESCAPE = "{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}\nmachine: {{}}\n"


@pytest.mark.parametrize("task", ["check", "graph", "plan", ""])
def test_a_template_cannot_run_commands(promoted: Repo, tmp_path: Path, task: str) -> None:
    marker = tmp_path / "pwned"
    patch(promoted, "w1.yaml", ESCAPE.format(marker=marker))
    code, output = run(promoted, *([task] if task else []), *(["--formats", "none"] if task == "graph" else []))
    assert not marker.exists(), output
    if task != "graph":
        assert code == 1, output
    assert "Traceback" not in output


def test_a_template_cannot_reach_the_age_key_past_the_redaction(promoted: Repo, secrets: list[str]) -> None:
    # The key is not in the template context, and every way to Python's objects (open, os) is closed.
    key = promoted.home / ".config" / "sops" / "age" / "keys.txt"
    reach = f"cycler.__init__.__globals__.__builtins__.open('{key}').read().split()[-1]"
    patch(promoted, "w1.yaml", f"machine:\n  nodeLabels:\n    a: \"{{{{ {reach} | lower }}}}\"\n"
                               f"    b: \"{{{{ {reach} | reverse | join('') }}}}\"\n")
    for args in ((), ("plan",)):
        code, output = run(promoted, *args)
        assert code == 1 and "patches/w1.yaml" in output, output
        assert leaks(output, secrets) == []


def test_template_recursion_fails_fast_with_file_and_line(promoted: Repo) -> None:
    patch(promoted, "w1.yaml", "machine: {}\n{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}\n")
    code, output = run(promoted)
    assert code == 1 and "patches/w1.yaml:" in output and "template error" in output, output


def test_a_symlinked_patch_pointing_at_the_age_key_is_refused(promoted: Repo, secrets: list[str]) -> None:
    target = promoted.path / "patches" / "w1.yaml"
    target.unlink()
    target.symlink_to(promoted.home / ".config" / "sops" / "age" / "keys.txt")
    for args in ((), ("plan",), ("check",)):
        code, output = run(promoted, *args)
        assert code == 1, output
        assert leaks(output, secrets) == []
    code, output = run(promoted)
    assert "patches/w1.yaml" in output and "outside patches/" in output, output


# A stand-in talosctl that records where the base config it was handed really lives (a kill at this
# moment would leave that file there).
STAND_IN = ("#!/bin/sh\ncase \"$1 $2\" in\n"
            "  \"machineconfig patch\") readlink -f \"$3\" >> \"$TALOSCTL_LOG\"; cat \"$3\";;\n"
            "  *) exit 0;;\nesac\n")


def test_talosctl_renderer_never_writes_through_a_symlinked_rendered(promoted: Repo, tmp_path: Path,
                                                                     secrets: list[str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "talosctl").write_text(STAND_IN)
    (bin_dir / "talosctl").chmod(0o755 | stat.S_IXUSR)
    inventory = promoted.path / "cluster.yaml"
    inventory.write_text(inventory.read_text() + "renderer: talosctl\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (promoted.path / "rendered").symlink_to(outside)
    patch(promoted, "w1.yaml", (promoted.path / "patches" / "w1.yaml").read_text() + "  install:\n    wipe: true\n")
    log = tmp_path / "talosctl.log"
    env = dict(promoted.env, PATH=f"{bin_dir}{os.pathsep}{promoted.env['PATH']}", TALOSCTL_LOG=str(log))
    code, output = run(promoted, env=env)
    assert code == 1 and "symlink" in output, output
    written = log.read_text().split() if log.exists() else []
    assert not [path for path in written if path.startswith(str(outside.resolve()))], written
    assert list(outside.rglob("*")) == []
    assert leaks(output, secrets) == []
