"""A repository promoted by an earlier version: its generated .sops.yaml follows this version through `doit rekey`."""

from __future__ import annotations

from tests.conftest import Repo


def older_rules(text: str) -> str:
    """The generated `.sops.yaml` of the previous release: no vars or encrypted-patch rules, no carriers."""
    blocks = text.split("\n- path_regex: ")
    kept = [blocks[0]] + [block for block in blocks[1:]
                          if not block.startswith(("(^|.*/)encrypted/vars", "(^|.*/)patches/"))]
    return "\n- path_regex: ".join(kept).replace("|environment|contents)$", ")$")


def test_an_older_generated_sops_config_is_brought_up_to_date_by_rekey(promoted: Repo) -> None:
    config = promoted.path / ".sops.yaml"
    current = config.read_text()
    config.write_text(older_rules(current))
    promoted.git("commit", "-qam", "as an earlier release left it")
    check = promoted.doit("check")
    assert check.returncode == 1
    assert "earlier version" in check.stdout + check.stderr and "doit rekey" in check.stdout + check.stderr
    rekey = promoted.doit("rekey")
    assert rekey.returncode == 0, rekey.stdout + rekey.stderr
    assert config.read_text() == current  # the rules this version generates, for the same key
    promoted.git("add", ".sops.yaml")
    promote = promoted.doit()
    assert promote.returncode == 0, promote.stdout + promote.stderr
    promoted.git("commit", "-qam", "rules of this release")
    assert promoted.doit("check").returncode == 0
