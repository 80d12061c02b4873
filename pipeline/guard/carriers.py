"""Known secret carriers, checked without a key, and advice that leads somewhere.

Secrets hide under key names outside the Talos secret fields. Two carriers are common enough to know:

- an ``ExtensionServiceConfig``'s ``environment`` list (``TS_AUTHKEY=tskey-...``, the usual Tailscale set-up);
- ``cluster.inlineManifests[].contents`` holding a Kubernetes ``Secret`` (a cloud API token).

The generated `.sops.yaml` encrypts both (``environment`` and ``contents`` are in its encrypted_regex). This
module flags them in plaintext: in tracked patches and cluster.yaml (an environment entry whose name or
value looks like a credential; a Secret with data) and in artefacts (any plaintext environment entry of an
ExtensionServiceConfig; any plaintext inline manifest holding a Secret). A value written as
``{{ secrets.NAME }}`` is not plaintext: it comes from the encrypted variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.talos.inventory import INVENTORY_FILE, PATCH_DIR, load_inventory

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENC = re.compile(r"^ENC\[[A-Z0-9_]+,data:")
# A template expression that reads the encrypted variables: ciphertext as far as the guard is concerned.
_SECRET_EXPR = re.compile(r"\{\{-?\s*secrets\b[^{}]*-?\}\}")
_STAND_IN = "ENC[TEMPLATE,data:secrets]"
_TEMPLATE_EXPR = re.compile(r"\{\{.*?\}\}")
_TEMPLATE_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)
# Environment variable names that carry credentials, and value shapes of well-known tokens.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASS(WORD|WD)?|AUTH|CREDENTIALS?|PRIVATE|PSK)(_|$)", re.IGNORECASE)
_TOKEN_SHAPE = re.compile(r"^(tskey-|ghp_|gho_|github_pat_|glpat-|xox[abpr]-|AKIA[0-9A-Z]{16}|sk-|hvs\.|dop_v1_)")
_SECRET_VAR = re.compile(r"(password|passwd|token|secret|authkey|auth_key|api_?key|private_?key|credential)",
                         re.IGNORECASE)


_MANIFEST_ITEMS = re.compile(r"inlineManifests:[ \t]*\n[ \t]*- ")


def stand_in(text: str) -> str:
    """``text`` with every ``{{ secrets... }}`` expression replaced by a ciphertext stand-in (keyless scans)."""
    return _SECRET_EXPR.sub(_STAND_IN, text) if "secrets" in text else text


def _is_plain(value: Any) -> bool:
    return value not in (None, "") and not (isinstance(value, str) and (_ENC.match(value) or _STAND_IN in value))


def _env_entries(doc: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    environment = doc.get("environment")
    if isinstance(environment, list):
        yield from enumerate(environment)


def _looks_secret(entry: Any) -> bool:
    if not isinstance(entry, str) or "=" not in entry:
        return False
    name, value = entry.split("=", 1)
    if not value or _STAND_IN in value:
        return False
    return bool(_SECRET_NAME.search(name)) or bool(_TOKEN_SHAPE.match(value))


def _manifest_secrets(contents: Any) -> list[str]:
    """Kinds of secret-holding documents inside an inline manifest's contents (plaintext)."""
    if not isinstance(contents, str) or "Secret" not in contents:
        return []
    try:
        docs = list(yaml.load_all(contents, Loader=_LOADER))
    except yaml.YAMLError:
        # Not YAML we can read: a Secret kind line is still a Secret.
        return ["Secret"] if re.search(r"^kind:\s*Secret\s*$", contents, re.MULTILINE) else []
    return [str(doc.get("kind")) for doc in docs if isinstance(doc, dict) and doc.get("kind") == "Secret"
            and any(doc.get(field) for field in ("data", "stringData"))]


def _doc_findings(doc: Any, strict_env: bool) -> Iterator[str]:
    """Dotted paths of plaintext carriers in one machine-config document (or patch document)."""
    if not isinstance(doc, dict):
        return
    if doc.get("kind") == "ExtensionServiceConfig":
        for index, entry in _env_entries(doc):
            if _is_plain(entry) and (strict_env or _looks_secret(entry)):
                name = str(entry).split("=", 1)[0][:60] if isinstance(entry, str) else "?"
                yield f"environment[{index}] ({name}=...)"
    cluster = doc.get("cluster")
    manifests = cluster.get("inlineManifests") if isinstance(cluster, dict) else None
    for index, manifest in enumerate(manifests if isinstance(manifests, list) else []):
        if isinstance(manifest, dict) and _is_plain(manifest.get("contents")) \
                and _manifest_secrets(manifest.get("contents")):
            yield f"cluster.inlineManifests[{index}].contents (a Kubernetes Secret)"


def _untemplated(text: str) -> str:
    return _TEMPLATE_EXPR.sub("x", _TEMPLATE_TAG.sub("", stand_in(text)))


def scan_plaintext(text: str, path: str) -> list[str]:
    """Findings for a tracked or staged file outside encrypted/: carriers in plaintext, with advice."""
    if not path.endswith((".yaml", ".yml")) or ("environment" not in text and "inlineManifests" not in text
                                                 and PurePosixPath(path).name != INVENTORY_FILE):
        return []
    try:
        documents = list(yaml.load_all(_untemplated(text), Loader=_LOADER))
    except yaml.YAMLError:
        return []
    if _is_sealed(documents):
        return []  # an encrypted patch: its carriers are ENC[...] and judged as such below
    findings = []
    for doc in documents:
        for field in _doc_findings(doc, strict_env=False):
            findings.append(f"{path}: {field} holds a secret in plaintext: {move_advice(path, field)}")
        if PurePosixPath(path).name == INVENTORY_FILE and isinstance(doc, dict):
            findings.extend(_inventory_vars(doc, path))
    return findings


def _is_sealed(documents: list[Any]) -> bool:
    return any(isinstance(doc, dict) and isinstance(doc.get("sops"), dict) for doc in documents)


def _inventory_vars(doc: dict[str, Any], path: str) -> Iterator[str]:
    # Template variables in cluster.yaml are plaintext in git: a credential there belongs in the vars file.
    scopes = [("vars", doc.get("vars"))]
    nodes = doc.get("nodes")
    if isinstance(nodes, dict):
        scopes += [(f"nodes.{name}.vars", node.get("vars")) for name, node in nodes.items() if isinstance(node, dict)]
    for where, values in scopes:
        for name, value in (values.items() if isinstance(values, dict) else ()):
            if isinstance(value, str) and _is_plain(value) and len(value) >= 4 \
                    and (_SECRET_VAR.search(str(name)) or _TOKEN_SHAPE.match(value)):
                yield (f"{path}: {where}.{name} looks like a secret in plaintext: move it to the encrypted variables: "
                       f"doit secrets set {name} (value on stdin), then write {{{{ secrets.{name} }}}} where "
                       f"{{{{ vars.{name} }}}} was, and remove it from {path}")


def scan_artefact(text: str, path: str) -> list[str]:
    """Findings for an artefact: a carrier left in plaintext (its `.sops.yaml` rule does not encrypt it)."""
    # Cheap first: every artefact names `environment` in its sops metadata, few hold a carrier.
    if "ExtensionServiceConfig" not in text and not _MANIFEST_ITEMS.search(text):
        return []
    try:
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError:
        return []  # the artefact scan reports what is not YAML
    return [f"{path}: {field} is plaintext (must be ENC[...]: add environment and contents to the encrypted_regex "
            "of its .sops.yaml rule, then run doit)" for doc in documents for field in _doc_findings(doc, True)]


def _suggested_name(path: str, field: str) -> str:
    stem = PurePosixPath(path).name.split(".")[0]
    last = re.findall(r"[A-Za-z][A-Za-z0-9]*", field.split(" (")[0].split("[")[0].rsplit(".", 1)[-1]) or ["secret"]
    env = re.match(r".*\(([A-Za-z_][A-Za-z0-9_]*)=", field)
    base = env.group(1).lower() if env else f"{stem}_{last[-1]}"
    return re.sub(r"[^A-Za-z0-9_]", "_", base).lower()


def move_advice(path: str, field: str) -> str:
    """The exact commands that move a plaintext secret of a tracked patch into the encrypted variables,
    or the whole patch into an encrypted patch. Never `git rm --cached`: a fresh clone needs the file."""
    name = _suggested_name(path, field)
    stem = PurePosixPath(path).name.split(".")[0]
    if "inlineManifests" in field:
        return (f"move it into an encrypted patch: sops edit {PATCH_DIR}/{stem}.sops.yaml (contents are encrypted "
                f"there), or write each stringData value as {{{{ secrets.NAME }}}} after doit secrets set NAME")
    key = field.split(" (")[0].rsplit(".", 1)[-1]
    if key.startswith("environment["):
        env = field.split("(", 1)[1].split("=", 1)[0] if "(" in field else "NAME"
        line = f"- {env}={{{{ secrets.{name} }}}}"
    else:
        line = f'{key.split("[")[0]}: "{{{{ secrets.{name} }}}}"'
    return (f"doit secrets set {name} (value on stdin), then write {line} in {path}; "
            f"or move the patch into an encrypted one: sops edit {PATCH_DIR}/{stem}.sops.yaml")


def unused_patches(root: Path) -> set[str]:
    """Files under patches/ that no node uses (empty when the inventory does not parse: nothing to excuse)."""
    try:
        inventory = load_inventory(root)
    except PipelineError:
        return set()
    used = {source for node in inventory.nodes.values() for source in inventory.patches_for(node)}
    folder = root / PATCH_DIR
    present = {path.relative_to(root).as_posix() for path in folder.rglob("*") if path.is_file()} \
        if folder.is_dir() else set()
    return present - used


def excuse_unused(findings: list[str], root: Path) -> list[str]:
    """A promotion is not blocked by a patch file no node uses (`doit check` still reports it)."""
    if not any(line.startswith(f"{PATCH_DIR}/") for line in findings):
        return findings
    unused = unused_patches(root)
    return [line for line in findings if line.split(":", 1)[0] not in unused]
