"""The talosctl backend's success path, with a stand-in `talosctl` on PATH (talosctl is in no registry here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.promote import talosctl

# A stand-in that behaves as talosctl does for the calls the backend makes: it records its
# arguments, and `machineconfig patch` prints the base with each patch file appended.
STAND_IN = """#!/bin/sh
printf '%s\\n' "$*" >> "$TALOSCTL_LOG"
case "$1 $2" in
  "machineconfig patch")
    base="$3"; shift 3; out=""
    cat "$base"
    while [ $# -gt 0 ]; do
      case "$1" in --patch) f="${2#@}"; printf '# from %s\\n' "$(basename "$f")"; cat "$f"; shift 2;;
                   *) shift;; esac
    done;;
  "validate --config") [ -s "$3" ] || { echo "empty config" >&2; exit 1; };;
  "gen secrets") echo "cluster: {id: x}" > "$4";;
  *) echo "unexpected: $*" >&2; exit 2;;
esac
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "talosctl"
    program.write_text(STAND_IN)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "talosctl.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TALOSCTL_LOG", str(log))
    return log


def test_patch_hands_talosctl_each_patch_in_order_and_removes_the_plaintext(tmp_path: Path, stand_in: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    out = talosctl.patch(root, "version: v1alpha1\n", [("patches/a.yaml", "a: 1\n"), ("patches/b.yaml", "b: 2\n")])
    assert out.index("a: 1") < out.index("b: 2") and out.startswith("version: v1alpha1")
    assert "machineconfig patch" in stand_in.read_text()
    # The private folder under rendered/ is gone: no plaintext left behind.
    assert not list((root / "rendered").glob(".talosctl-*"))
    assert (root / "rendered").stat().st_mode & 0o777 == 0o700


def test_validate_and_gen_secrets(tmp_path: Path, stand_in: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: v1alpha1\n")
    talosctl.validate(config, "node cp1")
    assert talosctl.gen_secrets(tmp_path) == "cluster: {id: x}\n"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(PipelineError) as caught:
        talosctl.validate(empty, "node cp1")
    assert str(caught.value) == "node cp1: talosctl validate failed: empty config"


def test_without_talosctl_the_error_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PipelineError) as caught:
        talosctl.require()
    assert "cluster.yaml" in str(caught.value) and "talosctl is not on PATH" in str(caught.value)
