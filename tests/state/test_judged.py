"""The guard's memory of clean tracked files (.doit.db.judged): a shortcut that never hides a new finding."""

from __future__ import annotations

import json

from pipeline.state import judged
from tests.conftest import Repo


def _secret_line() -> str:
    # Built at run time: no key-shaped text is committed in this project.
    return "# AGE-SECRET-KEY-1" + "QZ" * 29 + "\n"


def test_a_promotion_remembers_clean_patches_by_blob_and_holds_no_content(promoted: Repo) -> None:
    (promoted.path / "patches" / "w1.yaml").write_text(
        (promoted.path / "patches" / "w1.yaml").read_text() + "# edited\n")
    promoted.git("add", "-A")
    promoted.doit(check=True)
    record = json.loads((promoted.path / judged.JUDGED_FILE).read_text())
    names = {item.split(" ", 1)[1] for item in record["clean"]}
    assert {"patches/w1.yaml", "patches/resolvers.yaml", "cluster.yaml"} <= names
    blob = promoted.git("rev-parse", ":patches/w1.yaml").strip()
    assert f"{blob} patches/w1.yaml" in record["clean"]
    assert "edited" not in (promoted.path / judged.JUDGED_FILE).read_text()
    # Ignored with doit's database: never staged.
    assert judged.JUDGED_FILE not in promoted.git("ls-files")


def test_a_secret_added_to_a_remembered_patch_is_still_refused(promoted: Repo) -> None:
    (promoted.path / "patches" / "w3.yaml").write_text(
        (promoted.path / "patches" / "w3.yaml").read_text() + "# edited\n")
    promoted.git("add", "-A")
    promoted.doit(check=True)  # a promotion with a guard run: the memory now holds every patch as clean
    assert any(item.endswith(" patches/w2.yaml")
               for item in json.loads((promoted.path / judged.JUDGED_FILE).read_text())["clean"])
    patch = promoted.path / "patches" / "w2.yaml"
    patch.write_text(patch.read_text() + _secret_line())
    promoted.git("add", "patches/w2.yaml")
    result = promoted.doit()
    assert result.returncode == 1
    assert "patches/w2.yaml" in result.stdout + result.stderr
    assert "QZQZQZQZ" not in result.stdout + result.stderr


def test_a_memory_from_other_scanner_code_or_garbage_is_ignored(tmp_path) -> None:
    judged.save(tmp_path, "scanner-a", ["abc patches/x.yaml"])
    assert judged.load(tmp_path, "scanner-a") == {"abc patches/x.yaml"}
    assert judged.load(tmp_path, "scanner-b") == set()
    (tmp_path / judged.JUDGED_FILE).write_text("{not json")
    assert judged.load(tmp_path, "scanner-a") == set()
    (tmp_path / judged.JUDGED_FILE).write_text(json.dumps({"version": 1, "scanner": "scanner-a", "clean": 5}))
    assert judged.load(tmp_path, "scanner-a") == set()
