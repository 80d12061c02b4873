"""The leak harness (issue 14): a promoted repository whose every secret value is known, put through
hostile inputs and every task; no secret (nor its case, reversal, base64 or a piece of a PEM) may appear
in any output, any file outside rendered/, any git object, or any file outside the repository.

One promoted template is shared (the session's); each case works on a private copy and runs the tasks
its input is about; a few cases run the full sweep (every task, watch for one rebuild, drill, the hook).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Repo, copy_repo
from tests.guard.test_guard import keyless
from tests.security.secrets_of import files_under, leaks, needles, secret_values
from tests.wiring.test_watch import Watching

pytestmark = pytest.mark.leak

KEY = Path(".config/sops/age/keys.txt")


@pytest.fixture(scope="module")
def known(promoted_template: Repo) -> list[str]:
    """Every secret of the shared template, with the forms a leak may take."""
    return needles(secret_values(promoted_template))


@dataclass
class Case:
    """One hostile input: ``setup`` edits the copy; ``tasks`` are the doit argument lists to run."""

    name: str
    setup: Callable[[Repo, Path], None]
    tasks: tuple[tuple[str, ...], ...] = (("-v", "2"),)
    own_secrets: bool = False  # the test itself puts a secret in the index (a guard case): judge new objects only


def _patch(name: str, text: str) -> Callable[[Repo, Path], None]:
    def setup(repo: Repo, _tmp: Path) -> None:
        (repo.path / "patches" / name).write_text(text)
    return setup


def _op(op: str, path: str, extra: str = "", node: str = "cp1.yaml") -> Callable[[Repo, Path], None]:
    return _patch(node, f"- op: {op}\n  path: {path}\n{extra}")


def _copy(source: str, target: str, node: str = "w1.yaml", before: str = "") -> Callable[[Repo, Path], None]:
    return _patch(node, f"{before}- op: copy\n  from: {source}\n  path: {target}\n")


LABELS = "- op: add\n  path: /machine/nodeLabels\n  value: {rack: r1}\n"
MANIFEST = ("- op: add\n  path: /cluster/inlineManifests\n  value: [{name: cm, contents: 'kind: ConfigMap'}]\n")


def _template(body: str, node: str = "w1.yaml") -> Callable[[Repo, Path], None]:
    def setup(repo: Repo, _tmp: Path) -> None:
        text = body.replace("@KEY@", str(repo.home / KEY))
        (repo.path / "patches" / node).write_text(text)
    return setup


def _symlinked_patch(target: Callable[[Repo, Path], Path]) -> Callable[[Repo, Path], None]:
    def setup(repo: Repo, tmp: Path) -> None:
        patch = repo.path / "patches" / "w1.yaml"
        patch.unlink()
        patch.symlink_to(target(repo, tmp))
    return setup


def _rendered_symlink(repo: Repo, tmp: Path) -> None:
    outside = tmp / "outside"
    outside.mkdir()
    (repo.path / "rendered").symlink_to(outside)
    patch = repo.path / "patches" / "w1.yaml"
    patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")


def _decrypted_as(name: str, artefact: str = "encrypted/talos-kube-cp1.encrypted.yaml",
                  encoding: str = "utf-8", transform: Callable[[str], str] = lambda text: text
                  ) -> Callable[[Repo, Path], None]:
    def setup(repo: Repo, _tmp: Path) -> None:
        text = repo.sops("-d", artefact).stdout
        path = repo.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(transform(text).encode(encoding))
        repo.git("add", "-f", name)
    return setup


def _key_as(name: str) -> Callable[[Repo, Path], None]:
    def setup(repo: Repo, _tmp: Path) -> None:
        (repo.path / name).write_bytes((repo.home / KEY).read_bytes())
        repo.git("add", "-f", name)
    return setup


def _jinja_comment(repo: Repo, _tmp: Path) -> None:
    text = repo.sops("-d", "encrypted/talos-kube-cp1.encrypted.yaml").stdout
    (repo.path / "patches" / "old.yaml").write_text("{# " + text + " #}\nmachine: {}\n")
    repo.git("add", "patches/old.yaml")


GUARD = (("check",),)
CASES = [
    # --- library error texts (JSON 6902) ---
    Case("typo-add", _op("add", "/cluster/apiserver/extraArgs", "  value: {a: b}\n"),
         (("-v", "2"), ("plan",), ("plan", "--format", "markdown"), ("verify",))),
    Case("typo-replace", _op("replace", "/cluster/secrett", "  value: x\n")),
    Case("typo-remove", _op("remove", "/cluster/nope/deeper")),
    Case("test-secret", _op("test", "/cluster/secret", "  value: guess\n"), (("-v", "2"), ("plan",))),
    Case("test-token", _op("test", "/machine/token", "  value: {a: b}\n")),
    Case("test-ca-mapping", _op("test", "/cluster/ca", "  value: [1]\n")),
    Case("test-list-index", _op("test", "/machine/certSANs/9", "  value: x\n")),
    Case("copy-into-string", _copy("/cluster/secret", "/cluster/clusterName/x", "cp1.yaml")),
    Case("move-missing-from", _patch("cp1.yaml", "- op: move\n  from: /cluster/secretx\n  path: /a\n")),
    Case("replace-root-type", _patch("cp1.yaml", "- op: replace\n  path: /cluster\n  value: flat\n")),
    # --- a secret copied into a validated field ---
    Case("copy-machine-type", _copy("/machine/token", "/machine/type", "cp1.yaml")),
    Case("copy-version", _copy("/cluster/secret", "/version", "cp1.yaml")),
    Case("copy-endpoint", _copy("/cluster/secret", "/cluster/controlPlane/endpoint", "cp1.yaml")),
    Case("copy-install-disk", _copy("/cluster/token", "/machine/install/disk")),
    Case("copy-manifest-name", _copy("/cluster/secret", "/cluster/inlineManifests/0/name", "cp1.yaml", MANIFEST)),
    # --- a secret copied into a plain field (taint) ---
    Case("copy-hostname", _copy("/cluster/secret", "/machine/network/hostname"),
         (("-v", "2"), ("plan",), ("plan", "--format", "markdown"), ("stage",), ("check",))),
    Case("copy-label", _copy("/cluster/secret", "/machine/nodeLabels/leak", before=LABELS), (("-v", "2"), ("plan",))),
    Case("move-hostname", _patch("w1.yaml", "- op: move\n  from: /machine/token\n  path: /machine/network/hostname\n")),
    Case("copy-ca-key-annotation", _copy("/cluster/ca/key", "/machine/nodeAnnotations/a", "cp1.yaml",
                                         "- op: add\n  path: /machine/nodeAnnotations\n  value: {}\n")),
    Case("copy-id-hostname", _copy("/cluster/id", "/machine/network/hostname")),
    Case("copy-token-certsan", _copy("/machine/token", "/machine/certSANs/-")),
    Case("copy-cluster-name", _copy("/cluster/secret", "/cluster/clusterName")),
    Case("copy-dns-domain", _copy("/cluster/token", "/cluster/network/dnsDomain")),
    Case("copy-manifest-contents", _copy("/cluster/secretboxEncryptionSecret", "/cluster/inlineManifests/0/contents",
                                         "cp1.yaml", MANIFEST)),
    Case("copy-sa-key-label", _copy("/cluster/serviceAccount/key", "/machine/nodeLabels/k", "cp1.yaml", LABELS)),
    # --- strategic merge type clashes ---
    Case("merge-token-mapping", _patch("cp1.yaml", "machine:\n  token:\n    a: b\n")),
    Case("merge-secret-list", _patch("cp1.yaml", "cluster:\n  secret: [a, b]\n")),
    Case("merge-ca-string", _patch("cp1.yaml", "machine:\n  ca: just-a-string\n")),
    # --- templates ---
    Case("tpl-subclasses", _template("{{ ''.__class__.__mro__[1].__subclasses__() }}\nmachine: {}\n"),
         (("check",), ("graph", "--formats", "none"), ("plan",))),
    Case("tpl-popen", _template("{{ cycler.__init__.__globals__.os.popen('cat @KEY@').read() }}\n"),
         (("check",), ("graph", "--formats", "none"), ("plan",), ())),
    Case("tpl-open-key-lower", _template("machine:\n  nodeLabels:\n    a: \"{{ cycler.__init__.__globals__"
                                         ".__builtins__.open('@KEY@').read() | lower }}\"\n")),
    Case("tpl-open-key-reverse", _template("machine:\n  nodeLabels:\n    a: \"{{ lipsum.__globals__.__builtins__"
                                           ".open('@KEY@').read() | reverse | join('') }}\"\n"), (("plan",),)),
    Case("tpl-context", _template("{{ self._TemplateReference__context }}\n")),
    Case("tpl-recursion", _template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}\nmachine: {}\n")),
    Case("tpl-huge-range", _template("{% for i in range(10**9) %}x{% endfor %}\n")),
    Case("tpl-huge-repeat", _template("a: {{ 'x' * 10**9 }}\n")),
    Case("tpl-format", _template("a: {{ '{0.__class__}'.format(1) }}\n")),
    Case("tpl-undefined", _template("machine:\n  network:\n    hostname: {{ vars.nope }}\n")),
    Case("tpl-syntax", _template("machine: {% if %}\n")),
    # --- symlinks ---
    Case("patch-symlink-key", _symlinked_patch(lambda repo, _tmp: repo.home / KEY),
         (("-v", "2"), ("plan",), ("check",), ("verify",))),
    Case("patch-symlink-outside", _symlinked_patch(lambda repo, _tmp: repo.path / "cluster.yaml")),
    Case("rendered-symlink", _rendered_symlink, ((), ("keep=1",))),
    # --- the guard: the test itself stages a secret; the guard refuses it and never prints it ---
    Case("gitkeep-config", _decrypted_as("encrypted/.gitkeep"), GUARD, True),
    Case("gitattributes-config", _decrypted_as("encrypted/.gitattributes"), GUARD, True),
    Case("bak-config", _decrypted_as("cp1.yaml.bak"), GUARD, True),
    Case("md-bundle", _decrypted_as("notes.md", "encrypted/secrets.encrypted.yaml"), GUARD, True),
    Case("nosuffix-key", _key_as("agekey"), GUARD, True),
    Case("utf16-config", _decrypted_as("copy.yaml", encoding="utf-16"), GUARD, True),
    Case("syntax-error-config", _decrypted_as("broken.yaml", transform=lambda t: t.replace(":", ": [", 1)), GUARD,
         True),
    Case("jinja-comment", _jinja_comment, GUARD, True),
]
FULL_SWEEP = ("typo-add", "copy-hostname")




def _objects(repo: Repo) -> dict[str, bytes]:
    listing = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"],
                             cwd=repo.path, capture_output=True, text=True, check=True).stdout.split()
    data = subprocess.run(["git", "cat-file", "--batch"], cwd=repo.path, input="\n".join(listing).encode() + b"\n",
                          capture_output=True, check=True).stdout
    out, offset = {}, 0
    for name in listing:
        end = data.index(b"\n", offset)
        size = int(data[offset:end].split()[2])
        out[name] = data[end + 1:end + 1 + size]
        offset = end + 2 + size
    return out


def _sweep(repo: Repo, tmp: Path) -> list[str]:
    """Every other task once, the watcher for one rebuild, the drill and the hook; their outputs."""
    outputs = []
    for args in (("check",), ("verify",), ("plan", "--format", "markdown", "--output", "plan.md"),
                 ("graph", "--formats", "none"), ("hooks",), ("rekey",), ("rotate",)):
        result = repo.doit(*args)
        outputs.append(result.stdout + result.stderr)
    backup = tmp / "backup-key.txt"
    shutil.copy2(repo.home / KEY, backup)
    repo.git("add", "patches")
    hook = subprocess.run(["git", "commit", "-qm", "hostile"], cwd=repo.path, env=keyless(repo),
                          capture_output=True, text=True, check=False)
    outputs.append(hook.stdout + hook.stderr)
    subprocess.run(["git", "commit", "-qm", "hostile", "--no-verify"], cwd=repo.path, env=repo.env,
                   capture_output=True, check=False)  # the drill recovers HEAD: let the input be there
    drill_tmp = tmp / "drill-tmp"
    drill_tmp.mkdir()
    drill = repo.doit("drill", "--key", str(backup), env={**repo.env, "TMPDIR": str(drill_tmp)})
    outputs.append(drill.stdout + drill.stderr)
    watcher = Watching(repo)
    try:
        watcher.ready()
        patch = repo.path / "patches" / "cp2.yaml"
        patch.write_text(patch.read_text() + "  install:\n    wipe: true\n")
        watcher.wait_for(r"rebuild 2 (done|failed)", timeout=20)
        watcher.stop()
    finally:
        watcher.close()
    outputs.append(watcher.output)
    return outputs


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_no_secret_leaves(case: Case, promoted_template: Repo, known: list[str], tmp_path: Path) -> None:
    started = time.monotonic()
    repo = copy_repo(promoted_template, tmp_path)
    case.setup(repo, tmp_path)
    before = set(_objects(repo)) if case.own_secrets else set()
    outputs = []
    for args in case.tasks:
        result = repo.doit(*args, env=keyless(repo) if args == ("check",) else None)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, (args, output)
        if case.own_secrets:
            assert result.returncode == 1, (args, output)  # the guard refused what the test staged
        outputs.append(output)
    if case.name in FULL_SWEEP:
        outputs += _sweep(repo, tmp_path)
    found = {f"output {index}": leaks(text, known) for index, text in enumerate(outputs)}
    skip = (repo.path / "rendered", repo.path / ".git", repo.home / KEY, tmp_path / "backup-key.txt")
    if case.own_secrets:  # the file the test wrote on purpose, and its blob, are the input, not a leak
        skip += tuple(repo.path / line for line in repo.git("diff", "--cached", "--name-only").split())
    for where, data in files_under(tmp_path, skip).items():
        found[where] = leaks(data, known)
    for name, data in _objects(repo).items():
        if name not in before:
            found[f"git object {name}"] = leaks(data, known)
    leaked = {where: what for where, what in found.items() if what}
    assert leaked == {}, leaked
    assert not (tmp_path / "pwned").exists()
    print(f"{case.name}: {time.monotonic() - started:.2f} s")
