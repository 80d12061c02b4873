"""`doit drill --key FILE`: recover HEAD in a clean room with one key, and leave nothing behind."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import Repo
from tests.keys.test_keyring import assert_one_line_failure, home_key, new_key, output


def drill(repo: Repo, key: Path | str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the drill with a private TMPDIR, so what it leaves behind can be seen."""
    tmp.mkdir(exist_ok=True)
    return repo.doit("drill", "--key", str(key), env={**repo.env, "TMPDIR": str(tmp)})


def assert_nothing_left(repo: Repo, tmp: Path) -> None:
    assert list(tmp.iterdir()) == []
    assert not (repo.path / "rendered").exists()
    assert repo.git("status", "--porcelain", "--untracked-files=all") == ""


def test_drill_passes_on_a_healthy_repo_with_the_backup_key_alone(promoted: Repo, tmp_path: Path) -> None:
    key, public = home_key(promoted)
    backup = tmp_path / "usb" / "age-backup.txt"
    backup.parent.mkdir()
    shutil.copy2(key, backup)
    key.unlink()  # the workstation lost its key: the backup copy is all there is
    result = drill(promoted, backup, tmp_path / "tmp")
    text = output(result)
    assert result.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("drill: encrypted/")]
    assert len(lines) == 10 and all(line.endswith(": ok") for line in lines), text
    assert "10 of 10 recovered" in text and public in text and " s" in text
    assert "AGE-SECRET-KEY" not in text
    assert_nothing_left(promoted, tmp_path / "tmp")


def test_drill_names_the_artefact_encrypted_to_a_foreign_key_only(promoted: Repo, tmp_path: Path) -> None:
    _, operator = home_key(promoted)
    _, foreign = new_key(tmp_path / "keys", "foreign")
    target = "encrypted/talos-kube-w3.encrypted.yaml"
    moved = promoted.sops("rotate", "--in-place", "--add-age", foreign, "--rm-age", operator, target)
    assert moved.returncode == 0, moved.stderr
    promoted.git("commit", "-qam", "w3 for someone else")

    result = drill(promoted, home_key(promoted)[0], tmp_path / "tmp")
    line = assert_one_line_failure(result, "drill failed: 1 of 10", target, "cannot decrypt")
    assert "talos-kube-w2" not in line
    text = output(result)
    assert f"drill: {target}: cannot decrypt (encrypted for {foreign}, not for this key ({operator}))" in text
    assert "drill: encrypted/talos-kube-w2.encrypted.yaml: ok" in text
    assert_nothing_left(promoted, tmp_path / "tmp")


def test_drill_with_a_wrong_key_fails_clearly(promoted: Repo, tmp_path: Path) -> None:
    wrong, wrong_pub = new_key(tmp_path / "keys", "wrong")
    # the right key is still in HOME: the drill must not look there
    result = drill(promoted, wrong, tmp_path / "tmp")
    assert_one_line_failure(result, str(wrong), wrong_pub, "opens none of the 10 artefacts", home_key(promoted)[1])
    assert_nothing_left(promoted, tmp_path / "tmp")


def test_drill_with_a_missing_or_empty_key_file_fails_in_one_line(promoted: Repo, tmp_path: Path) -> None:
    assert_one_line_failure(drill(promoted, tmp_path / "nope.txt", tmp_path / "tmp"), "nope.txt",
                            "does not exist")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not a key\n")
    assert_one_line_failure(drill(promoted, garbage, tmp_path / "tmp"), "garbage.txt", "no age identity")
    assert_one_line_failure(promoted.doit("drill"), "--key FILE")
    assert_nothing_left(promoted, tmp_path / "tmp")


def test_drill_reports_a_committed_intent_that_was_never_promoted_as_drifted(promoted: Repo,
                                                                           tmp_path: Path) -> None:
    patch = promoted.path / "patches" / "w1.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
    promoted.git("commit", "-qam", "edit without promoting")
    result = drill(promoted, home_key(promoted)[0], tmp_path / "tmp")
    assert_one_line_failure(result, "encrypted/talos-kube-w1.encrypted.yaml (drifted)")
    assert "machine.install" in output(result)
    assert "wipe" not in output(result).replace("machine.install.wipe", "")  # paths, never values
    assert_nothing_left(promoted, tmp_path / "tmp")


def test_drill_of_a_repository_without_git_fails_in_one_line(promoted: Repo, tmp_path: Path) -> None:
    shutil.rmtree(promoted.path / ".git")
    assert_one_line_failure(drill(promoted, home_key(promoted)[0], tmp_path / "tmp"), "not a git repository")
    assert list((tmp_path / "tmp").iterdir()) == []
