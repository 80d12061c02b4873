"""Property (issue 16): patch -> render -> real `sops --encrypt` -> real `sops --decrypt` -> parse == rendered.

Patches are written as a user types them, with adversarial plain scalars (the YAML 1.1 / 1.2 differences:
``0o17``, ``017``, ``0x1F``, ``1_000``, ``+1``, ``.5``, ``1e3``, ``yes``, ``~``, ``2024-06-01``, ``12:30:00``,
``<<`` ...) as keys, values and list items, in string-typed fields (labels, sysctls, extraArgs, certSANs) and in
free-form ones (``machine.pods``, where Go keeps every type). A render either refuses the patch in one line
(``PipelineError``: what Talos refuses) or its text, through the real sops binary and back, parses (go-yaml v3
rules) to exactly the rendered documents.

Modest by default (about 25 examples, two sops runs each); set ``FIDELITY_EXAMPLES`` for more.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.sops.identities import new_identity_text
from pipeline.sops.runner import sops_binary
from pipeline.talos.baseconfig import dump_documents
from pipeline.talos.patching import apply_patches_traced, load_patch
from pipeline.talos.validation import check_node_config, check_patches
from pipeline.talos.yaml import load_documents

STABILITY = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures" / "stability"
EXAMPLES = int(os.environ.get("FIDELITY_EXAMPLES", "25"))

ADVERSARIAL = [
    "0o17", "017", "0x1F", "0b101", "1_000", "+1", "-0", ".5", "1.", "1e3", "1E3", "-1e-3", "1.0", ".inf", "-.Inf",
    ".nan", "yes", "no", "on", "off", "y", "n", "Y", "N", "true", "True", "FALSE", "~", "null", "Null", "NULL",
    "2024-06-01", "2024-06-01T12:30:00Z", "12:30:00", "1:20", "190:20:30", "<<", "0", "00", "08", "0.0", "1_0.5",
    "+.5", "0x_1F", "9223372036854775807", "18446744073709551616", "1e400", "abc", "a.b", "latest", "v1.2.3",
]
PLAIN_TEXT = st.text(alphabet="abcxyz0123456789._+-", min_size=1, max_size=8).filter(
    lambda text: text[0] not in "-" and not text.endswith(".")
)
SCALAR_TEXT = st.one_of(st.sampled_from(ADVERSARIAL), PLAIN_TEXT)
# What a user writes for a scalar: plain, or double-quoted (always a string).
WRITTEN = st.one_of(SCALAR_TEXT, SCALAR_TEXT.map(lambda text: f'"{text}"'))
# Node labels are Kubernetes names and values: Talos refuses others (pkg/machinery/labels/validate.go), so
# labels draw only the adversarial texts that are valid label text (``0x1F``, ``1e3``, ``no``, ``2024-06-01`` ...).
LABEL_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_TEXT = SCALAR_TEXT.filter(lambda text: LABEL_RE.fullmatch(text) is not None)
LABEL_KEYS = st.lists(LABEL_TEXT.filter(lambda text: text not in ("null", "Null", "NULL")),
                      min_size=1, max_size=4, unique=True)
LABEL_WRITTEN = st.one_of(LABEL_TEXT, LABEL_TEXT.map(lambda text: f'"{text}"'))
# Null keys are refused by the loader (Talos decodes keys into strings); "<<" is a merge key.
KEYS = st.lists(SCALAR_TEXT.filter(lambda text: text not in ("<<", "~", "null", "Null", "NULL")),
                min_size=1, max_size=4, unique=True)


@st.composite
def patches(draw: st.DrawFn) -> str:
    """A strategic merge patch's text, scalars written as typed by hand."""
    lines = ["machine:", "  install:", "    disk: /dev/sda"]  # talosctl's base has none; Talos needs one

    def mapping(field: str, indent: str, keys: Any = KEYS, values: Any = WRITTEN) -> None:
        lines.append(f"{indent}{field}:")
        for key in draw(keys):
            lines.append(f"{indent}  {key}: {draw(values)}")

    mapping("nodeLabels", "  ", LABEL_KEYS, LABEL_WRITTEN)
    mapping("sysctls", "  ")
    lines.append("  kubelet:")
    mapping("extraArgs", "    ")
    lines.append("  certSANs:")
    lines.extend(f"    - {draw(WRITTEN)}" for _ in range(draw(st.integers(1, 3))))
    lines.append("  pods:")
    keys = draw(KEYS)
    for number, key in enumerate(keys):
        lines.append(f"    {'- ' if number == 0 else '  '}{key}: {draw(WRITTEN)}")
    lines.append("      items:")
    lines.extend(f"        - {draw(WRITTEN)}" for _ in range(draw(st.integers(1, 3))))
    return "\n".join(lines) + "\n"


def same(left: Any, right: Any) -> bool:
    """Equal as Go values: bools apart from numbers, NaN equal to NaN, an integral float equal to its int
    (sops writes a float below 1e6 without its decimal point)."""
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(same(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, bool) or isinstance(right, bool) or isinstance(left, str) or isinstance(right, str):
        return type(left) is type(right) and left == right
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    return bool(left == right)


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("age")
    text, public = new_identity_text()
    key = folder / "keys.txt"
    key.write_text(text)
    key.chmod(0o600)
    return key, public


def sops(args: list[str], key: Path, cwd: Path) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "SOPS_AGE_KEY_FILE": str(key)}
    result = subprocess.run([sops_binary(), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("version", ["v1.11", "v1.13"])
def test_patch_render_sops_round_trip(version: str, age_key: tuple[Path, str], tmp_path: Path) -> None:
    key, public = age_key
    base = [doc for doc in load_documents((STABILITY / version / "base-worker.yaml").read_text(), "base")
            if doc is not None]
    outcomes = {"refused": 0, "round-tripped": 0}
    reasons: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(text=patches())
    def run(text: str) -> None:
        try:
            patch = load_patch(text, "patches/p.yaml")
            check_patches([patch], version)
            merged, provenance = apply_patches_traced(base, [patch])
            rendered = check_node_config(merged, "n1", version, provenance)
            plain = dump_documents(rendered)
        except PipelineError as error:
            assert "\n" not in str(error) and str(error).startswith(("patches/p.yaml", "node n1")), str(error)
            outcomes["refused"] += 1
            reasons.append(str(error))
            return
        assert same(load_documents(plain, "rendered"), rendered)  # our own reading first
        path = tmp_path / "n1.yaml"
        path.write_text(plain)
        encrypted = sops(["--encrypt", "--age", public, "--input-type", "yaml", "--output-type", "yaml",
                          str(path)], key, tmp_path)
        (tmp_path / "n1.enc.yaml").write_text(encrypted)
        decrypted = sops(["--decrypt", "--input-type", "yaml", "--output-type", "yaml", "n1.enc.yaml"],
                         key, tmp_path)
        assert same(load_documents(decrypted, "decrypted"), rendered), text
        outcomes["round-tripped"] += 1

    run()
    # The property says something only if most examples got through to sops.
    assert outcomes["round-tripped"] >= EXAMPLES // 2, (outcomes, reasons)
