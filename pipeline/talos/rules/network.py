"""Rules of the network documents Talos v1.12+ registers, ported from
``pkg/machinery/config/types/network/*.go`` at v1.12.11 and v1.13.9 (each document's ``Validate`` and
``V1Alpha1ConflictValidate``; the latter called by ``pkg/machinery/config/container/container.go``).

v1.11 registers none of these kinds but EthernetConfig (ethernet.go, the same at v1.11.6): strict decoding
refuses the others there, so only the EthernetConfig rule runs on v1.11.
"""

from __future__ import annotations

from typing import Any

from pipeline.talos.rules.base import (
    Path,
    RuleFinding,
    as_dict,
    as_list,
    documents_of,
    duration_negative,
    get,
    is_set,
    machine_config,
    parse_cidr,
    parse_ip,
    subnet_filter_ok,
    wireguard_key_ok,
)

# Kinds sharing the link fields (addresses, routes): CommonLinkConfig.Validate (link.go).
_LINK_KINDS = ("LinkConfig", "BondConfig", "BridgeConfig", "DummyLinkConfig", "VLANConfig", "WireguardConfig")
_NAMED_KINDS = (*_LINK_KINDS, "LinkAliasConfig", "DHCPv4Config", "DHCPv6Config", "Layer2VIPConfig",
                "StaticHostConfig")


def _link_common(doc: dict[Any, Any], add: Any) -> None:
    """Addresses are prefixes of a specified IP; route destination a prefix, gateway/source IPs (link.go)."""
    for i, entry in enumerate(as_list(doc.get("addresses"))):
        address = as_dict(entry).get("address")
        parsed = parse_cidr(address)
        if not is_set(address):
            add(("addresses", i, "address"), f"address {i} must be specified")
        elif parsed is None:
            add(("addresses", i, "address"), f"address {i} must be a valid IP prefix")
        elif parsed.ip.is_unspecified:
            add(("addresses", i, "address"), f"address {i} must be a valid IP address (not unspecified)")
    for i, route in enumerate(as_list(doc.get("routes"))):
        route = as_dict(route)
        destination = route.get("destination")
        if is_set(destination):
            parsed = parse_cidr(destination)
            if parsed is None or parsed.ip.is_unspecified:
                # 0.0.0.0/0 too: a default route is written without a destination.
                add(("routes", i, "destination"), f"route {i} destination must be a valid IP prefix")
        for key in ("gateway", "source"):
            value = route.get(key)
            if is_set(value) and (parse_ip(value) is None or parse_ip(value).is_unspecified):  # type: ignore[union-attr]
                add(("routes", i, key), f"route {i} {key} must be a valid IP address")


def _wireguard(doc: dict[Any, Any], add: Any) -> None:
    """WireguardConfig (wireguard.go, v1.12+): keys are base64 of 32 bytes, port and keepalive in range."""
    if not is_set(doc.get("privateKey")):
        add(("privateKey",), "wireguard private key must be specified")
    elif not wireguard_key_ok(doc.get("privateKey")):
        add(("privateKey",), "wireguard private key is invalid (not base64 of 32 bytes)")
    port = doc.get("listenPort")
    if isinstance(port, int) and not isinstance(port, bool) and not 0 <= port <= 65535:
        add(("listenPort",), "wireguard listen port must be between 0 and 65535")
    for p, peer in enumerate(as_list(doc.get("peers"))):
        peer = as_dict(peer)
        if not is_set(peer.get("publicKey")):
            add(("peers", p, "publicKey"), "wireguard peer public key must be specified")
        elif not wireguard_key_ok(peer.get("publicKey")):
            add(("peers", p, "publicKey"), "wireguard peer public key is invalid (not base64 of 32 bytes)")
        if is_set(peer.get("presharedKey")) and not wireguard_key_ok(peer.get("presharedKey")):
            add(("peers", p, "presharedKey"), "wireguard peer preshared key is invalid (not base64 of 32 bytes)")
        if duration_negative(peer.get("persistentKeepaliveInterval")):
            add(("peers", p, "persistentKeepaliveInterval"), "persistent keepalive interval cannot be negative")


def _kubespan(documents: Any, legacy: tuple[int, dict[Any, Any]] | None, findings: list[RuleFinding]) -> None:
    """KubeSpanConfig (kubespan.go, v1.13): MTU and endpoint filters, and not next to the legacy section."""
    for index, doc in documents_of(documents, "KubeSpanConfig"):
        mtu = doc.get("mtu")
        if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu < 1280:
            findings.append(RuleFinding(index, "KubeSpanConfig", ("mtu",), "kubespan link MTU must be at least 1280"))
        for i, cidr in enumerate(as_list(get(doc, "filters", "endpoints"))):
            if not subnet_filter_ok(cidr):
                findings.append(RuleFinding(index, "KubeSpanConfig", ("filters", "endpoints", i),
                                            "KubeSpan endpoint filter is not a valid IP or CIDR"))
        if legacy is not None and get(legacy[1], "machine", "network", "kubespan") is not None:
            findings.append(RuleFinding(legacy[0], "v1alpha1", ("machine", "network", "kubespan"),
                                        "kubespan is already configured in v1alpha1 (conflicts with KubeSpanConfig)"))


def network_rules(documents: Any, version: str) -> list[RuleFinding]:
    """Every broken rule of the v1.12+ network documents, and their conflicts with the machine config."""
    findings: list[RuleFinding] = []
    for index, doc in documents_of(documents, "EthernetConfig"):
        if not is_set(doc.get("name")):
            findings.append(RuleFinding(index, "EthernetConfig", ("name",), "name is required"))
    if version == "v1.11":
        return findings
    legacy = machine_config(documents)

    def adder(index: int, kind: str) -> Any:
        def add(path: Path, reason: str) -> None:
            findings.append(RuleFinding(index, kind, path, reason))
        return add

    for kind in _NAMED_KINDS:
        for index, doc in documents_of(documents, kind):
            add = adder(index, kind)
            name = doc.get("name")
            if not is_set(name):
                add(("name",), "name must be specified")
            if kind in _LINK_KINDS:
                _link_common(doc, add)
            if kind == "BondConfig":
                if not as_list(doc.get("links")):
                    add(("links",), "at least one link must be specified")
                if not is_set(doc.get("bondMode")):
                    add(("bondMode",), "bond mode must be specified")
            elif kind == "VLANConfig":
                vlan_id = doc.get("vlanID")
                if not isinstance(vlan_id, int) or isinstance(vlan_id, bool) or not 1 <= vlan_id <= 4094:
                    add(("vlanID",), "vlanID must be specified and between 1 and 4094")
                if not is_set(doc.get("parent")):
                    add(("parent",), "parent must be specified")
                if doc.get("vlanMode") not in (None, "802.1q", "802.1ad"):
                    add(("vlanMode",), "vlanMode must be either '802.1q' or '802.1ad'")
            elif kind == "WireguardConfig":
                _wireguard(doc, add)
            elif kind == "LinkAliasConfig":
                if version == "v1.13" and isinstance(name, str) and "%" in name:
                    prefix, _, suffix = name.partition("%")
                    if suffix != "d" or not prefix:
                        add(("name",), "name contains an invalid format verb (use a %d suffix)")
                if not is_set(get(doc, "selector", "match")):
                    add(("selector",), "link selector is required")
            elif kind in ("DHCPv4Config", "DHCPv6Config"):
                duid = doc.get("clientIdentifier") == "duid"
                if is_set(doc.get("duidRaw")) and not duid:
                    add(("duidRaw",), "duidRaw can only be set if clientIdentifier is 'duid'")
                if duid and not is_set(doc.get("duidRaw")):
                    add(("clientIdentifier",), "duidRaw must be set if clientIdentifier is 'duid'")
            elif kind in ("Layer2VIPConfig", "StaticHostConfig"):
                if is_set(name) and parse_ip(name) is None:
                    add(("name",), "name must be a valid IP address")
                if kind == "Layer2VIPConfig" and not is_set(doc.get("link")):
                    add(("link",), "link must be specified")
                if kind == "StaticHostConfig" and not as_list(doc.get("hostnames")):
                    add(("hostnames",), "at least one hostname is required")

    if version == "v1.13":
        _kubespan(documents, legacy, findings)
    legacy_network = as_dict(get(legacy[1], "machine", "network")) if legacy else {}
    for index, doc in documents_of(documents, "TimeSyncConfig"):
        add = adder(index, "TimeSyncConfig")
        if duration_negative(doc.get("bootTimeout")):
            add(("bootTimeout",), "bootTimeout cannot be negative")
        if doc.get("ntp") is not None and doc.get("ptp") is not None:
            add(("ptp",), "only one of ntp or ptp configuration can be specified")
        time = get(legacy[1], "machine", "time") if legacy else None
        if isinstance(time, dict):
            li = legacy[0]  # type: ignore[index]
            conflicts = (("disabled", "time sync cannot be disabled in both v1alpha1 and TimeSyncConfig"),
                         ("servers", "time servers cannot be specified in both v1alpha1 and TimeSyncConfig"),
                         ("bootTimeout", "boot timeout cannot be specified in both v1alpha1 and TimeSyncConfig"))
            for key, reason in conflicts:
                value = time.get(key)
                if (value is True) if key == "disabled" else is_set(value) and value not in ("0s", "0"):
                    findings.append(RuleFinding(li, "v1alpha1", ("machine", "time", key), reason))
                    break  # Talos reports the first conflict only
    for _index, _doc in documents_of(documents, "ResolverConfig"):
        if legacy is None:
            break
        # Talos counts the legacy nameservers that parse as IPs (Config.Resolvers); a present searchDomains
        # list, even empty (Config.SearchDomains).
        conflicts = (("searchDomains", lambda v: v is not None),
                     ("nameservers", lambda v: any(parse_ip(n) is not None for n in as_list(v))),
                     ("disableSearchDomain", lambda v: v is True))
        for key, present in conflicts:
            if present(legacy_network.get(key)):
                findings.append(RuleFinding(legacy[0], "v1alpha1", ("machine", "network", key),
                                            f".machine.network.{key} is already set in v1alpha1 config "
                                            "(conflicts with ResolverConfig)"))
                break
    return findings


def hostname_rules(documents: Any, version: str) -> list[RuleFinding]:
    """HostnameConfig (hostname.go, v1.12+): ``Validate`` and ``V1Alpha1ConflictValidate``."""
    findings: list[RuleFinding] = []
    if version == "v1.11":
        return findings
    legacy = machine_config(documents)
    for index, doc in documents_of(documents, "HostnameConfig"):
        def add(path: Path, reason: str) -> None:
            findings.append(RuleFinding(index, "HostnameConfig", path, reason))  # noqa: B023 - used at once

        auto, hostname = doc.get("auto"), doc.get("hostname") or ""
        if auto is None and not hostname:
            add((), "either 'auto' or 'hostname' must be set")
        if auto not in (None, "off") and hostname:
            # Pointed at the hostname: it is the usual late addition (a patch setting only `hostname:`).
            add(("hostname",), "'auto' and 'hostname' cannot be set at the same time")
        if auto is not None and auto not in ("off", "stable"):
            add(("auto",), "invalid value for 'auto' (allowed: off, stable)")
        if hostname:
            text = str(hostname)
            if len(text) > 253:
                add(("hostname",), f"fqdn is too long: {len(text)}")
            label = text.split(".", 1)[0]
            if not label or len(label) > 63:
                add(("hostname",), "invalid hostname (first label must be 1-63 characters)")
        if legacy is not None:
            li, mc = legacy
            if get(mc, "machine", "network", "hostname"):
                findings.append(RuleFinding(li, "v1alpha1", ("machine", "network", "hostname"),
                                            "static hostname is already set in v1alpha1 config "
                                            "(conflicts with HostnameConfig)"))
            elif get(mc, "machine", "features", "stableHostname") is True:
                findings.append(RuleFinding(li, "v1alpha1", ("machine", "features", "stableHostname"),
                                            "stable hostname is already set in v1alpha1 config "
                                            "(conflicts with HostnameConfig)"))
    return findings
