"""Value-level minimal diffs (issue 19): a rewritten artefact changes only the values that changed.

With the in-process engine and with ``PROMOTE_SOPS_ENGINE=binary`` (``sops edit`` then keeps the
data key), real sops and git: the exact diff of a plain change, a secret change, a label added and
a label removed; stock sops still decrypts every artefact; the diff driver shows readable history.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import Repo

ARTEFACT = "encrypted/talos-kube-cp1.encrypted.yaml"
PATCH = "patches/cp1.yaml"
TOKEN = "abcdef.0123456789abcdef"


def _changed_lines(repo: Repo) -> list[str]:
    """The +/- lines of the staged diff of cp1's artefact, as bytes in git (no diff driver)."""
    diff = repo.git("diff", "--cached", "--no-textconv", "-U0", "--", ARTEFACT)
    return [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def _shape(lines: list[str]) -> list[str]:
    """Lines with their ciphertext and timestamp masked, for an exact comparison."""
    masked = [re.sub(r"ENC\[AES256_GCM,[^\]]*\]", "ENC[...]", line) for line in lines]
    return [re.sub(r'lastmodified: "[^"]*"', 'lastmodified: "..."', line) for line in masked]


def _edit_patch(repo: Repo, old: str, new: str) -> None:
    path = repo.path / PATCH
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _promote(repo: Repo) -> str:
    """One `doit` after the clock moved past the artefact's lastmodified second (so it changes, as in life)."""
    stamp = re.search(r'lastmodified: "([^"]+)"', (repo.path / ARTEFACT).read_text())
    assert stamp is not None
    while time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) <= stamp[1]:
        time.sleep(0.05)
    result = repo.doit(check=True)
    return result.stdout + result.stderr


META = ['-    lastmodified: "..."', '-    mac: ENC[...]', '+    lastmodified: "..."', '+    mac: ENC[...]']


@pytest.mark.parametrize("mode", ["engine", "binary"])
def test_each_change_is_its_own_lines_plus_lastmodified_and_mac(promoted: Repo, mode: str) -> None:
    repo = promoted
    if mode == "binary":
        repo.env["PROMOTE_SOPS_ENGINE"] = "binary"
    else:
        repo.env.pop("PROMOTE_SOPS_ENGINE", None)
    before = repo.artefacts()

    # A plain value: the hostname.
    _edit_patch(repo, "hostname: {{ node.name }}", "hostname: {{ node.name }}-renamed")
    out = _promote(repo)
    assert "cp1: patches/cp1.yaml changed -> artefact rewritten (data key kept: only changed values)" in out
    if mode == "engine":
        assert repo.sops_runs() == []  # base config decrypted and artefact written in process
    else:
        assert [run.split()[0] for run in repo.sops_runs()] == ["--decrypt", "edit"]
    lines = _changed_lines(repo)
    assert sorted(_shape(lines)) == sorted(["-        hostname: cp1", "+        hostname: cp1-renamed", *META])
    numstat = {line.split("\t")[2]: line.split("\t")[:2]
               for line in repo.git("diff", "--cached", "--no-textconv", "--numstat").splitlines()}
    assert numstat[ARTEFACT] == ["3", "3"]
    assert set(numstat) == {ARTEFACT, "encrypted/ledger.json"}  # no other artefact moved
    stat = repo.git("diff", "--cached", "--no-textconv", "--stat", "--", ARTEFACT)
    assert "1 file changed, 3 insertions(+), 3 deletions(-)" in stat
    repo.git("commit", "-qam", "rename cp1")

    # A secret: machine.token, set by a node patch that stays out of git (the guard refuses a
    # plaintext token in a tracked patch; *.decrypted.yaml is git-ignored).
    (repo.path / "patches/cp1-token.decrypted.yaml").write_text(f"machine:\n  token: {TOKEN}\n")
    inventory = repo.path / "cluster.yaml"
    inventory.write_text(inventory.read_text().replace(
        "cp1: {role: controlplane, address: 192.168.1.101}",
        "cp1: {role: controlplane, address: 192.168.1.101, patches: [cp1.yaml, cp1-token.decrypted.yaml]}"))
    _promote(repo)
    lines = _changed_lines(repo)
    assert sorted(_shape(lines)) == sorted(["-    token: ENC[...]", "+    token: ENC[...]", *META])
    assert TOKEN not in (repo.path / ARTEFACT).read_text()
    repo.git("commit", "-qam", "new token")

    # A label added, then removed.
    _edit_patch(repo, "machine:\n", "machine:\n  nodeLabels:\n    zone: a\n")
    _promote(repo)
    assert sorted(_shape(_changed_lines(repo))) == sorted(["+        zone: a", *META])
    repo.git("commit", "-qam", "label")
    _edit_patch(repo, "machine:\n  nodeLabels:\n    zone: a\n", "machine:\n")
    _promote(repo)
    assert sorted(_shape(_changed_lines(repo))) == sorted(["-        zone: a", *META])
    repo.git("commit", "-qam", "no label")

    # The untouched nodes kept their bytes; stock sops reads every artefact, MAC checked.
    after = repo.artefacts()
    for name in before:
        if name not in (ARTEFACT, "encrypted/ledger.json"):
            assert after[name] == before[name], name
    for name in after:
        if name.endswith(".encrypted.yaml"):
            assert repo.sops("-d", name).returncode == 0, name
            assert repo.sops("filestatus", name).stdout.strip() == '{"encrypted":true}', name
    assert TOKEN in repo.sops("-d", ARTEFACT).stdout

    # Readable history through the diff driver: plain values as they are, secrets as keyed digests.
    repo.doit("hooks", "--diff", check=True)
    log = repo.git("log", "-p", "--format=commit %s", "--", ARTEFACT)
    assert "-        hostname: cp1\n+        hostname: cp1-renamed" in log
    assert re.search(r"^-    token: \(secret [0-9a-f]{8}\)\n\+    token: \(secret [0-9a-f]{8}\)$", log, re.M)
    assert "+        zone: a" in log and "-        zone: a" in log
    assert "ENC[" not in log and TOKEN not in log and "lastmodified" not in log


def test_a_key_change_reencrypts_and_says_why(promoted: Repo) -> None:
    """An artefact the ledger does not know gets a fresh data key (a full rewrite), and the node line says so."""
    repo = promoted
    # Re-encrypted outside the pipeline with stock sops: same documents, bytes the ledger never saw.
    plain = repo.sops("-d", ARTEFACT).stdout
    (repo.path / "cp1.plain.yaml").write_text(plain)
    made = repo.sops("-e", "--filename-override", ARTEFACT, "--output", ARTEFACT, "cp1.plain.yaml")
    (repo.path / "cp1.plain.yaml").unlink()
    assert made.returncode == 0, made.stderr
    repo.git("commit", "-qam", "hand-made artefact")
    _edit_patch(repo, "hostname: {{ node.name }}", "hostname: {{ node.name }}-renamed")
    out = _promote(repo)
    assert ("cp1: patches/cp1.yaml changed, artefact changed outside the pipeline -> artefact rewritten "
            "(fresh data key: artefact unknown to the ledger)") in out
    numstat = repo.git("diff", "--cached", "--no-textconv", "--numstat", "--", ARTEFACT).split("\t")
    assert int(numstat[0]) > 20  # every ENC value and the age stanza are new
    assert repo.sops("-d", ARTEFACT).returncode == 0
    # The next change keeps that new key again.
    repo.git("commit", "-qam", "re-keyed")
    _edit_patch(repo, "hostname: {{ node.name }}-renamed", "hostname: {{ node.name }}-again")
    out = _promote(repo)
    assert "(data key kept: only changed values)" in out
    assert repo.git("diff", "--cached", "--no-textconv", "--numstat", "--", ARTEFACT).split("\t")[:2] == ["3", "3"]


def test_what_the_engine_cannot_do_goes_to_sops_and_the_run_says_so_once(promoted: Repo) -> None:
    """A `.sops.yaml` option the engine does not write (stores:) sends every node to the binary, said once."""
    repo = promoted
    repo.env.pop("PROMOTE_SOPS_ENGINE", None)  # the engine on (with the binary forced there is nothing to fall from)
    config = repo.path / ".sops.yaml"
    owned = "".join(line for line in config.read_text().splitlines(keepends=True) if not line.startswith("#"))
    config.write_text(owned + "stores:\n  yaml:\n    indent: 4\n")
    _edit_patch_file(repo, "patches/resolvers.yaml", "9.9.9.9", "9.9.9.10")
    out = repo.doit(check=True).stdout
    notes = [line for line in out.splitlines() if line.startswith("sops engine: falling back to the sops binary")]
    assert len(notes) == 1 and "stores" in notes[0], out
    assert sorted(run.split()[0] for run in repo.sops_runs() if not run.startswith("--decrypt")) == ["edit"] * 6
    # sops edit kept each data key: one changed line per artefact, plus lastmodified and mac.
    numstat = repo.git("diff", "--cached", "--no-textconv", "--numstat", "--", "encrypted/").splitlines()
    counts = {line.split("\t")[2]: line.split("\t")[:2] for line in numstat}
    assert all(counts[name] == ["3", "3"] for name in counts if name.endswith(".encrypted.yaml")), counts


def _edit_patch_file(repo: Repo, name: str, old: str, new: str) -> None:
    path = repo.path / name
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))


def test_verify_still_decrypts_every_artefact_with_the_sops_binary(promoted: Repo) -> None:
    """The engine writes; `doit verify` checks with the real binary, an independent reader (issue 20)."""
    repo = promoted
    _edit_patch(repo, "hostname: {{ node.name }}", "hostname: {{ node.name }}-v")
    repo.doit(check=True)
    assert repo.sops_runs() == [] or repo.env.get("PROMOTE_SOPS_ENGINE") == "binary"
    repo.doit("verify", check=True)
    decrypts = [run for run in repo.sops_runs() if run.startswith("--decrypt")]
    assert len(decrypts) >= 6  # every node artefact, through stock sops
