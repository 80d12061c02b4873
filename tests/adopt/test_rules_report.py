"""What a hand-made `.sops.yaml` lacks (pipeline.sops.config.hand_made_problems), with sops as the oracle."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.sops import runner as sops
from pipeline.sops.config import (
    ENCRYPTED_REGEX,
    SENSITIVE_FIELDS,
    hand_made_problems,
    missed_fields,
    parse_sops_config,
    render_sops_config,
)
from tests.adopt.test_seed_repository import seed_block

KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"  # age's documented example recipient
NODES = ["encrypted/talos-kube-cp1.encrypted.yaml", "encrypted/talos-kube-w1.encrypted.yaml"]


def seed_config() -> str:
    return seed_block("## 2.2 Setup", "yaml").replace("age1replace-with-your-public-key", KEY)


def test_the_seeds_rules_lack_three_things_each_named_with_its_fix() -> None:
    lines = hand_made_problems(parse_sops_config(seed_config()), NODES)
    assert len(lines) == 3
    assert all(line.startswith(".sops.yaml: ") and "\n" not in line for line in lines)
    assert "talosconfig (encrypted/talosconfig.encrypted.yaml)" in lines[0]
    assert "per-node artefacts (encrypted/talos-kube-cp1.encrypted.yaml and 1 more)" in lines[1]
    assert "creation_rules[1]" in lines[2] and f"set its encrypted_regex: '{ENCRYPTED_REGEX}'" in lines[2]


def test_the_printed_fix_makes_a_file_with_no_problems() -> None:
    config = parse_sops_config(seed_config())
    lines = hand_made_problems(config, NODES)
    data = yaml.safe_load(seed_config())
    for line in lines[:2]:
        data["creation_rules"].append(yaml.safe_load(line[line.index("{"):]))
    data["creation_rules"][1]["encrypted_regex"] = lines[2].split("encrypted_regex: ")[1].strip("'")
    fixed = parse_sops_config(yaml.safe_dump(data, sort_keys=False))
    assert hand_made_problems(fixed, NODES) == []
    # The appended per-node rule comes last, so the bundle still gets the whole-file rule.
    assert fixed.rule_for("encrypted/secrets.encrypted.yaml").encrypted_regex is None  # type: ignore[union-attr]


def test_a_generated_file_has_no_problems() -> None:
    assert hand_made_problems(parse_sops_config(render_sops_config([KEY])), NODES) == []


def test_missed_fields_agree_with_what_sops_encrypts(tmp_path: Path) -> None:
    # The oracle: sops itself, under the seed's rule, encrypting one key per sensitive field name.
    (tmp_path / ".sops.yaml").write_text(seed_config())
    document = {name: "value" for name in SENSITIVE_FIELDS}
    out = sops.encrypt(yaml.safe_dump(document).encode(), "encrypted/controlplane.encrypted.yaml", tmp_path)
    encrypted = yaml.safe_load(out)
    left_plain = [name for name in SENSITIVE_FIELDS if not str(encrypted[name]).startswith("ENC[")]
    rule = parse_sops_config(seed_config()).rules[1]
    assert missed_fields(rule) == left_plain
    assert "aescbcEncryptionSecret" in left_plain and "password" in left_plain and "privateKey" in left_plain


def test_whole_file_and_unencrypted_regex_rules() -> None:
    text = f"creation_rules:\n  - age: {KEY}\n  - unencrypted_regex: '^password$'\n    age: {KEY}\n"
    config = parse_sops_config(text)
    assert missed_fields(config.rules[0]) == []
    assert missed_fields(config.rules[1]) == ["password"]
    assert re.search(ENCRYPTED_REGEX, "password")
