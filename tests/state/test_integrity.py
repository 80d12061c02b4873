"""Committed data is checked before it is trusted; writes are whole or fail; nothing cut short is encrypted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.sops import runner as sops
from pipeline.state import git
from pipeline.state.integrity import verify_ciphertext
from pipeline.state.ledger import (
    Ledger,
    atomic_write,
    canonical,
    confined_artefact,
    is_artefact_path,
    keyed_digest,
    parse_ledger,
    write_all,
)
from pipeline.talos.baseconfig import dump_documents
from tests.conftest import Repo

# --- the ledger's schema -------------------------------------------------------------------


def _ledger(**changes: object) -> str:
    data: dict[str, object] = {"version": 1, "nodes": {"cp1": {"artefact": "encrypted/c-cp1.encrypted.yaml",
                                                               "intent": "sha256:1", "inputs": ["a sha256:2"]}},
                               "bases": {"secrets": "sha256:3"}, "rotations": [{"rotation": 1, "finished": "x"}]}
    data.update(changes)
    return json.dumps(data)


def test_a_well_formed_ledger_parses() -> None:
    record = parse_ledger(_ledger())
    assert record.nodes["cp1"]["intent"] == "sha256:1" and record.rotations[0]["rotation"] == 1


@pytest.mark.parametrize("changes, field", [
    ({"nodes": 5}, "nodes must be an object"),
    ({"nodes": {"cp1": "encrypted/x"}}, "nodes.cp1 must be an object"),
    ({"nodes": {"cp1": {"artefact": "encrypted/../../../home/u/.config/sops/age/keys.txt"}}}, "nodes.cp1.artefact"),
    ({"nodes": {"cp1": {"artefact": "/etc/passwd"}}}, "nodes.cp1.artefact"),
    ({"nodes": {"cp1": {"artefact": "encrypted/sub/x.encrypted.yaml"}}}, "nodes.cp1.artefact"),
    ({"nodes": {"cp1": {"artefact": 7}}}, "nodes.cp1.artefact"),
    ({"nodes": {"cp1": {"inputs": "x"}}}, "nodes.cp1.inputs must be a list of strings"),
    ({"nodes": {"cp1": {"rendered": ["x"]}}}, "nodes.cp1.rendered must be a string"),
    ({"bases": []}, "bases must be an object"),
    ({"bases": {"secrets": 1}}, "bases.secrets must be a string"),
    ({"rotations": 5}, "rotations must be a list"),
    ({"rotations": ["x"]}, "rotations[0] must be an object"),
    ({"rotations": [{"rotation": "1"}]}, "rotations[0].rotation must be a number"),
    ({"rotations": [{"artefact": "encrypted/secrets.encrypted.yaml", "from": 1}]}, "rotations[0].from"),
    ({"rotations": [{"rotation": 1, "artefact": "encrypted/../x.encrypted.yaml"}]}, "rotations[0].artefact"),
])
def test_a_malformed_ledger_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_ledger(_ledger(**changes))
    message = str(caught.value)
    assert message.startswith("encrypted/ledger.json: malformed ledger: ") and field in message
    assert "\n" not in message


def test_a_deeply_nested_ledger_is_one_line() -> None:
    with pytest.raises(PipelineError, match=r"encrypted/ledger\.json"):
        parse_ledger('{"version": 1, "nodes": ' + "[" * 100000 + "]" * 100000 + "}")


@pytest.mark.parametrize("path, ok", [
    ("encrypted/talos-kube-cp1.encrypted.yaml", True),
    ("encrypted/secrets.encrypted.yaml", True),
    ("encrypted/../cluster.yaml", False),
    ("encrypted/../x.encrypted.yaml", False),
    ("encrypted//x.encrypted.yaml", False),
    ("encrypted/./x.encrypted.yaml", False),
    ("encrypted/.x.encrypted.yaml", False),
    ("encrypted/x.yaml", False),
    ("rendered/x.encrypted.yaml", False),
    ("/encrypted/x.encrypted.yaml", False),
])
def test_only_an_artefact_name_inside_encrypted_is_an_artefact_path(path: str, ok: bool) -> None:
    assert is_artefact_path(path) is ok


def test_confinement_refuses_symlinks_and_a_linked_folder(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    (root / "encrypted").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.encrypted.yaml").write_text("victim")
    (root / "encrypted" / "a.encrypted.yaml").write_text("mine")
    (root / "encrypted" / "b.encrypted.yaml").symlink_to(outside / "x.encrypted.yaml")
    (root / "encrypted" / "c.encrypted.yaml").mkdir()
    assert confined_artefact(root, "encrypted/a.encrypted.yaml") == root / "encrypted" / "a.encrypted.yaml"
    assert confined_artefact(root, "encrypted/b.encrypted.yaml") is None  # a symlink
    assert confined_artefact(root, "encrypted/c.encrypted.yaml") is None  # not a regular file
    assert confined_artefact(root, "encrypted/missing.encrypted.yaml") is None
    linked = tmp_path / "linked"
    (linked).mkdir()
    (linked / "encrypted").symlink_to(outside)
    assert confined_artefact(linked, "encrypted/x.encrypted.yaml") is None  # encrypted/ itself leads out


# --- writes --------------------------------------------------------------------------------


def test_atomic_write_is_whole_synced_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.encrypted.yaml"
    target.write_bytes(b"old")
    atomic_write(target, b"x" * 100_000, durable=False)
    assert target.read_bytes() == b"x" * 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["a.encrypted.yaml"]


def test_write_all_refuses_a_pipe_that_takes_nothing() -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        with pytest.raises(OSError):  # EPIPE: a short write is an error, never a success
            write_all(write, b"data")
    finally:
        os.close(write)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Path:  # type: ignore[misc]
    """A 64 KiB tmpfs: a real file system that fills up (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a size-limited tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"tmpfs mounts are not allowed here: {result.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_fails_the_write_and_keeps_the_old_file(tiny_disk: Path) -> None:
    target = tiny_disk / "a.encrypted.yaml"
    target.write_bytes(b"old whole artefact\n")
    with pytest.raises(OSError) as caught:
        atomic_write(target, b"y" * 200_000)  # three times the disk
    assert "No space left" in str(caught.value) or caught.value.errno == 28
    assert target.read_bytes() == b"old whole artefact\n"
    assert [p.name for p in tiny_disk.iterdir()] == ["a.encrypted.yaml"]


# --- what sops encrypted -------------------------------------------------------------------


DOCS = [{"version": "v1alpha1", "machine": {"token": "t0k3n", "type": "worker"},
         "cluster": {"id": "i", "secret": "s3cr3t"}},
        {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "w1"}]


def _encrypted(repo: Repo, text: str) -> bytes:
    old = dict(os.environ)
    os.environ.update(repo.env)
    try:
        return sops.encrypt(text.encode(), "encrypted/talos-kube-w1.encrypted.yaml", repo.path)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_whole_plaintext_and_whole_ciphertext_pass(promoted: Repo, tmp_path: Path) -> None:
    text = dump_documents(DOCS)
    plain = tmp_path / "w1.yaml"
    plain.write_text(text)
    shape = {"encrypted_regex": None}
    verify_ciphertext(_encrypted(promoted, text), "encrypted/talos-kube-w1.encrypted.yaml", plain,
                      "rendered/w1.yaml", keyed_digest(DOCS, canonical(shape)), shape)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_plaintext_cut_short_is_never_encrypted_over_an_artefact(promoted: Repo, tmp_path: Path,
                                                                     cut: float) -> None:
    text = dump_documents(DOCS)
    # Cut at a line end: what is left still parses, only the render's digest can tell.
    short = text[: text.rindex("\n", 0, int(len(text) * cut)) + 1]
    plain = tmp_path / "w1.yaml"
    plain.write_text(short)
    digest = keyed_digest(DOCS, b"null")
    with pytest.raises(PipelineError, match=r"rendered/w1\.yaml: rendered plaintext"):
        verify_ciphertext(_encrypted(promoted, short), "encrypted/talos-kube-w1.encrypted.yaml", plain,
                          "rendered/w1.yaml", digest, None)
    # Without a digest (no cluster secret), a file that does not end where the writer ended is caught.
    plain.write_text(text[:-10])
    with pytest.raises(PipelineError, match="incomplete"):
        verify_ciphertext(_encrypted(promoted, text), "encrypted/x.encrypted.yaml", plain, "rendered/w1.yaml")


def test_a_ciphertext_cut_short_is_refused(promoted: Repo, tmp_path: Path) -> None:
    text = dump_documents(DOCS)
    plain = tmp_path / "w1.yaml"
    plain.write_text(text)
    ciphertext = _encrypted(promoted, text)
    for cut in (len(ciphertext) // 2, len(ciphertext) - 40):
        with pytest.raises(PipelineError, match=r"encrypted/talos-kube-w1\.encrypted\.yaml: sops output"):
            verify_ciphertext(ciphertext[:cut], "encrypted/talos-kube-w1.encrypted.yaml", plain, "rendered/w1.yaml")


# --- git history ---------------------------------------------------------------------------


def test_last_revision_holding_finds_head_then_history(promoted: Repo) -> None:
    path = "encrypted/secrets.encrypted.yaml"
    assert git.last_revision_holding(promoted.path, path) == "HEAD"
    promoted.git("rm", "-q", path)
    promoted.git("commit", "-qm", "gone")
    rev = git.last_revision_holding(promoted.path, path)
    assert rev is not None and rev.endswith("^") and len(rev) == 13
    assert promoted.git("cat-file", "-t", f"{rev}:{path}").strip() == "blob"
    assert git.last_revision_holding(promoted.path, "encrypted/never.encrypted.yaml") is None
    assert git.last_revision_holding(promoted.path.parent, path) is None  # not a repository


def test_an_empty_ledger_is_still_a_ledger() -> None:
    assert parse_ledger('{"version": 1}') == Ledger()
