"""`.sops.yaml` generation and rule matching (pure)."""

from __future__ import annotations

import re

import pytest

from pipeline.errors import PipelineError
from pipeline.sops.config import ENCRYPTED_REGEX, parse_sops_config, render_sops_config

KEY = "age1" + "q" * 58


def test_generated_rules_cover_every_artefact_name() -> None:
    config = parse_sops_config(render_sops_config([KEY]))
    assert config.generated
    whole = config.rule_for("encrypted/secrets.encrypted.yaml")
    assert whole is not None and whole.encrypted_regex is None
    assert config.rule_for("encrypted/talosconfig.encrypted.yaml") is whole
    for name in ("controlplane", "worker", "talos-kube-cp1", "talos-kube-w3"):
        rule = config.rule_for(f"encrypted/{name}.encrypted.yaml")
        assert rule is not None and rule.encrypted_regex == ENCRYPTED_REGEX
        assert rule.raw["mac_only_encrypted"] is True
        assert rule.recipients == (KEY,)


@pytest.mark.parametrize("field", ["token", "key", "crt", "id", "secret", "secretboxEncryptionSecret",
                                   "aescbcEncryptionSecret", "password", "auth", "identityToken",
                                   "privateKey", "passphrase", "apiToken"])
def test_regex_covers_every_sensitive_talos_field(field: str) -> None:
    assert re.search(ENCRYPTED_REGEX, field)


@pytest.mark.parametrize("field", ["hostname", "vlanId", "publicKey", "endpoint", "image", "clusterName"])
def test_regex_leaves_plain_fields_readable(field: str) -> None:
    assert not re.search(ENCRYPTED_REGEX, field)


def test_user_file_is_not_generated_and_lists_recipients() -> None:
    text = f"creation_rules:\n  - path_regex: .*\n    age: >-\n      {KEY},\n      age1{'p' * 58}\n"
    config = parse_sops_config(text)
    assert not config.generated
    assert config.recipients() == (KEY, "age1" + "p" * 58)


def test_no_rule_matches() -> None:
    config = parse_sops_config("creation_rules:\n  - path_regex: ^other/\n    age: x\n")
    assert config.rule_for("encrypted/a.encrypted.yaml") is None


def test_invalid_file_names_itself() -> None:
    with pytest.raises(PipelineError, match=r"^\.sops\.yaml:"):
        parse_sops_config("creation_rules: [\n")
