"""Registry documents Talos v1.12+ registers, ported from ``pkg/machinery/config/types/cri/`` (registry_mirror.go,
registry_auth.go, registry_tls.go: each ``Validate``), the same at v1.12.11 and v1.13.9. The TLS document's
certificate and key parsing is not ported (it needs an X.509/PEM parser); its name rule is.
"""

from __future__ import annotations

from typing import Any

from pipeline.talos.rules.base import RuleFinding, as_dict, as_list, documents_of, is_set, split_url

KINDS = ("RegistryMirrorConfig", "RegistryAuthConfig", "RegistryTLSConfig")


def cri_rules(documents: Any, version: str) -> list[RuleFinding]:
    findings: list[RuleFinding] = []
    if version == "v1.11":
        return findings  # not registered: strict decoding refuses them
    for kind in KINDS:
        for index, doc in documents_of(documents, kind):
            if not is_set(doc.get("name")):
                findings.append(RuleFinding(index, kind, ("name",), "name must be specified"))
            if kind == "RegistryMirrorConfig":
                for e, endpoint in enumerate(as_list(doc.get("endpoints"))):
                    url = as_dict(endpoint).get("url")
                    parts = split_url(url)
                    if not is_set(url):
                        findings.append(RuleFinding(index, kind, ("endpoints", e, "url"), "url must be specified"))
                    elif parts is None or parts[0] not in ("http", "https"):
                        findings.append(RuleFinding(index, kind, ("endpoints", e, "url"),
                                                    "url has an unsupported scheme (http or https)"))
            elif kind == "RegistryAuthConfig":
                username, token, auth = (is_set(doc.get(key)) for key in ("username", "identityToken", "auth"))
                if username and token:
                    findings.append(RuleFinding(index, kind, ("identityToken",),
                                                "only one of username/password or identityToken can be specified"))
                if auth and (username or token):
                    findings.append(RuleFinding(index, kind, ("auth",), "only one of auth, username/password or "
                                                "identityToken can be specified"))
    return findings
