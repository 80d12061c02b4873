"""Talos's ``Validate()`` rules, ported per version (v1.11, v1.12, v1.13), one module per document family:

- :mod:`.v1alpha1`: the machine config (``v1alpha1_validation.go``, ``v1alpha1_logging.go``);
- :mod:`.network`: HostnameConfig and the v1.12+ network documents (``types/network/*.go``);
- :mod:`.block`: the volume documents (``types/block/*.go``);
- :mod:`.cri`: the v1.12+ registry documents (``types/cri/*.go``);
- :mod:`.extensions`: ExtensionServiceConfig (``types/runtime/extensions/service_config.go``);
- :mod:`.container`: duplicate and conflicting documents (``config/container/container.go``).

:func:`check` takes every document of one node and its version (``'v1.12'``) and returns
:class:`RuleFinding` s: document index, kind, path (a tuple) and a reason that never quotes a value.
Pure; imports nothing of the pipeline but the foundation, so ``talos.schema`` can call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.talos.rules.base import RuleFinding
from pipeline.talos.rules.block import block_rules
from pipeline.talos.rules.container import container_rules
from pipeline.talos.rules.cri import cri_rules
from pipeline.talos.rules.extensions import extension_rules
from pipeline.talos.rules.network import hostname_rules, network_rules
from pipeline.talos.rules.v1alpha1 import v1alpha1_rules

__all__ = ["RuleFinding", "check"]


def check(documents: Sequence[Any], version: str) -> list[RuleFinding]:
    """Every ported rule the documents break for ``version`` (``'v1.11'``, ``'v1.12'`` or ``'v1.13'``)."""
    findings: list[RuleFinding] = []
    for family in (v1alpha1_rules, hostname_rules, network_rules, cri_rules, block_rules, extension_rules,
                   container_rules):
        findings.extend(family(documents, version))
    return findings
