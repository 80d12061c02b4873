"""`doit verify`: with the key, every artefact opens (MAC intact) and holds what intent renders today."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Repo
from tests.guard.test_guard import edit, keyless


def verify(repo: Repo, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = repo.doit("verify", env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.returncode, output


def tamper(path: Path) -> None:
    """Flip one character of the first ENC[] value's ciphertext."""
    lines = path.read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if "ENC[AES256_GCM,data:" in line and not line.lstrip().startswith("mac:"):
            head, _, tail = line.partition("data:")
            lines[index] = head + "data:" + ("B" if tail[0] != "B" else "C") + tail[1:]
            break
    path.write_text("".join(lines))


def test_verify_passes_on_a_promoted_repo(promoted: Repo) -> None:
    code, output = verify(promoted)
    assert code == 0, output
    assert "6 of 6 nodes match" in output
    assert not [run for run in promoted.sops_runs() if run.startswith("--encrypt")]
    assert promoted.git("status", "--porcelain") == ""
    assert not (promoted.path / "rendered").exists()


def test_tampered_value_names_the_file(promoted: Repo) -> None:
    tamper(promoted.path / "encrypted" / "talos-kube-w2.encrypted.yaml")
    code, output = verify(promoted)
    assert code == 1, output
    lines = [line for line in output.splitlines() if "encrypted/talos-kube-w2.encrypted.yaml" in line]
    assert lines and "MAC mismatch" in lines[0], output
    assert "node w1" not in output


def test_tampered_base_is_named_once(promoted: Repo) -> None:
    tamper(promoted.path / "encrypted" / "worker.encrypted.yaml")
    code, output = verify(promoted)
    assert code == 1, output
    assert sum("encrypted/worker.encrypted.yaml: MAC mismatch" in line for line in output.splitlines()) == 1, output


def test_artefact_promoted_from_different_intent_names_node_and_path(promoted: Repo) -> None:
    """Promote an edit, then put the old intent back without promoting: the artefact has drifted."""
    patch = promoted.path / "patches" / "cp2.yaml"
    original = patch.read_text()
    patch.write_text(original + "  install:\n    wipe: true\n")
    promoted.doit(check=True)
    patch.write_text(original)
    code, output = verify(promoted)
    assert code == 1, output
    lines = [line for line in output.splitlines() if "node cp2" in line]
    assert lines and "machine.install.wipe" in lines[0], output
    assert "node cp1" not in output


def test_drift_of_a_secret_field_names_the_path_not_the_value(promoted: Repo) -> None:
    """An artefact swapped for another node's: paths that differ, never the values there."""
    source = promoted.path / "encrypted" / "talos-kube-cp1.encrypted.yaml"
    (promoted.path / "encrypted" / "talos-kube-cp2.encrypted.yaml").write_bytes(source.read_bytes())
    code, output = verify(promoted)
    assert code == 1, output
    line = next(line for line in output.splitlines() if "node cp2" in line)
    assert "machine.network.hostname" in line
    assert "cp1" not in line.split("at ", 1)[1]  # the value (cp1's hostname) is not printed


def test_removed_node_and_new_node(promoted: Repo) -> None:
    cluster = promoted.path / "cluster.yaml"
    edit(cluster, "  w3: {role: worker, address: 192.168.1.113}\n", "  w4: {role: worker, address: 192.168.1.114}\n")
    code, output = verify(promoted)
    assert code == 1, output
    assert any("node w4" in line and "no artefact" in line for line in output.splitlines()), output
    assert any("node w3" in line and "not in cluster.yaml" in line for line in output.splitlines()), output


def test_verify_without_a_key_is_one_clear_line(promoted: Repo) -> None:
    code, output = verify(promoted, env=keyless(promoted))
    assert code == 1, output
    failures = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 1 and "age key" in failures[0], output
