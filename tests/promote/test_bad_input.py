"""Bad input: exit 1, one line naming the file (and line), no traceback, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Repo


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def assert_clean_failure(repo: Repo, before: dict[str, bytes], *expected: str) -> str:
    result = repo.doit()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    for needle in expected:
        assert needle in output, output
    assert repo.artefacts() == before
    assert not list((repo.path / "rendered").glob("*.yaml")) if (repo.path / "rendered").exists() else True
    lines = [line for line in output.splitlines() if expected[0] in line]
    assert len(lines) == 1, output
    return lines[0]


CASES = {
    "invalid-yaml": (lambda r: _edit(r / "patches" / "cp1.yaml", "    hostname:", "  - hostname: [\n"),
                     ("patches/cp1.yaml:",)),
    "undefined-variable": (lambda r: _edit(r / "patches" / "w1.yaml", "vars.gateway", "vars.gatewayy"),
                           ("patches/w1.yaml:11:", "gatewayy")),
    "unknown-role": (lambda r: _edit(r / "cluster.yaml", "w3: {role: worker", "w3: {role: storage"),
                     ("cluster.yaml:25:", "unknown role 'storage'")),
    "missing-patch-file": (lambda r: (r / "patches" / "resolvers.yaml").unlink(),
                           ("cluster.yaml:11:", "patches/resolvers.yaml")),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_intent_fails_cleanly(promoted: Repo, case: str) -> None:
    # Make the edit a real change for every node, so the failure is not hidden by up-to-dateness.
    _edit(promoted.path / "patches" / "resolvers.yaml", "9.9.9.9", "8.8.4.4")
    before = promoted.artefacts()
    edit, expected = CASES[case]
    edit(promoted.path)
    assert_clean_failure(promoted, before, *expected)


def test_missing_key_names_the_recipients_and_where_it_looked(promoted: Repo) -> None:
    (promoted.home / ".config" / "sops" / "age" / "keys.txt").unlink()
    _edit(promoted.path / "patches" / "cp1.yaml", "routes:", "routes: []\n        mtu: 1400\n        x:")
    before = promoted.artefacts()
    line = assert_clean_failure(promoted, before, "no age identity here can decrypt", "age1", "keys.txt")
    assert "AGE-SECRET-KEY" not in line
    assert not (promoted.home / ".config" / "sops" / "age" / "keys.txt").exists()  # no key was made


def test_bad_inventory_fails_before_anything(promoted: Repo) -> None:
    before = promoted.artefacts()
    (promoted.path / "cluster.yaml").write_text("cluster: [\n")
    assert_clean_failure(promoted, before, "cluster.yaml:")
