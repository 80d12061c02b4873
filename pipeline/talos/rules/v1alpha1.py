"""Rules of the machine config (v1alpha1), ported from Talos's
``pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go`` (``Config.Validate``, ``ClusterConfig.Validate``,
``ValidateCNI``, ``CheckDeviceInterface``/``Addressing``/``Routes``, ``checkBond``, ``checkVlans``,
``checkWireguard``, ``KubeletConfig.Validate``, ``EtcdConfig.Validate``, ``ClusterDiscoveryConfig.Validate``,
``ExternalCloudProviderConfig.Validate``) and ``v1alpha1_logging.go`` (``LoggingConfig.Validate``), tags
v1.11.6, v1.12.11 and v1.13.9.

Checks already made by ``talos.validation`` (machine type, CA keys, etcd on workers, install disk presence,
control plane endpoint, inline manifest names, persist) are not repeated here. Our mode is always ``metal``
(installing): rules Talos runs only when ``mode.RequiresInstall()`` are marked "metal-only".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pipeline import lazyre
from pipeline.talos.rules.base import (
    MACHINE_CONFIG,
    Path,
    RuleFinding,
    as_dict,
    as_list,
    endpoint_url_ok,
    get,
    ip_or_cidr_ok,
    is_set,
    parse_cidr,
    parse_ip,
    split_url,
    subnet_filter_ok,
    wireguard_key_ok,
)

Add = Callable[[Path, str], None]

_BOND_MODES = ("", "balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")
_HASH_POLICIES = ("", "layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4")
_LACP_RATES = ("", "slow", "fast")
_ARP_ALL_TARGETS = ("", "any", "all")
_PRIMARY_RESELECT = ("", "always", "better", "failure")
_FAIL_OVER_MAC = ("", "none", "active", "follow")
_AD_SELECT = ("", "stable", "bandwidth", "count")
# pkg/machinery/nethelpers/arpvalidate.go: the filter modes arrived in v1.12.
_ARP_VALIDATE = {"v1.11": ("", "none", "active", "backup", "all")}
_ARP_VALIDATE["v1.12"] = _ARP_VALIDATE["v1.13"] = (*_ARP_VALIDATE["v1.11"], "filter", "filter-active", "filter-backup")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_OWNED_ANNOTATIONS = ("talos.dev/owned-labels", "talos.dev/owned-annotations", "talos.dev/owned-taints")
_AUTHORIZER_TYPES = ("Node", "RBAC", "Webhook")
_INSTALL_DISK_TYPES = ("nvme", "sd", "hdd", "ssd")
# Kubernetes names (pkg/machinery/labels/validate.go): an optional DNS subdomain prefix, then a qualified name.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = lazyre.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_QUALIFIED_NAME = lazyre.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# A key shown in a path only when it looks like a label key (a key could have been built from a secret).
_SHOWABLE_KEY = lazyre.compile(r"[A-Za-z0-9][-A-Za-z0-9_./]{0,62}")
_CNI_NAMES = ("flannel", "custom", "none")
_ROLES = ("os:admin", "os:operator", "os:reader", "os:etcd:backup", "os:impersonator")
# Kubelet settings Talos owns (pkg/machinery/kubelet/kubelet.go, ProtectedConfigurationFields).
_KUBELET_PROTECTED = (
    "apiVersion", "authentication", "authorization", "cgroupRoot", "kind", "kubeletCgroups", "port",
    "protectKernelDefaults", "resolvConf", "rotateCertificates", "systemCgroups", "staticPodPath", "seccompDefault",
)
_KUBESPAN_MIN_MTU = 1280  # constants.KubeSpanLinkMinimumMTU
_DNS_NAME = lazyre.compile(r"([a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})*[._]?")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _bond(bond: dict[Any, Any], version: str, at: Path, add: Add) -> None:
    """Bond option names, and options only some modes (or none) accept (checkBond)."""
    mode = bond.get("mode") or ""
    names = (("mode", _BOND_MODES), ("xmitHashPolicy", _HASH_POLICIES), ("lacpRate", _LACP_RATES),
             ("arpValidate", _ARP_VALIDATE[version]), ("arpAllTargets", _ARP_ALL_TARGETS),
             ("primaryReselect", _PRIMARY_RESELECT), ("failOverMac", _FAIL_OVER_MAC), ("adSelect", _AD_SELECT))
    for key, allowed in names:
        if (bond.get(key) or "") not in allowed:
            add((*at, key), f"invalid bond {key} (allowed: {', '.join(a for a in allowed if a)})")
    if mode not in _BOND_MODES:
        return
    mode = mode or "balance-rr"
    miimon, updelay, downdelay = _int(bond.get("miimon")), _int(bond.get("updelay")), _int(bond.get("downdelay"))
    for key, delay in (("updelay", updelay), ("downdelay", downdelay)):
        if miimon == 0 and delay != 0:
            add((*at, key), f"bond.{key} can't be set if miimon is zero")
        elif miimon != 0 and delay % miimon != 0:
            add((*at, key), f"bond.{key} should be a multiple of miimon")
    if as_list(bond.get("arpIPTarget")):
        add((*at, "arpIPTarget"), "bond.arpIPTarget is not supported")
    if is_set(bond.get("adActorSystem")):
        add((*at, "adActorSystem"), "bond.adActorSystem is not supported")
    lb_modes = ("802.3ad", "balance-alb", "balance-tlb")
    only: list[tuple[str, bool, str]] = [
        ("lacpRate", is_set(bond.get("lacpRate")) and mode != "802.3ad", "only for 802.3ad mode"),
        ("arpValidate", is_set(bond.get("arpValidate")) and mode in lb_modes, f"not available in {mode} mode"),
        ("primary", is_set(bond.get("primary")) and mode not in ("active-backup", "balance-alb", "balance-tlb"),
         f"not available in {mode} mode"),
        ("arpInterval", _int(bond.get("arpInterval")) > 0 and mode in lb_modes, f"not available in {mode} mode"),
        ("packetsPerSlave", _int(bond.get("packetsPerSlave")) > 1 and mode != "balance-rr",
         f"not available in {mode} mode"),
        ("tlbDynamicLb", _int(bond.get("tlbDynamicLb")) > 0 and mode not in ("balance-alb", "balance-tlb"),
         f"not available in {mode} mode"),
        ("adActorSysPrio", _int(bond.get("adActorSysPrio")) > 0 and mode != "802.3ad", "only for 802.3ad mode"),
        ("adUserPortKey", _int(bond.get("adUserPortKey")) > 0 and mode != "802.3ad", "only for 802.3ad mode"),
    ]
    for key, broken, why in only:
        if broken:
            add((*at, key), f"bond.{key} is {why}")


def _wireguard(wg: dict[Any, Any], at: Path, add: Add) -> None:
    """Keys are base64 of 32 bytes, endpoints have a port, allowed IPs are CIDRs (checkWireguard)."""
    if not wireguard_key_ok(wg.get("privateKey")):
        add((*at, "privateKey"), "private key is invalid (not base64 of 32 bytes)")
    for p, peer in enumerate(as_list(wg.get("peers"))):
        peer = as_dict(peer)
        here = (*at, "peers", p)
        if not wireguard_key_ok(peer.get("publicKey")):
            add((*here, "publicKey"), "public key is invalid (not base64 of 32 bytes)")
        endpoint = peer.get("endpoint")
        if is_set(endpoint) and not re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+):[0-9]+", str(endpoint)):
            add((*here, "endpoint"), "peer endpoint is invalid (host:port expected)")
        for a, allowed in enumerate(as_list(peer.get("allowedIPs"))):
            if parse_cidr(allowed) is None:
                add((*here, "allowedIPs", a), "peer allowed IP is not a valid CIDR")


def _routes(routes: list[Any], at: Path, add: Add) -> None:
    """Route network is a CIDR, gateway and source are IPs, and network or gateway is set (CheckDeviceRoutes)."""
    for r, route in enumerate(routes):
        route = as_dict(route)
        here = (*at, "routes", r)
        network, gateway, source = route.get("network"), route.get("gateway"), route.get("source")
        if is_set(network) and parse_cidr(network) is None:
            add((*here, "network"), "route network is not a valid CIDR")
        if is_set(gateway) and parse_ip(gateway) is None:
            add((*here, "gateway"), "route gateway is not a valid IP address")
        if not is_set(gateway) and not is_set(network):
            add(here, "either network or gateway should be set")
        if is_set(source) and parse_ip(source) is None:
            add((*here, "source"), "route source is not a valid IP address")


def _addressing(item: dict[Any, Any], at: Path, add: Add, what: str) -> None:
    """``cidr`` (legacy) and ``addresses`` are exclusive, each an IP or CIDR (CheckDeviceAddressing, checkVlans)."""
    if as_list(item.get("addresses")) and is_set(item.get("cidr")):
        add((*at, "addresses"), f"{what} can't have both .cidr and .addresses set")
    if is_set(item.get("cidr")) and not ip_or_cidr_ok(item.get("cidr")):
        add((*at, "cidr"), "not a valid IP address or CIDR")
    for a, address in enumerate(as_list(item.get("addresses"))):
        if not ip_or_cidr_ok(address):
            add((*at, "addresses", a), "not a valid IP address or CIDR")


def _interfaces(machine: dict[Any, Any], version: str, is_worker: bool, add: Add) -> None:
    devices = as_list(get(machine, "network", "interfaces"))
    members: dict[str, int] = {}  # member link -> index of the bond/bridge that claims it
    for d, device in enumerate(devices):
        device = as_dict(device)
        at: Path = ("machine", "network", "interfaces", d)
        bond, bridge = device.get("bond"), device.get("bridge")
        if bond is not None and bridge is not None:
            add((*at, "bridge"), "interface has both bridge and bond sections set (mutually exclusive)")
        own: list[Any] = []
        if isinstance(bond, dict):
            own = as_list(bond.get("interfaces"))
            if own and as_list(bond.get("deviceSelectors")):
                add((*at, "bond"), "bond has both interfaces and deviceSelectors set (mutually exclusive)")
        if isinstance(bridge, dict):
            own = as_list(bridge.get("interfaces"))
        for m, member in enumerate(own):
            other = members.get(str(member))
            if other is not None and other != d and as_dict(devices[other]).get("interface") != device.get("interface"):
                key = "bond" if isinstance(bond, dict) else "bridge"
                add((*at, key, "interfaces", m), f"interface is part of two separate links (#{other} and #{d})")
            members[str(member)] = d
        if is_worker:
            if device.get("vip") is not None:
                add((*at, "vip"), "virtual (shared) IP is not allowed on non-controlplane nodes")
            for v, vlan in enumerate(as_list(device.get("vlans"))):
                if as_dict(vlan).get("vip") is not None:
                    add((*at, "vlans", v, "vip"), "virtual (shared) IP is not allowed on non-controlplane nodes")
    for d, device in enumerate(devices):
        device = as_dict(device)
        if device.get("ignore") is True:
            continue  # Talos skips the per-device checks of an ignored device
        at = ("machine", "network", "interfaces", d)
        name, selector = device.get("interface") or "", device.get("deviceSelector")
        if not name and selector is None:
            add(at, "either interface or deviceSelector must be set")
        elif name and selector is not None:
            add((*at, "deviceSelector"), "interface and deviceSelector are mutually exclusive")
        if selector is not None and not as_dict(selector):
            add((*at, "deviceSelector"), "deviceSelector should contain at least one field")
        if isinstance(device.get("bond"), dict):
            _bond(device["bond"], version, (*at, "bond"), add)
        if isinstance(device.get("wireguard"), dict):
            _wireguard(device["wireguard"], (*at, "wireguard"), add)
        for v, vlan in enumerate(as_list(device.get("vlans"))):
            _addressing(as_dict(vlan), (*at, "vlans", v), add, "vlan")
        addressed = device.get("dhcp") is True or is_set(device.get("cidr")) or as_list(device.get("addresses")) \
            or device.get("vip") is not None
        if name in members and addressed:
            add(at, "bonded/bridged interface shouldn't have any addressing methods configured")
        _addressing(device, at, add, "interface")
        vip = device.get("vip")
        if vip is not None and parse_ip(as_dict(vip).get("ip")) is None:
            add((*at, "vip", "ip"), "vip ip is not a valid IP address")
        _routes(as_list(device.get("routes")), at, add)


def _kubespan(doc: dict[Any, Any], version: str, add: Add) -> None:
    kubespan = as_dict(get(doc, "machine", "network", "kubespan"))
    if kubespan.get("enabled") is not True:
        return
    at: Path = ("machine", "network", "kubespan")
    mtu = kubespan.get("mtu")
    if isinstance(mtu, int) and not isinstance(mtu, bool) and mtu < _KUBESPAN_MIN_MTU:
        add((*at, "mtu"), f"kubespan link MTU must be at least {_KUBESPAN_MIN_MTU}")
    if get(doc, "cluster", "discovery", "enabled") is not True:
        add((*at, "enabled"), ".cluster.discovery should be enabled when .machine.network.kubespan is enabled")
    for key in ("id", "secret"):
        if not is_set(get(doc, "cluster", key)):
            add((*at, "enabled"), f".cluster.{key} should be set when .machine.network.kubespan is enabled")
    filters = as_dict(kubespan.get("filters"))
    for i, cidr in enumerate(as_list(filters.get("endpoints"))):
        if not subnet_filter_ok(cidr):
            add((*at, "filters", "endpoints", i), "KubeSpan endpoint filter is not a valid IP or CIDR")
    if version != "v1.11":
        for i, cidr in enumerate(as_list(filters.get("excludeAdvertisedNetworks"))):
            if parse_cidr(cidr) is None:
                add((*at, "filters", "excludeAdvertisedNetworks", i), "not a valid CIDR")


def _qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (``prefix/name``), or None."""
    parts = key.split("/")
    if len(parts) > 2:
        return "invalid key format: too many slashes"
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return "key prefix cannot be empty"
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return "key prefix is not a valid DNS subdomain"
    name = parts[-1]
    if not name:
        return "key name cannot be empty"
    if len(name) > 63:
        return "key name is too long (limit is 63)"
    if not _QUALIFIED_NAME.fullmatch(name):
        return "key name is invalid"
    return None


def _label_value_ok(value: Any) -> bool:
    text = "" if value is None else str(value)
    return len(text) <= 63 and (text == "" or bool(_QUALIFIED_NAME.fullmatch(text)))


def _labels(machine: dict[Any, Any], add: Add) -> None:
    """nodeLabels, nodeAnnotations and nodeTaints as Kubernetes accepts them (pkg/machinery/labels/validate.go)."""
    def at(section: str, key: Any) -> Path:
        shown = isinstance(key, str) and _SHOWABLE_KEY.fullmatch(key)
        return ("machine", section, key) if shown else ("machine", section)

    for key, value in sorted(as_dict(machine.get("nodeLabels")).items(), key=lambda kv: str(kv[0])):
        problem = _qualified_name_problem(str(key))
        if problem:
            add(at("nodeLabels", key), f"invalid machine node label: {problem}")
        if not _label_value_ok(value):
            add(at("nodeLabels", key), "invalid machine node label: value is not a valid label value")
    size = 0
    for key, value in sorted(as_dict(machine.get("nodeAnnotations")).items(), key=lambda kv: str(kv[0])):
        problem = _qualified_name_problem(str(key))
        if problem:
            add(at("nodeAnnotations", key), f"invalid machine node annotation: {problem}")
        if key in _OWNED_ANNOTATIONS:
            add(at("nodeAnnotations", key), "invalid machine node annotation: the key is reserved for Talos")
        size += len(str(key)) + len("" if value is None else str(value))
    if size > 256 * 1024:
        add(("machine", "nodeAnnotations"), "total annotation size exceeds limit of 262144 bytes")
    for key, value in sorted(as_dict(machine.get("nodeTaints")).items(), key=lambda kv: str(kv[0])):
        problem = _qualified_name_problem(str(key))
        if problem:
            add(at("nodeTaints", key), f"invalid machine node taint: {problem}")
            continue
        text = "" if value is None else str(value)
        taint_value, found, effect = text.partition(":")
        if not found:
            effect = taint_value
        if effect not in _TAINT_EFFECTS:
            add(at("nodeTaints", key), f"invalid machine node taint effect (allowed: {', '.join(_TAINT_EFFECTS)})")
        elif found and not _label_value_ok(taint_value):
            add(at("nodeTaints", key), "invalid machine node taint: value is not a valid label value")


def _machine(doc: dict[Any, Any], version: str, add: Add) -> None:
    machine = as_dict(doc.get("machine"))
    machine_type = machine.get("type")
    is_cp = machine_type in ("controlplane", "init")
    ca, accepted = machine.get("ca"), as_list(machine.get("acceptedCAs"))
    if ca is None and not accepted:
        add(("machine", "ca"), "issuing CA or some accepted CAs are required (.machine.ca, .machine.acceptedCAs)")
    elif machine_type == "worker" and isinstance(ca, dict) and not is_set(ca.get("crt")) and not accepted:
        add(("machine", "ca", "crt"), "trusted CA certificates are required on non-controlplane nodes")
    install = as_dict(machine.get("install"))
    # metal-only (mode.RequiresInstall), v1.12+: UKI's command line replaces extraKernelArgs.
    if version != "v1.11" and install.get("extraKernelArgs") and install.get("grubUseUKICmdline") is True:
        add(("machine", "install", "extraKernelArgs"),
            "install.extraKernelArgs and install.grubUseUKICmdline can't be used together")
    selector = install.get("diskSelector")
    if isinstance(selector, dict):  # metal-only (mode.RequiresInstall): InstallConfig.DiskMatchExpression
        if is_set(selector.get("name")):
            add(("machine", "install", "diskSelector", "name"), "install disk selector on name is not supported")
        if is_set(selector.get("type")) and selector.get("type") not in _INSTALL_DISK_TYPES:
            add(("machine", "install", "diskSelector", "type"),
                f"unsupported install disk type (allowed: {', '.join(_INSTALL_DISK_TYPES)})")
    seen: set[str] = set()
    for e, ext in enumerate(as_list(install.get("extensions"))):
        image = str(as_dict(ext).get("image"))
        if image in seen:
            add(("machine", "install", "extensions", e), "duplicate system extension")
        seen.add(image)

    hostdns = as_dict(get(machine, "features", "hostDNS"))
    if version == "v1.13" and hostdns.get("forwardKubeDNSToHost") is True and hostdns.get("enabled") is not True:
        add(("machine", "features", "hostDNS", "forwardKubeDNSToHost"),
            "feature hostDNS.forwardKubeDNSToHost requires hostDNS.enabled to be true")

    if machine_type in ("controlplane", "init", "worker"):
        _interfaces(machine, version, machine_type == "worker", add)

    for d, disk in enumerate(as_list(machine.get("disks"))):
        if disk is None:
            add(("machine", "disks", d), "machine.disks entry is null")
            continue
        partitions = as_list(as_dict(disk).get("partitions"))
        for p, partition in enumerate(partitions[:-1]):
            if not is_set(as_dict(partition).get("size")):
                add(("machine", "disks", d, "partitions", p, "size"),
                    "partition is set to occupy the full disk, but it's not the last partition in the list")

    kubelet = as_dict(machine.get("kubelet"))
    for i, cidr in enumerate(as_list(get(kubelet, "nodeIP", "validSubnets"))):
        if not subnet_filter_ok(cidr):
            add(("machine", "kubelet", "nodeIP", "validSubnets", i), "kubelet nodeIP subnet is not a valid IP or CIDR")
    extra = as_dict(kubelet.get("extraConfig"))
    for field in _KUBELET_PROTECTED:
        if field in extra:
            add(("machine", "kubelet", "extraConfig", field), f"kubelet field {field!r} can't be overridden")

    for label in ("ephemeral", "state"):
        encryption = get(machine, "systemDiskEncryption", label)
        if not isinstance(encryption, dict):
            continue
        at: Path = ("machine", "systemDiskEncryption", label)
        keys = as_list(encryption.get("keys"))
        if not keys:
            add((*at, "keys"), f"partition {label!r}: no encryption keys provided")
        slots: set[int] = set()
        for k, key in enumerate(keys):
            key = as_dict(key)
            slot = _int(key.get("slot"))
            if slot in slots:
                add((*at, "keys", k, "slot"), f"partition {label!r}: encryption key slot {slot} is already in use")
            slots.add(slot)
            if all(key.get(kind) is None for kind in ("nodeID", "static", "kms", "tpm")):
                add((*at, "keys", k), f"partition {label!r}: encryption key has no nodeID, static, kms or tpm")

    _kubespan(doc, version, add)

    for d, dest in enumerate(as_list(get(machine, "logging", "destinations"))):
        dest = as_dict(dest)
        at = ("machine", "logging", "destinations", d)
        endpoint = split_url(dest.get("endpoint"))
        if not is_set(dest.get("endpoint")):
            add((*at, "endpoint"), "empty logging endpoint")
        elif endpoint is None or endpoint[0] not in ("tcp", "udp"):
            add((*at, "endpoint"), "logging endpoint scheme must be tcp or udp")
        elif not endpoint[1]:
            add((*at, "endpoint"), "empty logging endpoint's host")
        if dest.get("format") != "json_lines":
            add((*at, "format"), "unknown logging format (allowed: json_lines)")

    access = as_dict(get(machine, "features", "kubernetesTalosAPIAccess"))
    if access.get("enabled") is True:
        at = ("machine", "features", "kubernetesTalosAPIAccess")
        if version == "v1.11" and get(machine, "features", "rbac") is not True:
            add((*at, "enabled"), "feature API RBAC should be enabled when Kubernetes Talos API Access is enabled")
        if not is_cp:
            add((*at, "enabled"), "feature Kubernetes Talos API Access can only be enabled on control plane machines")
        for r, role in enumerate(as_list(access.get("allowedRoles"))):
            if role not in _ROLES:
                add((*at, "allowedRoles", r), f"invalid role (allowed: {', '.join(_ROLES)})")
    algorithm = get(machine, "features", "nodeAddressSortAlgorithm")
    if is_set(algorithm) and algorithm not in ("v1", "v2"):
        add(("machine", "features", "nodeAddressSortAlgorithm"), "invalid node address sort algorithm (v1 or v2)")

    _labels(machine, add)

    for section in ("config", "mirrors"):
        for name, value in as_dict(get(machine, "registries", section)).items():
            if value is None:
                add(("machine", "registries", section, str(name)), f"registries.{section} entry is null")


def _cni(cni: dict[Any, Any], version: str, add: Add) -> None:
    """CNI name is flannel, custom or none; URLs only (and then valid) with custom (ValidateCNI)."""
    at: Path = ("cluster", "network", "cni")
    name, urls = cni.get("name"), as_list(cni.get("urls"))
    flannel = as_dict(cni.get("flannel"))
    if name not in _CNI_NAMES:
        add((*at, "name"), "cni name should be one of flannel, custom, none")
        return
    if name in ("flannel", "none") and urls:
        add((*at, "urls"), f'"urls" field should be empty for {name!r} CNI')
    if name in ("custom", "none") and flannel.get("extraArgs"):
        add((*at, "flannel", "extraArgs"), f'flannel extraArgs should be empty for {name!r} CNI')
    if version == "v1.13" and name in ("custom", "none") and flannel.get("kubeNetworkPoliciesEnabled") is True:
        add((*at, "flannel", "kubeNetworkPoliciesEnabled"), f"should not be enabled for {name!r} CNI")
    if name == "custom":
        for u, url in enumerate(urls):
            if not endpoint_url_ok(url):
                add((*at, "urls", u), "not a valid URL")


def _control_plane_components(cluster: dict[Any, Any], add: Add) -> None:
    """APIServerConfig, ControllerManagerConfig and SchedulerConfig ``Validate`` (v1alpha1_apiserverconfig.go,
    v1alpha1_authorizaationconfigauthorizer.go, v1alpha1_resourcesconfig.go and the controller manager and
    scheduler files). Talos stops at the first problem of each component."""
    for component in ("apiServer", "controllerManager", "scheduler"):
        config = as_dict(cluster.get(component))
        problems: list[tuple[Path, str]] = []
        authorization = as_list(config.get("authorizationConfig")) if component == "apiServer" else []
        if authorization:
            for arg in as_dict(config.get("extraArgs")):
                if arg == "authorization-mode" or str(arg).startswith("authorization-webhook-"):
                    problems.append((("cluster", component, "extraArgs", str(arg)),
                                     f"extraArgs.{arg} cannot be used together with authorizationConfig"))
                    break
        for a, authorizer in enumerate(authorization):
            authorizer = as_dict(authorizer)
            here: Path = ("cluster", component, "authorizationConfig", a)
            if not is_set(authorizer.get("type")):
                problems.append(((*here, "type"), "authorizer type must be set"))
            elif not is_set(authorizer.get("name")):
                problems.append(((*here, "name"), "authorizer name must be set"))
            elif authorizer.get("type") not in _AUTHORIZER_TYPES:
                problems.append(((*here, "type"), f"authorizer type not allowed ({', '.join(_AUTHORIZER_TYPES)})"))
        resources = as_dict(config.get("resources"))
        for section in ("requests", "limits"):
            for key in as_dict(resources.get(section)):
                if key not in ("cpu", "memory"):
                    shown = str(key) if _SHOWABLE_KEY.fullmatch(str(key)) else None
                    path: Path = ("cluster", component, "resources", section, *((shown,) if shown else ()))
                    problems.append((path, "unsupported pod resource (cpu or memory only)"))
        if problems:
            add(*problems[0])


def _cluster(doc: dict[Any, Any], version: str, add: Add) -> None:
    cluster = as_dict(doc.get("cluster"))
    machine_type = get(doc, "machine", "type")
    domain = get(cluster, "network", "dnsDomain")
    if is_set(domain) and not (
        isinstance(domain, str) and len(domain) - domain.count(".") <= 255 and _DNS_NAME.fullmatch(domain)
    ):
        add(("cluster", "network", "dnsDomain"), "not a valid DNS name")

    ecp = cluster.get("externalCloudProvider")
    if isinstance(ecp, dict):
        manifests = as_list(ecp.get("manifests"))
        if ecp.get("enabled") is not True and manifests:
            add(("cluster", "externalCloudProvider", "manifests"),
                "external cloud provider is disabled, but manifests are provided")
        else:
            for m, url in enumerate(manifests):
                if not endpoint_url_ok(url):
                    add(("cluster", "externalCloudProvider", "manifests", m), "invalid manifest URL")

    etcd = cluster.get("etcd")
    if isinstance(etcd, dict) and machine_type in ("controlplane", "init"):
        if etcd.get("ca") is None:
            add(("cluster", "etcd", "ca"), "etcd CA is required (key/cert combination should not be empty)")
        if is_set(etcd.get("subnet")) and as_list(etcd.get("advertisedSubnets")):
            add(("cluster", "etcd", "subnet"), "etcd subnet can't be set when advertised subnets are set")
        for key in ("advertisedSubnets", "listenSubnets"):
            for i, cidr in enumerate(as_list(etcd.get(key))):
                if not subnet_filter_ok(cidr):
                    add(("cluster", "etcd", key, i), "etcd subnet is not a valid IP or CIDR")
        # Without advertisedSubnets, the legacy subnet is the advertised one (EtcdConfig.AdvertisedSubnets).
        if is_set(etcd.get("subnet")) and not as_list(etcd.get("advertisedSubnets")) \
                and not subnet_filter_ok(etcd.get("subnet")):
            add(("cluster", "etcd", "subnet"), "etcd subnet is not a valid IP or CIDR")

    discovery = as_dict(cluster.get("discovery"))
    service = as_dict(get(discovery, "registries", "service"))
    if discovery.get("enabled") is True and service.get("disabled") is not True:
        at: Path = ("cluster", "discovery", "registries", "service", "endpoint")
        endpoint = service.get("endpoint")
        if is_set(endpoint):
            parts = split_url(endpoint)
            if parts is None:
                add(at, "cluster discovery service registry endpoint is invalid")
            elif parts[2] not in ("", "/"):
                add(at, "cluster discovery service path should be empty")
        for key in ("id", "secret"):
            if not is_set(cluster.get(key)):
                add(("cluster", "discovery", "enabled"), f"cluster discovery service requires .cluster.{key}")

    _control_plane_components(cluster, add)

    if machine_type in ("controlplane", "init"):
        cni = get(cluster, "network", "cni")
        if isinstance(cni, dict):
            _cni(cni, version, add)


def v1alpha1_rules(documents: Any, version: str) -> list[RuleFinding]:
    """Every broken rule of the (first) machine config document."""
    findings: list[RuleFinding] = []
    for index, doc in enumerate(documents):
        if isinstance(doc, dict) and "kind" not in doc:
            def add(path: Path, reason: str) -> None:
                findings.append(RuleFinding(index, MACHINE_CONFIG, path, reason))  # noqa: B023 - used at once

            _machine(doc, version, add)
            _cluster(doc, version, add)
            break
    return findings
