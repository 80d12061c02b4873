"""The documented key switch, end to end: at no step is any artefact unreadable by the current key set."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Repo
from tests.keys.test_keyring import (
    assert_noop,
    assert_one_line_failure,
    decrypt_all,
    encrypted_paths,
    home_key,
    only,
    opens_none,
    output,
    set_recipients,
)


def test_switching_from_the_old_key_to_a_new_one(promoted: Repo, tmp_path: Path) -> None:
    old, old_pub = home_key(promoted)
    documents = decrypt_all(promoted, only(promoted, old))

    # 0. declare the key bootstrap made: the generated .sops.yaml already says so, nothing to rekey
    set_recipients(promoted, [("operator", old_pub)])
    result = promoted.doit("rekey")
    assert result.returncode == 0 and promoted.sops_runs() == [], output(result)

    # 1. a new identity, made by the pipeline, kept outside the repository
    new = tmp_path / "backup" / "new-key.txt"
    result = promoted.doit("keygen", "--out", str(new))
    assert result.returncode == 0, output(result)
    new_pub = result.stdout.split("public key: ")[1].split()[0]

    # 2. add it, rekey (with the old key): every artefact opens with either key alone
    set_recipients(promoted, [("operator", old_pub), ("operator-2026", new_pub)])
    result = promoted.doit("rekey")
    assert result.returncode == 0, output(result)
    for key in (old, new):
        assert decrypt_all(promoted, only(promoted, key)) == documents
    promoted.git("add", "-A")
    promoted.git("commit", "-qm", "add the new key")
    result = promoted.doit("drill", "--key", str(new))  # proof from a clean clone, the new key alone
    assert result.returncode == 0, output(result)

    # 3. remove the old key: the old key alone may not do it (it would lock itself out) ...
    set_recipients(promoted, [("operator-2026", new_pub)])
    before = promoted.artefacts()
    assert_one_line_failure(promoted.doit("rekey", env=only(promoted, old)), "lock yourself out")
    assert promoted.artefacts() == before
    for key in (old, new):
        assert decrypt_all(promoted, only(promoted, key)) == documents

    # ... the new key alone does, which proves once more that it works
    result = promoted.doit("rekey", env=only(promoted, new))
    assert result.returncode == 0, output(result)
    assert decrypt_all(promoted, only(promoted, new)) == documents
    opens_none(promoted, only(promoted, old))
    assert old_pub not in (promoted.path / ".sops.yaml").read_text()

    # 4. the old key may have kept data keys: rotate them, still with the new key alone
    before = promoted.artefacts()
    result = promoted.doit("rotate", env=only(promoted, new))
    assert result.returncode == 0, output(result)
    after = promoted.artefacts()
    assert all(after[path] != before[path] for path in encrypted_paths(promoted))
    assert decrypt_all(promoted, only(promoted, new)) == documents
    opens_none(promoted, only(promoted, old))

    # 5. the platform carries on: promotion is a no-op, a drill with the new key passes
    promoted.env = only(promoted, new)
    assert_noop(promoted)
    promoted.git("add", "-A")
    promoted.git("commit", "-qm", "switch to the new key")
    result = promoted.doit("drill", "--key", str(new))
    assert result.returncode == 0, output(result)
    assert "10 of 10 recovered" in output(result)
