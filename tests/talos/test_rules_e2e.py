"""Ported Talos rules (pipeline/talos/rules/) end to end: a real `doit` in a real repo (tests/conftest.py)
refuses a patch that breaks one, exit 1, with one line naming the patch file and line, and promotes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Repo


def _output(result: Any) -> str:
    return result.stdout + result.stderr


def _use_patch(repo: Repo, name: str, text: str, role: str) -> None:
    (repo.path / "patches" / name).write_text(text)
    cluster = repo.path / "cluster.yaml"
    before = cluster.read_text()
    assert f"  {role}: []" in before
    cluster.write_text(before.replace(f"  {role}: []", f"  {role}: [{name}]"))


VIP_ON_WORKERS = """\
machine:
  network:
    interfaces:
      - interface: eth0
        vip:
          ip: 192.168.1.99
"""

BOND_MODE_TYPO = """\
# LACP bond for the control plane
machine:
  network:
    interfaces:
      - interface: bond0
        dhcp: true
        bond:
          mode: lacp
          interfaces: [eth1, eth2]
"""

USER_VOLUME_NAME = """\
apiVersion: v1alpha1
kind: UserVolumeConfig
name: local_path
provisioning:
  diskSelector:
    match: disk.transport == 'nvme'
  maxSize: 50GiB
"""


@pytest.mark.parametrize(
    ("name", "text", "role", "where", "reason"),
    [
        # pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (Config.Validate, worker branch)
        ("vip.yaml", VIP_ON_WORKERS, "worker", "patches/vip.yaml:5: ",
         "machine.network.interfaces[0].vip: virtual (shared) IP is not allowed on non-controlplane nodes"),
        # pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (checkBond)
        ("bond.yaml", BOND_MODE_TYPO, "controlplane", "patches/bond.yaml:8: ",
         "machine.network.interfaces[0].bond.mode: invalid bond mode"),
        # pkg/machinery/config/types/block/user_volume_config.go (UserVolumeConfigV1Alpha1.Validate)
        ("volume.yaml", USER_VOLUME_NAME, "worker", "patches/volume.yaml:3: ",
         "UserVolumeConfig: name: name can only contain ASCII letters, digits, and hyphens"),
    ],
    ids=["vip-on-worker", "bond-mode-typo", "user-volume-name"],
)
def test_a_patch_breaking_a_talos_rule_is_refused(
    promoted: Repo, name: str, text: str, role: str, where: str, reason: str
) -> None:
    before = promoted.artefacts()
    _use_patch(promoted, name, text, role)
    result = promoted.doit()
    output = _output(result)
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if where in line]
    assert len(lines) == 1 and reason in lines[0], output
    assert promoted.artefacts() == before  # no node promoted
