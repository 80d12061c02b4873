"""The failure cases of issue 15: nothing lost, nothing silently replaced, one line and exit 1 (or 130/143).

Each test reproduces one item of the hostile review against a real repository, the real sops
binary and real age keys; each failed on the code before the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Repo

LEDGER = "encrypted/ledger.json"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


def _change_every_node(repo: Repo, server: str = "8.8.4.4") -> None:
    """A real change for every node, so a failure is not hidden by up-to-dateness."""
    resolvers = repo.path / "patches" / "resolvers.yaml"
    text = resolvers.read_text()
    old = next(line for line in text.splitlines() if line.strip().startswith("- ") and "." in line
               and line.strip()[2:].replace(".", "").isdigit() and not line.strip().endswith("1.1.1.1"))
    resolvers.write_text(text.replace(old, old.split("- ")[0] + "- " + server))


def one_line_failure(result: subprocess.CompletedProcess[str], *needles: str, code: int = 1) -> str:
    """Assert exit ``code``, no traceback, and exactly one output line holding every needle; return it."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if all(needle in line for needle in needles)]
    assert len(lines) == 1, output
    return lines[0]


def decrypts(repo: Repo, artefact: str) -> bool:
    return repo.sops("-d", artefact).returncode == 0


# --- 1. paths from committed data ------------------------------------------------------------


def _add_ledger_node(repo: Repo, name: str, entry: object) -> None:
    path = repo.path / LEDGER
    data = json.loads(path.read_text())
    data["nodes"][name] = entry
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("target", ["outside", "cluster.yaml", "key"])
def test_a_ledger_entry_cannot_delete_a_file_outside_encrypted(promoted: Repo, target: str) -> None:
    sentinel = promoted.path.parent / "sentinel.txt"
    sentinel.write_text("must survive\n")
    victim = {"outside": sentinel, "cluster.yaml": promoted.path / "cluster.yaml",
              "key": promoted.home / ".config" / "sops" / "age" / "keys.txt"}[target]
    before = victim.read_bytes()
    rel = os.path.relpath(victim, promoted.path / "encrypted")
    # A removed node's entry, as a hostile commit would write it.
    _add_ledger_node(promoted, "gone", {"artefact": f"encrypted/{rel}", "intent": "sha256:0"})
    artefacts = promoted.artefacts()
    result = promoted.doit()
    line = one_line_failure(result, LEDGER, "nodes.gone.artefact")
    assert "malformed ledger" in line
    assert victim.read_bytes() == before
    assert promoted.artefacts() == artefacts
    # `doit check` no longer advises a promotion that would delete it.
    check = promoted.doit("check")
    assert check.returncode == 1 and "run doit to remove it" not in check.stdout + check.stderr
    assert victim.read_bytes() == before


def test_a_ledger_entry_naming_a_symlink_or_a_base_deletes_nothing(promoted: Repo) -> None:
    sentinel = promoted.path.parent / "sentinel.txt"
    sentinel.write_text("must survive\n")
    link = promoted.path / "encrypted" / "talos-kube-gone.encrypted.yaml"
    link.symlink_to(sentinel)
    _add_ledger_node(promoted, "gone", {"artefact": "encrypted/talos-kube-gone.encrypted.yaml"})
    _add_ledger_node(promoted, "gone2", {"artefact": "encrypted/secrets.encrypted.yaml"})
    _add_ledger_node(promoted, "gone3", {"artefact": "encrypted/talos-kube-cp1.encrypted.yaml"})
    bundle = (promoted.path / "encrypted" / "secrets.encrypted.yaml").read_bytes()
    cp1 = (promoted.path / "encrypted" / "talos-kube-cp1.encrypted.yaml").read_bytes()
    assert promoted.doit().returncode == 1  # the guard will not read an artefact through a symlink
    assert sentinel.read_text() == "must survive\n"
    assert link.is_symlink()
    # Without the link, the entries go; the files they name stay (a base, a node still in the inventory).
    link.unlink()
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert sentinel.read_text() == "must survive\n"
    assert (promoted.path / "encrypted" / "secrets.encrypted.yaml").read_bytes() == bundle
    assert (promoted.path / "encrypted" / "talos-kube-cp1.encrypted.yaml").read_bytes() == cp1
    ledger = json.loads((promoted.path / LEDGER).read_text())
    assert not {"gone", "gone2", "gone3"} & set(ledger["nodes"])


MALFORMED = {
    "nodes-is-a-number": (lambda data: data.update(nodes=5), "nodes must be an object"),
    "entry-is-a-string": (lambda data: data["nodes"].update(cp1="encrypted/x"), "nodes.cp1 must be an object"),
    "rotations-is-a-number": (lambda data: data.update(rotations=5), "rotations must be a list"),
    "bases-is-a-list": (lambda data: data.update(bases=[1]), "bases must be an object"),
    "sha-is-a-number": (lambda data: data["nodes"]["w1"].update(artefact_sha256=5), "nodes.w1.artefact_sha256"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", [(), ("check",), ("plan",)])
def test_a_malformed_ledger_is_one_line_naming_the_field(promoted: Repo, case: str, command: tuple[str, ...]) -> None:
    path = promoted.path / LEDGER
    data = json.loads(path.read_text())
    mutate, needle = MALFORMED[case]
    mutate(data)
    path.write_text(json.dumps(data, indent=1))
    before = promoted.artefacts()
    result = promoted.doit(*command)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert any(LEDGER in line and needle in line for line in output.splitlines()), output
    assert promoted.artefacts() == before


# --- 2. durable, verified writes: see test_full_disk_* below and tests/state/test_integrity.py ----


# --- 3. identity ----------------------------------------------------------------------------


def test_deleting_encrypted_never_mints_a_new_cluster(promoted: Repo) -> None:
    original = promoted.artefacts()
    shutil.rmtree(promoted.path / "encrypted")
    status = promoted.git("status", "--porcelain")
    result = promoted.doit()
    line = one_line_failure(result, "git checkout HEAD -- encrypted/secrets.encrypted.yaml")
    assert "--new-cluster" in line
    assert not (promoted.path / "encrypted").exists()  # nothing made
    assert promoted.git("status", "--porcelain") == status  # nothing staged
    assert promoted.sops_runs() == []
    # `doit check` fails, and gives the same way back (not "run doit").
    check = promoted.doit("check")
    assert check.returncode == 1
    bundle_lines = [line for line in (check.stdout + check.stderr).splitlines()
                    if line.startswith("encrypted/secrets.encrypted.yaml")]
    assert len(bundle_lines) == 1 and "git checkout HEAD -- encrypted/secrets.encrypted.yaml" in bundle_lines[0]
    # The printed command brings the identity back; the bases and nodes follow from it.
    promoted.git("checkout", "HEAD", "--", "encrypted/secrets.encrypted.yaml")
    assert promoted.doit().returncode == 0
    assert promoted.artefacts()["encrypted/secrets.encrypted.yaml"] == original["encrypted/secrets.encrypted.yaml"]
    assert promoted.doit("check").returncode == 0


def test_a_bundle_deleted_in_a_commit_is_restored_from_history(promoted: Repo) -> None:
    bundle = (promoted.path / "encrypted" / "secrets.encrypted.yaml").read_bytes()
    promoted.git("rm", "-q", "encrypted/secrets.encrypted.yaml")
    promoted.git("commit", "-qm", "oops")
    result = promoted.doit()
    line = one_line_failure(result, "git checkout ", "-- encrypted/secrets.encrypted.yaml")
    command = line[line.index("`git checkout ") + 1:line.index("encrypted/secrets.encrypted.yaml`")]
    promoted.git(*command.split()[1:], "encrypted/secrets.encrypted.yaml")
    assert (promoted.path / "encrypted" / "secrets.encrypted.yaml").read_bytes() == bundle


def test_a_new_cluster_only_when_asked_and_said_loudly(promoted: Repo) -> None:
    old = promoted.artefacts()
    refused = promoted.doit("bootstrap", "--new-cluster")
    one_line_failure(refused, "a secrets bundle exists")
    assert promoted.artefacts() == old
    (promoted.path / "encrypted" / "secrets.encrypted.yaml").unlink()
    made = promoted.doit("bootstrap", "--new-cluster")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "NEW CLUSTER IDENTITY" in made.stderr
    new = promoted.artefacts()
    for name in ("secrets", "controlplane", "worker", "talosconfig"):
        path = f"encrypted/{name}.encrypted.yaml"
        assert new[path] != old[path] and decrypts(promoted, path)
    assert promoted.doit().returncode == 0
    assert promoted.doit("check").returncode == 0


@pytest.mark.parametrize("endpoint, needle", [
    ("https://bad host:6443", "cluster.controlPlane.endpoint"),
    ("https://192.168.1.100:99999", "out of range"),
    ("https://[::1", "cluster.endpoint"),
    ("https://192.168.1.100:0", "out of range"),
])
def test_a_bad_endpoint_rewrites_no_base_config(promoted: Repo, endpoint: str, needle: str) -> None:
    before = promoted.artefacts()
    _edit(promoted.path / "cluster.yaml", "https://192.168.1.100:6443", endpoint)
    result = promoted.doit()
    one_line_failure(result, "cluster.yaml", needle)
    assert promoted.artefacts() == before
    # Reverted: nothing to redo, nothing rewritten.
    _edit(promoted.path / "cluster.yaml", endpoint, "https://192.168.1.100:6443")
    assert promoted.doit().returncode == 0
    assert promoted.artefacts() == before


# --- 4. reserved keys, 6. resource limits, determinism -----------------------------------------


BAD_PATCHES = {
    "sops-key": ("machine:\n  network: {}\nsops:\n  mac: x\n", "patches/extra.yaml:3:", "reserved"),
    "sops-json6902": ('- op: add\n  path: /sops\n  value: {mac: x}\n', "patches/extra.yaml:1:", "reserved"),
    "set": ("machine:\n  network:\n    nameservers: !!set {1.1.1.1, 8.8.8.8}\n", "patches/extra.yaml:3:",
            "!!set"),
    "omap": ("machine:\n  sysctls: !!omap\n    - a: '1'\n", "patches/extra.yaml:2:", "!!omap"),
    "binary": ("machine:\n  files:\n    - content: !!binary aGVsbG8=\n", "patches/extra.yaml:3:", "!!binary"),
    "recursive-alias": ("machine: &a\n  x: *a\n", "patches/extra.yaml:", "alias to itself"),
    "template-recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}\n", "patches/extra.yaml", "nest too deep"),
}


def _use_extra_patch(repo: Repo, text: str) -> None:
    (repo.path / "patches" / "extra.yaml").write_text(text)
    _edit(repo.path / "cluster.yaml", "  - resolvers.yaml\n", "  - resolvers.yaml\n  - extra.yaml\n")


@pytest.mark.parametrize("case", sorted(BAD_PATCHES))
def test_a_bad_patch_is_one_line(promoted: Repo, case: str) -> None:
    text, where, what = BAD_PATCHES[case]
    before = promoted.artefacts()
    _use_extra_patch(promoted, text)
    line = one_line_failure(promoted.doit(), where, what)
    assert line.count("patches/extra.yaml") >= 1
    assert promoted.artefacts() == before
    assert promoted.sops_runs() == []


def billion_laughs(levels: int = 12) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "machine:\n  x:\n" + "".join(f"    {line}\n" for line in lines)


def test_an_alias_bomb_is_refused_fast(promoted: Repo) -> None:
    from pipeline.talos.patching import PatchError, load_patch

    text = billion_laughs()  # 10^12 strings once expanded
    started = time.monotonic()
    with pytest.raises(PatchError) as caught:
        load_patch(text, "patches/bomb.yaml")
    assert time.monotonic() - started < 1.0
    assert "alias" in str(caught.value) and str(caught.value).startswith("patches/bomb.yaml:")
    before = promoted.artefacts()
    _use_extra_patch(promoted, text)
    started = time.monotonic()
    result = promoted.doit()
    assert time.monotonic() - started < 10
    one_line_failure(result, "patches/extra.yaml", "alias")
    assert promoted.artefacts() == before


def test_aliases_within_the_limit_still_work() -> None:
    from pipeline.talos.patching import load_patch

    patch = load_patch("machine:\n  a: &x {k: v}\n  b: *x\n  c: [*x, *x]\n", "patches/ok.yaml")
    assert patch.content[0]["machine"]["c"] == [{"k": "v"}, {"k": "v"}]


def test_the_patch_size_limit_is_one_line_and_configurable(promoted: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.talos.patching import PatchError, load_patch

    big = "machine:\n  x: |\n" + "    " + "y" * 100 + "\n" * 1 + ("    " + "y" * 100 + "\n") * 11000
    assert len(big) > 1024 * 1024
    with pytest.raises(PatchError, match="larger than 1048576 bytes"):
        load_patch(big, "patches/big.yaml")
    monkeypatch.setenv("PROMOTE_MAX_PATCH_BYTES", str(4 * 1024 * 1024))
    assert load_patch(big, "patches/big.yaml").content[0]["machine"]["x"].startswith("y")
    monkeypatch.delenv("PROMOTE_MAX_PATCH_BYTES")
    before = promoted.artefacts()
    _use_extra_patch(promoted, big)
    started = time.monotonic()
    one_line_failure(promoted.doit(), "patches/extra.yaml", "larger than")
    assert time.monotonic() - started < 10
    assert promoted.artefacts() == before and promoted.sops_runs() == []


def test_a_set_no_longer_makes_the_digest_depend_on_the_hash_seed(promoted: Repo) -> None:
    # Before: !!set was accepted, and `doit check` said "stale" whenever PYTHONHASHSEED differed.
    _use_extra_patch(promoted, "machine:\n  certSANs: !!set {a.example, b.example, c.example, d.example}\n")
    for seed in ("1", "2"):
        result = promoted.doit(env=dict(promoted.env, PYTHONHASHSEED=seed))
        one_line_failure(result, "patches/extra.yaml:2:", "!!set")


def test_sops_run_time_is_limited(promoted: Repo) -> None:
    _change_every_node(promoted)
    before = promoted.artefacts()
    # The binary: the in-process engine starts no sops process for this repository.
    result = promoted.doit(env=dict(promoted.env, PROMOTE_SOPS_TIMEOUT="0.001", PROMOTE_SOPS_ENGINE="binary"))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert "sops took longer than 0.001 s" in output
    assert promoted.artefacts() == before


# --- 7. other failures ------------------------------------------------------------------------


def test_duplicate_node_addresses_are_an_error(promoted: Repo) -> None:
    before = promoted.artefacts()
    _edit(promoted.path / "cluster.yaml", "w3: {role: worker, address: 192.168.1.113}",
          "w3: {role: worker, address: 192.168.1.111}")
    one_line_failure(promoted.doit(), "cluster.yaml:25:", "192.168.1.111", "w1")
    assert promoted.artefacts() == before


def test_a_tampered_artefact_is_rewritten_with_a_word(promoted: Repo) -> None:
    # A valid SOPS file with other content (another node's): sops accepts it, the ledger does not know it.
    encrypted = promoted.path / "encrypted"
    shutil.copy(encrypted / "talos-kube-w2.encrypted.yaml", encrypted / "talos-kube-w1.encrypted.yaml")
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("w1:")]
    assert lines and "artefact changed outside the pipeline" in lines[0], result.stdout
    # Also when the intent changed in the same run: the tampering is still named.
    shutil.copy(encrypted / "talos-kube-w2.encrypted.yaml", encrypted / "talos-kube-w1.encrypted.yaml")
    _change_every_node(promoted)
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("w1:")]
    assert lines and "patches/resolvers.yaml changed" in lines[0], result.stdout
    assert "artefact changed outside the pipeline" in lines[0], result.stdout
    assert not any("outside the pipeline" in line for line in result.stdout.splitlines() if line.startswith("w2:"))


def test_a_key_file_readable_by_others_gets_one_warning(promoted: Repo) -> None:
    key = promoted.home / ".config" / "sops" / "age" / "keys.txt"
    key.chmod(0o644)
    _change_every_node(promoted)
    result = promoted.doit()
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a refusal
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "readable by group or others" in line]
    assert len(warnings) == 1 and f"chmod 600 {key}" in warnings[0]
    assert "AGE-SECRET-KEY" not in result.stdout + result.stderr
    key.chmod(0o600)
    _change_every_node(promoted, "8.8.8.8")
    quiet = promoted.doit()
    assert "readable by group or others" not in quiet.stdout + quiet.stderr


# --- signals --------------------------------------------------------------------------------


def _plaintext(repo: Repo) -> list[Path]:
    folder = repo.path / "rendered"
    return [p for p in folder.iterdir() if not p.name.startswith(".ledger-journal.")] if folder.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("mode", [(), ("-n", "3", "-P", "process"), ("-n", "3", "-P", "thread")],
                         ids=["serial", "process", "thread"])
def test_a_signal_mid_promotion_purges_plaintext_and_exits_128_plus(promoted: Repo, sig: int,
                                                                  mode: tuple[str, ...]) -> None:
    _change_every_node(promoted)
    process = subprocess.Popen([sys.executable, "-m", "doit", *mode], cwd=promoted.path, env=promoted.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signal once the promotion is under way: plaintext exists (worker processes write it), or a node's
    # ledger entry was journaled (a serial or threaded run keeps the plaintext in memory).
    folder = promoted.path / "rendered"
    deadline = time.monotonic() + 30
    while not (folder.exists() and any(folder.iterdir())) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the promotion finished before the signal arrived")  # pragma: no cover (timing)
    assert process.returncode == 128 + sig, out + err
    assert "Traceback" not in out + err
    lines = [line for line in (out + err).splitlines() if "interrupted by" in line]
    assert len(lines) == 1 and signal.Signals(sig).name in lines[0], out + err
    assert _plaintext(promoted) == []
    for artefact in promoted.artefacts():
        if artefact.endswith(".encrypted.yaml"):
            assert decrypts(promoted, artefact), artefact
    again = promoted.doit()
    assert again.returncode == 0, again.stdout + again.stderr
    assert promoted.doit("check").returncode == 0


# --- races ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_one_failing_node_never_fails_a_healthy_one(promoted: Repo, pool: str) -> None:
    # w3 fails to render on every run; every other node is re-rendered and re-encrypted each time.
    _edit(promoted.path / "patches" / "w3.yaml", "hostname: {{ node.name }}", "hostname: {{ vars.missing }}")
    for run in range(20):
        _change_every_node(promoted, f"192.0.2.{run + 1}")
        # Every other run goes on past the failure (--continue): the healthy nodes then all run
        # alongside it, and all must be promoted; without it, they are promoted or not reached.
        keep_going = run % 2 == 0
        result = promoted.doit("-n", "4", "-P", pool, *(["--continue"] if keep_going else []))
        output = result.stdout + result.stderr
        # Bad input is exit 1 in every mode, --continue included (promote is skipped for its dependency).
        assert result.returncode == 1, output
        assert "Traceback" not in output
        failed = [line for line in output.splitlines() if line.startswith("FAILED")]
        assert failed and all("w3" in line for line in failed), (run, output)
        if keep_going:
            for node in ("cp1", "cp2", "cp3", "w1", "w2"):
                assert any(line.startswith(f"{node}:") and "artefact rewritten" in line
                           for line in output.splitlines()), (run, node, output)
    _edit(promoted.path / "patches" / "w3.yaml", "hostname: {{ vars.missing }}", "hostname: {{ node.name }}")
    assert promoted.doit("-n", "4", "-P", pool).returncode == 0
    assert promoted.doit("check").returncode == 0


# --- read-only checkouts and full disks (real mounts: root only) ---------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def read_only(promoted: Repo, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The promoted repo, seen through a read-only bind mount (root ignores file modes, not a ro mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a read-only bind mount (chmod does not stop root)")
    view = tmp_path / "ro"
    view.mkdir()
    try:
        _mount("--bind", str(promoted.path), str(view))
    except subprocess.CalledProcessError as error:
        pytest.skip(f"bind mounts are not allowed here: {error.stderr.strip()}")
    try:
        _mount("-o", "remount,bind,ro", str(view))
        yield Repo(view, promoted.home, dict(promoted.env))
    finally:
        subprocess.run(["umount", str(view)], check=False)


@pytest.mark.parametrize("command", [("check",), ("plan",), ("verify",), ("graph", "--out", "OUT"),
                                     ("drill", "--key", "KEY"), ("list",)])
def test_read_only_tasks_work_in_a_read_only_checkout(read_only: Repo, tmp_path: Path,
                                                      command: tuple[str, ...]) -> None:
    key = read_only.home / ".config" / "sops" / "age" / "keys.txt"
    args = [str(tmp_path / "graph.dot") if arg == "OUT" else str(key) if arg == "KEY" else arg for arg in command]
    with pytest.raises(OSError):
        (read_only.path / "probe").write_text("x")  # really read-only, even for root
    result = read_only.doit(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if command[0] == "graph":
        assert (tmp_path / "graph.dot").is_file()


@pytest.mark.parametrize("command", [(), ("rotate",), ("bootstrap",), ("render:cp1",)])
def test_writing_tasks_are_one_line_in_a_read_only_checkout(read_only: Repo, command: tuple[str, ...]) -> None:
    one_line_failure(read_only.doit(*command), "Read-only file system")


# Free bytes left before the run (measured on the example): 0-40000 the plaintext does not fit
# (render fails at its first to its last node), 70000 an artefact does not (encrypt fails after
# another node was promoted), 100000 git's object store does not (git add), 130000 all fits.
FULL_DISK_FREE = [0, 20000, 40000, 70000, 100000, 130000]


@pytest.fixture
def small_disk(promoted: Repo, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The promoted repo (and the sops log) moved onto a 24 MiB tmpfs: a real file system that fills up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a size-limited tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk))
    except subprocess.CalledProcessError as error:
        pytest.skip(f"tmpfs mounts are not allowed here: {error.stderr.strip()}")
    try:
        shutil.copytree(promoted.path, disk / "repo", symlinks=True)
        yield Repo(disk / "repo", promoted.home, dict(promoted.env))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` until ``leave`` bytes are free (as far as blocks allow)."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        chunk = b"\0" * (1 << 20)
        while free - leave > len(chunk):
            handle.write(chunk)
            free -= len(chunk)
        with contextlib.suppress(OSError):
            handle.write(b"\0" * max(free - leave, 0))
        handle.flush()
    return filler


@pytest.mark.parametrize("leave", FULL_DISK_FREE)
def test_a_full_disk_never_truncates_an_artefact(small_disk: Repo, leave: int) -> None:
    repo = small_disk
    before = repo.artefacts()
    _change_every_node(repo)
    filler = _fill(repo.path.parent, leave)
    result = repo.doit()
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    # Whatever the run managed: every artefact is the old one or a whole new one; none is cut short.
    after = repo.artefacts()
    assert set(after) == set(before)
    for path, data in after.items():
        if data != before[path] and path.endswith(".encrypted.yaml"):
            assert decrypts(repo, path), path
    assert not list((repo.path / "encrypted").glob(".*.tmp"))
    if result.returncode != 0:
        # Python's wording, or the sops binary's (Go) when its own write met the full disk.
        assert result.returncode == 1 and "no space left on device" in output.lower(), output
    # With room again, the same run finishes and the repository is current.
    filler.unlink()
    again = repo.doit()
    assert again.returncode == 0, again.stdout + again.stderr
    assert repo.doit("check").returncode == 0
    # And every artefact holds the whole config its intent renders (none was encrypted from a cut plaintext).
    verify = repo.doit("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_keygen_into_an_impossible_place_is_one_line(promoted: Repo) -> None:
    one_line_failure(promoted.doit("keygen", "--out", "/proc/x"), "/proc/x")
