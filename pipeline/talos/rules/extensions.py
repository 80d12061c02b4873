"""ExtensionServiceConfig, ported from ``pkg/machinery/config/types/runtime/extensions/service_config.go``
(``ServiceConfigV1Alpha1.Validate``), identical at v1.11.6, v1.12.11 and v1.13.9.
"""

from __future__ import annotations

from typing import Any

from pipeline.talos.rules.base import RuleFinding, as_dict, as_list, documents_of, is_set

KIND = "ExtensionServiceConfig"


def extension_rules(documents: Any, version: str) -> list[RuleFinding]:
    findings: list[RuleFinding] = []
    for index, doc in documents_of(documents, KIND):
        if not is_set(doc.get("name")):
            findings.append(RuleFinding(index, KIND, ("name",), "name is required"))
            continue  # Talos stops at the first problem of this document
        files = as_list(doc.get("configFiles"))
        if not files and not as_list(doc.get("environment")):
            findings.append(RuleFinding(index, KIND, (), "no config files or environment defined for the extension"))
            continue
        for f, entry in enumerate(files):
            entry = as_dict(entry)
            for key, what in (("content", "content"), ("mountPath", "mount path")):
                if not is_set(entry.get(key)):
                    findings.append(RuleFinding(index, KIND, ("configFiles", f, key), f"extension {what} is required"))
    return findings
