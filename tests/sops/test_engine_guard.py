"""The keyless guard judges engine-written artefacts exactly as it judges sops-written ones (issue 20, 4)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline.guard import scan as guard
from pipeline.sops import engine
from pipeline.sops.metadata import inspect_artefact
from tests.conftest import Repo

NODE_ARTEFACTS = [f"encrypted/talos-kube-{node}.encrypted.yaml" for node in ("cp1", "cp2", "cp3", "w1", "w2", "w3")]


def _sops_twin(repo: Repo, artefact: str) -> str:
    """The same documents written by stock sops for the same creation rule."""
    plain = repo.sops("-d", artefact)
    assert plain.returncode == 0, plain.stderr
    (repo.path / "twin.plain.yaml").write_text(plain.stdout)
    try:
        made = repo.sops("-e", "--filename-override", artefact, "twin.plain.yaml")
    finally:
        (repo.path / "twin.plain.yaml").unlink()
    assert made.returncode == 0, made.stderr
    return made.stdout


def _tamperings(text: str) -> dict[str, str]:
    """The same damage done to a file: a plaintext secret, a plaintext cluster secret, no MAC, no metadata."""
    return {
        "plain token": re.sub(r"^(    token: )ENC\[[^\]]*\]$", r"\1abcdef.0123456789abcdef", text, count=1, flags=re.M),
        "plain cluster secret": re.sub(r"^(    secret: )ENC\[[^\]]*\]$", r"\1c2VjcmV0", text, count=1, flags=re.M),
        "no mac": re.sub(r"^    mac: .*\n", "", text, flags=re.M),
        "no metadata": text.split("\nsops:\n")[0] + "\n",
    }


def test_guard_judges_engine_and_sops_files_alike(promoted: Repo, tmp_path: Path) -> None:
    repo = promoted
    twins = tmp_path / "twins"
    shutil.copytree(repo.path, twins, symlinks=True)
    for artefact in NODE_ARTEFACTS:
        engine_text = (repo.path / artefact).read_text()
        sops_text = _sops_twin(repo, artefact)
        # Both were written for the same documents and rule: the engine's file is one sops reads and writes.
        identities = [(repo.home / ".config/sops/age/keys.txt").read_text()]
        assert engine.decrypt(engine_text.encode(), identities) == engine.decrypt(sops_text.encode(), identities)
        mine, theirs = inspect_artefact(engine_text, artefact), inspect_artefact(sops_text, artefact)
        assert mine.findings == theirs.findings == []
        assert mine.recipients == theirs.recipients and mine.recipients
        damaged_mine, damaged_theirs = _tamperings(engine_text), _tamperings(sops_text)
        for what, text in damaged_mine.items():
            assert text != engine_text, what
            found = inspect_artefact(text, artefact).findings
            assert found, what
            assert found == inspect_artefact(damaged_theirs[what], artefact).findings, what
        (twins / artefact).write_text(sops_text)
    # The whole repository, keyless: the same (empty) verdict on the engine's files and on sops's.
    assert guard.check(repo.path) == guard.check(twins) == []
    (repo.path / NODE_ARTEFACTS[0]).write_text(_tamperings((repo.path / NODE_ARTEFACTS[0]).read_text())["plain token"])
    (twins / NODE_ARTEFACTS[0]).write_text(_tamperings((twins / NODE_ARTEFACTS[0]).read_text())["plain token"])
    mine, theirs = guard.check(repo.path), guard.check(twins)
    assert mine == theirs and any("machine.token is plaintext" in line for line in mine), mine
