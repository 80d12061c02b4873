"""Every ported Talos ``Validate()`` rule (pipeline/talos/rules/), per Talos version.

Each case names the Talos source it came from (path at the tags read: v1.11.6, v1.12.11, v1.13.9, and the
function), the versions whose source has the rule, a patch that breaks it and one that does not. Documents are
talosctl's own base configs (../shared/talos-fixtures/stability/<version>) with the patch applied:

- on a version with the rule, the breaking patch gives that finding, and the passing one leaves the config
  clean (JSON schema and every rule: ``schema.validate``);
- on a version without it, the breaking patch does not give it (and a kind the version does not register is
  refused by strict decoding instead).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.talos import rules
from pipeline.talos import schema as ts

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures"
VERSIONS = ("v1.11", "v1.12", "v1.13")
V12 = ("v1.12", "v1.13")
V1ALPHA1 = "pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go"
NETWORK = "pkg/machinery/config/types/network/"
BLOCK = "pkg/machinery/config/types/block/"
CONTAINER = "pkg/machinery/config/container/container.go"
LABELS = "pkg/machinery/labels/validate.go"
EXTENSIONS = "pkg/machinery/config/types/runtime/extensions/service_config.go (ServiceConfigV1Alpha1.Validate)"

Docs = list[dict[str, Any]]
Edit = Callable[[Docs], Any]


def base(version: str, role: str = "controlplane") -> Docs:
    path = FIXTURES / "stability" / version / f"base-{role}.yaml"
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def machine(docs: Docs) -> dict[str, Any]:
    return docs[0]["machine"]


def net(docs: Docs) -> dict[str, Any]:
    return machine(docs).setdefault("network", {})


def cluster(docs: Docs) -> dict[str, Any]:
    return docs[0]["cluster"]


def interfaces(*devices: dict[str, Any]) -> Edit:
    return lambda docs: net(docs).__setitem__("interfaces", copy.deepcopy(list(devices)))


def set_in(section: Callable[[Docs], dict[str, Any]], key: str, value: Any) -> Edit:
    return lambda docs: section(docs).__setitem__(key, copy.deepcopy(value))


def add_doc(kind: str, **fields: Any) -> Edit:
    return lambda docs: docs.append({"apiVersion": "v1alpha1", "kind": kind, **copy.deepcopy(fields)})


def hostname_doc(docs: Docs) -> dict[str, Any]:
    """The base's HostnameConfig (v1.12+ bases have one), added when missing."""
    found = [d for d in docs if d.get("kind") == "HostnameConfig"]
    if not found:
        docs.append({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"})
        return docs[-1]
    return found[0]


def both(*edits: Edit) -> Edit:
    return lambda docs: [edit(docs) for edit in edits]


@dataclass(frozen=True)
class Case:
    """One rule: ``source`` is the Talos file (at the tags read) and function the rule came from."""

    id: str
    source: str
    versions: tuple[str, ...]
    bad: Edit
    good: Edit
    kind: str
    path: tuple[Any, ...]
    reason: str  # a part of the finding's reason
    role: str = "controlplane"
    # False where the project's JSON schema refuses what Talos decodes (reported; not this module's to fix):
    # a device's legacy `cidr` (v1.12+), a logging destination's `endpoint` string, `acceptedCAs` as a list.
    schema_ok: bool = True


def _iface(**fields: Any) -> dict[str, Any]:
    return {"interface": "eth0", **fields}


IF0 = ("machine", "network", "interfaces", 0)
BOND_SRC = f"{V1ALPHA1} (checkBond)"
DEVICE_SRC = f"{V1ALPHA1} (CheckDeviceInterface)"
ADDR_SRC = f"{V1ALPHA1} (CheckDeviceAddressing)"
ROUTE_SRC = f"{V1ALPHA1} (CheckDeviceRoutes)"
CONFIG_SRC = f"{V1ALPHA1} (Config.Validate)"
CLUSTER_SRC = f"{V1ALPHA1} (ClusterConfig.Validate)"


def bond(**fields: Any) -> dict[str, Any]:
    return {"interface": "bond0", "dhcp": True, "bond": {"interfaces": ["eth0", "eth1"], **fields}}


def kubespan(**fields: Any) -> Edit:
    return lambda docs: net(docs).__setitem__("kubespan", {"enabled": True, **fields})


def encryption(**state: Any) -> Edit:
    return set_in(machine, "systemDiskEncryption", {"state": state})


def logging_to(**dest: Any) -> Edit:
    return set_in(machine, "logging", {"destinations": [dest]})


def features(**values: Any) -> Edit:
    return lambda docs: machine(docs).setdefault("features", {}).update(copy.deepcopy(values))


def cni(**values: Any) -> Edit:
    return lambda docs: cluster(docs)["network"].__setitem__("cni", copy.deepcopy(values))


def etcd(**values: Any) -> Edit:
    return lambda docs: cluster(docs)["etcd"].update(copy.deepcopy(values))


def service_endpoint(url: str) -> Edit:
    return lambda docs: cluster(docs)["discovery"]["registries"].__setitem__("service", {"endpoint": url})


def drop_cluster_key(key: str) -> Edit:
    return lambda docs: cluster(docs).pop(key)


WG_KEY = "yGmaSXLpQ0Oz3n8PTfGKiDoGOVp8bSRqyZmMk4yGeGQ="  # 32 zero-ish bytes in base64 (a made-up key)
SELECTOR = {"match": "disk.transport == 'nvme'"}


def user_volume(**fields: Any) -> Edit:
    spec = {"name": "data", "provisioning": {"diskSelector": SELECTOR, "maxSize": "50GiB"}}
    spec.update(fields)
    return add_doc("UserVolumeConfig", **spec)


CASES: list[Case] = [
    # --- v1alpha1: network interfaces --------------------------------------------------------------------------
    Case("iface-needs-interface-or-selector", DEVICE_SRC, VERSIONS,
         interfaces({"dhcp": True}), interfaces(_iface(dhcp=True)),
         "v1alpha1", IF0, "either interface or deviceSelector"),
    Case("iface-interface-xor-selector", DEVICE_SRC, VERSIONS,
         interfaces(_iface(dhcp=True, deviceSelector={"driver": "e1000e"})),
         interfaces({"deviceSelector": {"driver": "e1000e"}, "dhcp": True}),
         "v1alpha1", (*IF0, "deviceSelector"), "mutually exclusive"),
    Case("iface-selector-not-empty", DEVICE_SRC, VERSIONS,
         interfaces({"deviceSelector": {}, "dhcp": True}), interfaces({"deviceSelector": {"busPath": "0*"}}),
         "v1alpha1", (*IF0, "deviceSelector"), "at least one field"),
    Case("iface-bond-xor-bridge", f"{V1ALPHA1} (Config.Validate, network interfaces)", VERSIONS,
         interfaces({"interface": "br0", "bond": {"interfaces": ["eth0"]}, "bridge": {"interfaces": ["eth1"]}}),
         interfaces({"interface": "br0", "bridge": {"interfaces": ["eth1"]}}),
         "v1alpha1", (*IF0, "bridge"), "both bridge and bond"),
    Case("bond-interfaces-xor-selectors", f"{V1ALPHA1} (Config.Validate, network interfaces)", VERSIONS,
         interfaces(bond(deviceSelectors=[{"driver": "igb"}])),
         interfaces({"interface": "bond0", "bond": {"deviceSelectors": [{"driver": "igb"}]}}),
         "v1alpha1", (*IF0, "bond"), "both interfaces and deviceSelectors"),
    Case("link-member-of-two-links", f"{V1ALPHA1} (Config.Validate, network interfaces)", VERSIONS,
         interfaces(bond(), {"interface": "bond1", "bond": {"interfaces": ["eth1", "eth2"]}}),
         interfaces(bond(), {"interface": "bond1", "bond": {"interfaces": ["eth2", "eth3"]}}),
         "v1alpha1", ("machine", "network", "interfaces", 1, "bond", "interfaces", 0), "two separate links"),
    Case("bond-member-has-no-addressing", ADDR_SRC, VERSIONS,
         interfaces(bond(), _iface(dhcp=True)), interfaces(bond(), _iface(mtu=9000)),
         "v1alpha1", ("machine", "network", "interfaces", 1), "shouldn't have any addressing"),
    Case("iface-cidr-xor-addresses", ADDR_SRC, VERSIONS,
         interfaces(_iface(cidr="10.0.0.2/24", addresses=["10.0.0.3/24"])), interfaces(_iface(cidr="10.0.0.2/24")),
         "v1alpha1", (*IF0, "addresses"), "both .cidr and .addresses"),
    Case("iface-address-is-ip-or-cidr", ADDR_SRC, VERSIONS,
         interfaces(_iface(addresses=["192.168.1.300/24"])), interfaces(_iface(addresses=["192.168.1.30/24"])),
         "v1alpha1", (*IF0, "addresses", 0), "not a valid IP address or CIDR"),
    Case("iface-vip-is-ip", ADDR_SRC, VERSIONS,
         interfaces(_iface(dhcp=True, vip={"ip": "10.0.0.300"})),
         interfaces(_iface(dhcp=True, vip={"ip": "10.0.0.30"})),
         "v1alpha1", (*IF0, "vip", "ip"), "not a valid IP address"),
    Case("vip-only-on-controlplane", CONFIG_SRC, VERSIONS,
         interfaces(_iface(dhcp=True, vip={"ip": "10.0.0.30"})), interfaces(_iface(dhcp=True)),
         "v1alpha1", (*IF0, "vip"), "not allowed on non-controlplane nodes", role="worker"),
    Case("vlan-vip-only-on-controlplane", CONFIG_SRC, VERSIONS,
         interfaces(_iface(vlans=[{"vlanId": 10, "vip": {"ip": "10.0.0.30"}}])),
         interfaces(_iface(vlans=[{"vlanId": 10, "dhcp": True}])),
         "v1alpha1", (*IF0, "vlans", 0, "vip"), "not allowed on non-controlplane nodes", role="worker"),
    Case("route-network-is-cidr", ROUTE_SRC, VERSIONS,
         interfaces(_iface(routes=[{"network": "10.0.0.0/33", "gateway": "10.0.0.1"}])),
         interfaces(_iface(routes=[{"network": "10.0.0.0/16", "gateway": "10.0.0.1"}])),
         "v1alpha1", (*IF0, "routes", 0, "network"), "not a valid CIDR"),
    Case("route-gateway-is-ip", ROUTE_SRC, VERSIONS,
         interfaces(_iface(routes=[{"network": "0.0.0.0/0", "gateway": "10.0.0"}])),
         interfaces(_iface(routes=[{"network": "0.0.0.0/0", "gateway": "10.0.0.1"}])),
         "v1alpha1", (*IF0, "routes", 0, "gateway"), "not a valid IP address"),
    Case("route-needs-network-or-gateway", ROUTE_SRC, VERSIONS,
         interfaces(_iface(routes=[{"metric": 1024}])), interfaces(_iface(routes=[{"gateway": "10.0.0.1"}])),
         "v1alpha1", (*IF0, "routes", 0), "either network or gateway"),
    Case("route-source-is-ip", ROUTE_SRC, VERSIONS,
         interfaces(_iface(routes=[{"gateway": "10.0.0.1", "source": "eth0"}])),
         interfaces(_iface(routes=[{"gateway": "10.0.0.1", "source": "10.0.0.2"}])),
         "v1alpha1", (*IF0, "routes", 0, "source"), "not a valid IP address"),
    Case("vlan-address-is-ip-or-cidr", f"{V1ALPHA1} (checkVlans)", VERSIONS,
         interfaces(_iface(vlans=[{"vlanId": 10, "addresses": ["10.0.10.2/40"]}])),
         interfaces(_iface(vlans=[{"vlanId": 10, "addresses": ["10.0.10.2/24"]}])),
         "v1alpha1", (*IF0, "vlans", 0, "addresses", 0), "not a valid IP address or CIDR"),
    # --- v1alpha1: bonds ---------------------------------------------------------------------------------------
    Case("bond-mode-name", BOND_SRC, VERSIONS,
         interfaces(bond(mode="lacp")), interfaces(bond(mode="802.3ad")),
         "v1alpha1", (*IF0, "bond", "mode"), "invalid bond mode"),
    Case("bond-hash-policy-name", BOND_SRC, VERSIONS,
         interfaces(bond(mode="802.3ad", xmitHashPolicy="layer34")),
         interfaces(bond(mode="802.3ad", xmitHashPolicy="layer3+4")),
         "v1alpha1", (*IF0, "bond", "xmitHashPolicy"), "invalid bond xmitHashPolicy"),
    Case("bond-lacp-rate-only-802.3ad", BOND_SRC, VERSIONS,
         interfaces(bond(mode="active-backup", lacpRate="fast")), interfaces(bond(mode="802.3ad", lacpRate="fast")),
         "v1alpha1", (*IF0, "bond", "lacpRate"), "only for 802.3ad mode"),
    Case("bond-updelay-needs-miimon", BOND_SRC, VERSIONS,
         interfaces(bond(mode="802.3ad", updelay=200)), interfaces(bond(mode="802.3ad", miimon=100, updelay=200)),
         "v1alpha1", (*IF0, "bond", "updelay"), "can't be set if miimon is zero"),
    Case("bond-downdelay-multiple-of-miimon", BOND_SRC, VERSIONS,
         interfaces(bond(mode="802.3ad", miimon=100, downdelay=150)),
         interfaces(bond(mode="802.3ad", miimon=100, downdelay=200)),
         "v1alpha1", (*IF0, "bond", "downdelay"), "multiple of miimon"),
    Case("bond-primary-modes", BOND_SRC, VERSIONS,
         interfaces(bond(mode="802.3ad", primary="eth0")), interfaces(bond(mode="active-backup", primary="eth0")),
         "v1alpha1", (*IF0, "bond", "primary"), "not available in 802.3ad mode"),
    Case("bond-arp-ip-target-unsupported", BOND_SRC, VERSIONS,
         interfaces(bond(mode="active-backup", arpIPTarget=["10.0.0.1"])), interfaces(bond(mode="active-backup")),
         "v1alpha1", (*IF0, "bond", "arpIPTarget"), "not supported"),
    Case("bond-packets-per-slave-only-rr", BOND_SRC, VERSIONS,
         interfaces(bond(mode="active-backup", packetsPerSlave=2)), interfaces(bond(packetsPerSlave=2)),
         "v1alpha1", (*IF0, "bond", "packetsPerSlave"), "not available in active-backup mode"),
    Case("bond-ad-actor-sys-prio-only-802.3ad", BOND_SRC, VERSIONS,
         interfaces(bond(mode="balance-xor", adActorSysPrio=100)), interfaces(bond(mode="802.3ad", adActorSysPrio=100)),
         "v1alpha1", (*IF0, "bond", "adActorSysPrio"), "only for 802.3ad mode"),
    Case("bond-arp-validate-filter-from-v1.12", f"{BOND_SRC}; pkg/machinery/nethelpers/arpvalidate.go "
         "(ARPValidateByName: filter modes from v1.12)", ("v1.11",),
         interfaces(bond(mode="active-backup", arpValidate="filter")),
         interfaces(bond(mode="active-backup", arpValidate="all")),
         "v1alpha1", (*IF0, "bond", "arpValidate"), "invalid bond arpValidate"),
    Case("bond-fail-over-mac-name", f"{BOND_SRC}; pkg/machinery/nethelpers/failovermac.go (FailOverMACByName)",
         VERSIONS, interfaces(bond(mode="active-backup", failOverMac="2")),
         interfaces(bond(mode="active-backup", failOverMac="follow")),
         "v1alpha1", (*IF0, "bond", "failOverMac"), "invalid bond failOverMac"),
    Case("bond-ad-select-name", f"{BOND_SRC}; pkg/machinery/nethelpers/adselect.go (ADSelectByName)", VERSIONS,
         interfaces(bond(mode="802.3ad", adSelect="fastest")), interfaces(bond(mode="802.3ad", adSelect="bandwidth")),
         "v1alpha1", (*IF0, "bond", "adSelect"), "invalid bond adSelect"),
    # --- v1alpha1: wireguard -----------------------------------------------------------------------------------
    Case("wireguard-private-key", f"{V1ALPHA1} (checkWireguard)", VERSIONS,
         interfaces({"interface": "wg0", "wireguard": {"privateKey": "not-a-key"}}),
         interfaces({"interface": "wg0", "wireguard": {"privateKey": WG_KEY}}),
         "v1alpha1", (*IF0, "wireguard", "privateKey"), "private key is invalid"),
    Case("wireguard-peer-allowed-ips", f"{V1ALPHA1} (checkWireguard)", VERSIONS,
         interfaces({"interface": "wg0", "wireguard": {"privateKey": WG_KEY, "peers": [
             {"publicKey": WG_KEY, "endpoint": "192.168.1.2:51820", "allowedIPs": ["10.1.0.0"]}]}}),
         interfaces({"interface": "wg0", "wireguard": {"privateKey": WG_KEY, "peers": [
             {"publicKey": WG_KEY, "endpoint": "192.168.1.2:51820", "allowedIPs": ["10.1.0.0/24"]}]}}),
         "v1alpha1", (*IF0, "wireguard", "peers", 0, "allowedIPs", 0), "not a valid CIDR"),
    Case("wireguard-peer-endpoint-port", f"{V1ALPHA1} (checkWireguard)", VERSIONS,
         interfaces({"interface": "wg0", "wireguard": {"privateKey": WG_KEY, "peers": [
             {"publicKey": WG_KEY, "endpoint": "192.168.1.2"}]}}),
         interfaces({"interface": "wg0", "wireguard": {"privateKey": WG_KEY, "peers": [
             {"publicKey": WG_KEY, "endpoint": "[fd00::2]:51820"}]}}),
         "v1alpha1", (*IF0, "wireguard", "peers", 0, "endpoint"), "host:port"),
    # --- v1alpha1: kubespan ------------------------------------------------------------------------------------
    Case("kubespan-mtu", CONFIG_SRC, VERSIONS, kubespan(mtu=1200), kubespan(mtu=1420),
         "v1alpha1", ("machine", "network", "kubespan", "mtu"), "at least 1280"),
    Case("kubespan-needs-discovery", CONFIG_SRC, VERSIONS,
         both(kubespan(), lambda docs: cluster(docs)["discovery"].__setitem__("enabled", False)), kubespan(),
         "v1alpha1", ("machine", "network", "kubespan", "enabled"), ".cluster.discovery should be enabled"),
    Case("kubespan-endpoint-filters", CONFIG_SRC, VERSIONS,
         kubespan(filters={"endpoints": ["0.0.0.0/0", "!192.168.0.0/16x"]}),
         kubespan(filters={"endpoints": ["0.0.0.0/0", "!192.168.0.0/16"]}),
         "v1alpha1", ("machine", "network", "kubespan", "filters", "endpoints", 1), "not a valid IP or CIDR"),
    Case("kubespan-exclude-advertised-networks", CONFIG_SRC, V12,
         kubespan(filters={"excludeAdvertisedNetworks": ["192.168.1.1"]}),
         kubespan(filters={"excludeAdvertisedNetworks": ["192.168.1.0/24"]}),
         "v1alpha1", ("machine", "network", "kubespan", "filters", "excludeAdvertisedNetworks", 0),
         "not a valid CIDR"),
    # --- v1alpha1: disks, kubelet, encryption, logging, features, registries, install ---------------------------
    Case("disk-partition-full-size-last", CONFIG_SRC, VERSIONS,
         set_in(machine, "disks", [{"device": "/dev/sdb", "partitions": [{"mountpoint": "/var/a"},
                                                                        {"mountpoint": "/var/b", "size": "10GB"}]}]),
         set_in(machine, "disks", [{"device": "/dev/sdb", "partitions": [{"mountpoint": "/var/a", "size": "10GB"},
                                                                        {"mountpoint": "/var/b"}]}]),
         "v1alpha1", ("machine", "disks", 0, "partitions", 0, "size"), "not the last partition"),
    Case("kubelet-valid-subnets", f"{V1ALPHA1} (KubeletConfig.Validate)", VERSIONS,
         lambda docs: machine(docs)["kubelet"].__setitem__("nodeIP", {"validSubnets": ["10.0.0.0/8", "!fd00::/129"]}),
         lambda docs: machine(docs)["kubelet"].__setitem__("nodeIP", {"validSubnets": ["10.0.0.0/8", "!fd00::/64"]}),
         "v1alpha1", ("machine", "kubelet", "nodeIP", "validSubnets", 1), "not a valid IP or CIDR"),
    Case("kubelet-protected-fields", f"{V1ALPHA1} (KubeletConfig.Validate)", VERSIONS,
         lambda docs: machine(docs)["kubelet"].__setitem__("extraConfig", {"port": 10251, "maxPods": 250}),
         lambda docs: machine(docs)["kubelet"].__setitem__("extraConfig", {"maxPods": 250}),
         "v1alpha1", ("machine", "kubelet", "extraConfig", "port"), "can't be overridden"),
    Case("encryption-needs-keys", CONFIG_SRC, VERSIONS,
         encryption(provider="luks2", keys=[]), encryption(provider="luks2", keys=[{"slot": 0, "nodeID": {}}]),
         "v1alpha1", ("machine", "systemDiskEncryption", "state", "keys"), "no encryption keys"),
    Case("encryption-key-slots-unique", CONFIG_SRC, VERSIONS,
         encryption(provider="luks2", keys=[{"slot": 0, "nodeID": {}}, {"slot": 0, "tpm": {}}]),
         encryption(provider="luks2", keys=[{"slot": 0, "nodeID": {}}, {"slot": 1, "tpm": {}}]),
         "v1alpha1", ("machine", "systemDiskEncryption", "state", "keys", 1, "slot"), "already in use"),
    Case("encryption-key-has-a-source", CONFIG_SRC, VERSIONS,
         encryption(provider="luks2", keys=[{"slot": 0}]), encryption(provider="luks2", keys=[{"slot": 0, "tpm": {}}]),
         "v1alpha1", ("machine", "systemDiskEncryption", "state", "keys", 0), "no nodeID, static, kms or tpm"),
    Case("logging-scheme-tcp-or-udp", "pkg/machinery/config/types/v1alpha1/v1alpha1_logging.go "
         "(LoggingConfig.Validate)", VERSIONS,
         logging_to(endpoint="http://10.0.0.5:5140/", format="json_lines"),
         logging_to(endpoint="udp://10.0.0.5:5140/", format="json_lines"),
         "v1alpha1", ("machine", "logging", "destinations", 0, "endpoint"), "scheme must be tcp or udp",
         ),
    Case("logging-format", "pkg/machinery/config/types/v1alpha1/v1alpha1_logging.go (LoggingConfig.Validate)",
         VERSIONS, logging_to(endpoint="tcp://10.0.0.5:5140/", format="json"),
         logging_to(endpoint="tcp://10.0.0.5:5140/", format="json_lines"),
         "v1alpha1", ("machine", "logging", "destinations", 0, "format"), "unknown logging format"),
    Case("talos-api-access-controlplane-only", CONFIG_SRC, VERSIONS,
         features(rbac=True, kubernetesTalosAPIAccess={"enabled": True, "allowedRoles": ["os:reader"]}),
         features(rbac=True, kubernetesTalosAPIAccess={"enabled": False}),
         "v1alpha1", ("machine", "features", "kubernetesTalosAPIAccess", "enabled"),
         "only be enabled on control plane", role="worker"),
    Case("talos-api-access-roles", CONFIG_SRC, VERSIONS,
         features(rbac=True, kubernetesTalosAPIAccess={"enabled": True, "allowedRoles": ["os:root"]}),
         features(rbac=True, kubernetesTalosAPIAccess={"enabled": True, "allowedRoles": ["os:etcd:backup"]}),
         "v1alpha1", ("machine", "features", "kubernetesTalosAPIAccess", "allowedRoles", 0), "invalid role"),
    Case("talos-api-access-needs-rbac", CONFIG_SRC, ("v1.11",),
         features(rbac=False, kubernetesTalosAPIAccess={"enabled": True, "allowedRoles": ["os:reader"]}),
         features(rbac=True, kubernetesTalosAPIAccess={"enabled": True, "allowedRoles": ["os:reader"]}),
         "v1alpha1", ("machine", "features", "kubernetesTalosAPIAccess", "enabled"), "RBAC should be enabled"),
    Case("node-address-sort-algorithm", CONFIG_SRC, VERSIONS,
         features(nodeAddressSortAlgorithm="v3"), features(nodeAddressSortAlgorithm="v2"),
         "v1alpha1", ("machine", "features", "nodeAddressSortAlgorithm"), "invalid node address sort algorithm"),
    Case("host-dns-forward-needs-enabled", CONFIG_SRC, ("v1.13",),
         features(hostDNS={"enabled": False, "forwardKubeDNSToHost": True}),
         features(hostDNS={"enabled": False, "forwardKubeDNSToHost": False}),
         "v1alpha1", ("machine", "features", "hostDNS", "forwardKubeDNSToHost"), "requires hostDNS.enabled"),
    Case("registry-mirror-not-null", CONFIG_SRC, VERSIONS,
         set_in(machine, "registries", {"mirrors": {"docker.io": None}}),
         set_in(machine, "registries", {"mirrors": {"docker.io": {"endpoints": ["https://mirror.lan"]}}}),
         "v1alpha1", ("machine", "registries", "mirrors", "docker.io"), "entry is null"),
    Case("ca-or-accepted-cas", CONFIG_SRC, VERSIONS,
         lambda docs: machine(docs).pop("ca"),
         lambda docs: machine(docs).__setitem__("acceptedCAs", [{"crt": machine(docs).pop("ca")["crt"]}]),
         "v1alpha1", ("machine", "ca"), "issuing CA or some accepted CAs are required", role="worker"),
    Case("worker-trusts-a-ca", CONFIG_SRC, VERSIONS,
         lambda docs: machine(docs)["ca"].__setitem__("crt", ""),
         lambda docs: machine(docs).__setitem__("acceptedCAs", [{"crt": machine(docs)["ca"].pop("crt")}]),
         "v1alpha1", ("machine", "ca", "crt"), "trusted CA certificates are required", role="worker"),
    Case("install-extensions-unique", CONFIG_SRC, VERSIONS,
         lambda docs: machine(docs)["install"].__setitem__(
             "extensions", [{"image": "ghcr.io/siderolabs/gvisor:1"}, {"image": "ghcr.io/siderolabs/gvisor:1"}]),
         lambda docs: machine(docs)["install"].__setitem__("extensions", [{"image": "ghcr.io/siderolabs/gvisor:1"}]),
         "v1alpha1", ("machine", "install", "extensions", 1), "duplicate system extension"),
    Case("install-extra-kernel-args-vs-uki-cmdline (metal-only)", CONFIG_SRC, V12,
         lambda docs: machine(docs)["install"].update(extraKernelArgs=["mitigations=off"], grubUseUKICmdline=True),
         lambda docs: machine(docs)["install"].update(extraKernelArgs=["mitigations=off"], grubUseUKICmdline=False),
         "v1alpha1", ("machine", "install", "extraKernelArgs"), "can't be used together"),
    Case("node-label-key", f"{CONFIG_SRC}; {LABELS} (Validate, ValidateQualifiedName)", VERSIONS,
         set_in(machine, "nodeLabels", {"topology.kubernetes.io/zone/a": "rack1"}),
         set_in(machine, "nodeLabels", {"topology.kubernetes.io/zone": "rack1"}),
         "v1alpha1", ("machine", "nodeLabels", "topology.kubernetes.io/zone/a"), "too many slashes"),
    Case("node-label-value", f"{CONFIG_SRC}; {LABELS} (ValidateLabelValue)", VERSIONS,
         set_in(machine, "nodeLabels", {"zone": "rack 1"}), set_in(machine, "nodeLabels", {"zone": "rack-1"}),
         "v1alpha1", ("machine", "nodeLabels", "zone"), "not a valid label value"),
    Case("node-annotation-reserved", f"{CONFIG_SRC}; {LABELS} (ValidateAnnotations)", VERSIONS,
         set_in(machine, "nodeAnnotations", {"talos.dev/owned-labels": "[]"}),
         set_in(machine, "nodeAnnotations", {"example.com/owner": "homelab"}),
         "v1alpha1", ("machine", "nodeAnnotations", "talos.dev/owned-labels"), "reserved for Talos"),
    Case("node-taint-effect", f"{CONFIG_SRC}; {LABELS} (ValidateTaints)", VERSIONS,
         set_in(machine, "nodeTaints", {"dedicated": "gpu:NoScheduling"}),
         set_in(machine, "nodeTaints", {"dedicated": "gpu:NoSchedule"}),
         "v1alpha1", ("machine", "nodeTaints", "dedicated"), "invalid machine node taint effect"),
    Case("install-disk-selector-name (metal-only)", "pkg/machinery/config/types/v1alpha1/v1alpha1_provider.go "
         "(InstallConfig.DiskMatchExpression, called by Config.Validate)", VERSIONS,
         lambda docs: machine(docs)["install"].__setitem__("diskSelector", {"name": "/dev/nvme0n1"}),
         lambda docs: machine(docs)["install"].__setitem__("diskSelector", {"model": "Samsung*"}),
         "v1alpha1", ("machine", "install", "diskSelector", "name"), "on name is not supported"),
    Case("install-disk-selector-type (metal-only)", "pkg/machinery/config/types/v1alpha1/v1alpha1_provider.go "
         "(InstallConfig.DiskMatchExpression, called by Config.Validate)", VERSIONS,
         lambda docs: machine(docs)["install"].__setitem__("diskSelector", {"type": "nvm"}),
         lambda docs: machine(docs)["install"].__setitem__("diskSelector", {"type": "nvme"}),
         "v1alpha1", ("machine", "install", "diskSelector", "type"), "unsupported install disk type"),
    Case("apiserver-authorizer-type", "pkg/machinery/config/types/v1alpha1/"
         "v1alpha1_authorizaationconfigauthorizer.go (AuthorizationConfigAuthorizerConfig.Validate)", VERSIONS,
         lambda docs: cluster(docs)["apiServer"].__setitem__("authorizationConfig", [{"type": "ABAC", "name": "a"}]),
         lambda docs: cluster(docs)["apiServer"].__setitem__("authorizationConfig",
                                                             [{"type": "Node", "name": "node"},
                                                              {"type": "RBAC", "name": "rbac"}]),
         "v1alpha1", ("cluster", "apiServer", "authorizationConfig", 0, "type"), "authorizer type not allowed"),
    Case("apiserver-authorization-mode-arg", "pkg/machinery/config/types/v1alpha1/v1alpha1_apiserverconfig.go "
         "(APIServerConfig.Validate)", VERSIONS,
         lambda docs: cluster(docs)["apiServer"].update(
             extraArgs={"authorization-mode": "Node,RBAC"}, authorizationConfig=[{"type": "Node", "name": "node"}]),
         lambda docs: cluster(docs)["apiServer"].update(
             extraArgs={"audit-log-maxage": "30"}, authorizationConfig=[{"type": "Node", "name": "node"}]),
         "v1alpha1", ("cluster", "apiServer", "extraArgs", "authorization-mode"), "cannot be used together"),
    Case("scheduler-resources-cpu-memory", "pkg/machinery/config/types/v1alpha1/v1alpha1_resourcesconfig.go "
         "(ResourcesConfig.Validate, via SchedulerConfig.Validate)", VERSIONS,
         lambda docs: cluster(docs)["scheduler"].__setitem__("resources", {"requests": {"nvidia.com/gpu": 1}}),
         lambda docs: cluster(docs)["scheduler"].__setitem__("resources", {"requests": {"cpu": "10m"}}),
         "v1alpha1", ("cluster", "scheduler", "resources", "requests", "nvidia.com/gpu"), "unsupported pod resource"),
    # --- v1alpha1: cluster ---------------------------------------------------------------------------------------
    Case("cluster-dns-domain", CLUSTER_SRC, VERSIONS,
         lambda docs: cluster(docs)["network"].__setitem__("dnsDomain", "cluster..local"),
         lambda docs: cluster(docs)["network"].__setitem__("dnsDomain", "k8s.home.arpa"),
         "v1alpha1", ("cluster", "network", "dnsDomain"), "not a valid DNS name"),
    Case("external-cloud-provider-manifests-need-enabled",
         f"{V1ALPHA1} (ExternalCloudProviderConfig.Validate)", VERSIONS,
         set_in(cluster, "externalCloudProvider", {"enabled": False, "manifests": ["https://example.com/ccm.yaml"]}),
         set_in(cluster, "externalCloudProvider", {"enabled": True, "manifests": ["https://example.com/ccm.yaml"]}),
         "v1alpha1", ("cluster", "externalCloudProvider", "manifests"), "disabled, but manifests"),
    Case("external-cloud-provider-manifest-urls", f"{V1ALPHA1} (ExternalCloudProviderConfig.Validate)", VERSIONS,
         set_in(cluster, "externalCloudProvider", {"enabled": True, "manifests": ["ccm.yaml"]}),
         set_in(cluster, "externalCloudProvider", {"enabled": True, "manifests": ["https://example.com/ccm.yaml"]}),
         "v1alpha1", ("cluster", "externalCloudProvider", "manifests", 0), "invalid manifest URL"),
    Case("etcd-ca-required", f"{V1ALPHA1} (EtcdConfig.Validate)", VERSIONS,
         lambda docs: cluster(docs)["etcd"].pop("ca"), etcd(advertisedSubnets=["10.0.0.0/24"]),
         "v1alpha1", ("cluster", "etcd", "ca"), "etcd CA is required"),
    Case("etcd-subnet-xor-advertised-subnets", f"{V1ALPHA1} (EtcdConfig.Validate)", VERSIONS,
         etcd(subnet="10.0.0.0/24", advertisedSubnets=["10.0.0.0/24"]), etcd(advertisedSubnets=["10.0.0.0/24"]),
         "v1alpha1", ("cluster", "etcd", "subnet"), "can't be set when advertised subnets are set"),
    Case("etcd-advertised-subnets", f"{V1ALPHA1} (EtcdConfig.Validate)", VERSIONS,
         etcd(advertisedSubnets=["10.0.0.0/24", "!10.0.0.256"]), etcd(advertisedSubnets=["10.0.0.0/24", "!10.0.0.1"]),
         "v1alpha1", ("cluster", "etcd", "advertisedSubnets", 1), "not a valid IP or CIDR"),
    Case("etcd-listen-subnets", f"{V1ALPHA1} (EtcdConfig.Validate)", VERSIONS,
         etcd(listenSubnets=["10.0.0.0-24"]), etcd(listenSubnets=["10.0.0.0/24"]),
         "v1alpha1", ("cluster", "etcd", "listenSubnets", 0), "not a valid IP or CIDR"),
    Case("discovery-service-endpoint-path", f"{V1ALPHA1} (ClusterDiscoveryConfig.Validate)", VERSIONS,
         service_endpoint("https://discovery.lan/v1"), service_endpoint("https://discovery.lan/"),
         "v1alpha1", ("cluster", "discovery", "registries", "service", "endpoint"), "path should be empty"),
    Case("discovery-service-needs-cluster-id", f"{V1ALPHA1} (ClusterDiscoveryConfig.Validate)", VERSIONS,
         drop_cluster_key("id"), lambda docs: None,
         "v1alpha1", ("cluster", "discovery", "enabled"), "requires .cluster.id"),
    Case("cni-name", f"{V1ALPHA1} (ValidateCNI)", VERSIONS, cni(name="cilium"), cni(name="none"),
         "v1alpha1", ("cluster", "network", "cni", "name"), "should be one of flannel, custom, none"),
    Case("cni-urls-only-custom", f"{V1ALPHA1} (ValidateCNI)", VERSIONS,
         cni(name="flannel", urls=["https://example.com/cni.yaml"]),
         cni(name="custom", urls=["https://example.com/cni.yaml"]),
         "v1alpha1", ("cluster", "network", "cni", "urls"), '"urls" field should be empty'),
    Case("cni-custom-urls-valid", f"{V1ALPHA1} (ValidateCNI)", VERSIONS,
         cni(name="custom", urls=["example.com/cni.yaml"]), cni(name="custom", urls=["https://example.com/cni.yaml"]),
         "v1alpha1", ("cluster", "network", "cni", "urls", 0), "not a valid URL"),
    Case("cni-flannel-args-only-flannel", f"{V1ALPHA1} (ValidateCNI)", VERSIONS,
         cni(name="none", flannel={"extraArgs": ["--iface=eth0"]}),
         cni(name="flannel", flannel={"extraArgs": ["--iface=eth0"]}),
         "v1alpha1", ("cluster", "network", "cni", "flannel", "extraArgs"), "should be empty for 'none'"),
    Case("cni-flannel-network-policies-only-flannel", f"{V1ALPHA1} (ValidateCNI)", ("v1.13",),
         cni(name="custom", urls=["https://example.com/cni.yaml"], flannel={"kubeNetworkPoliciesEnabled": True}),
         cni(name="flannel", flannel={"kubeNetworkPoliciesEnabled": True}),
         "v1alpha1", ("cluster", "network", "cni", "flannel", "kubeNetworkPoliciesEnabled"), "should not be enabled"),
    # --- HostnameConfig and the v1.12+ network documents ---------------------------------------------------------
    Case("hostname-auto-or-hostname", f"{NETWORK}hostname.go (HostnameConfigV1Alpha1.Validate)", V12,
         lambda docs: hostname_doc(docs).pop("auto"),
         lambda docs: [hostname_doc(docs).pop("auto"), hostname_doc(docs).update(hostname="node-1")],
         "HostnameConfig", (), "either 'auto' or 'hostname' must be set"),
    Case("hostname-conflicts-with-legacy", f"{NETWORK}hostname.go (V1Alpha1ConflictValidate)", V12,
         lambda docs: net(docs).__setitem__("hostname", "node-1"),
         lambda docs: hostname_doc(docs).update(auto="off", hostname="node-1"),
         "v1alpha1", ("machine", "network", "hostname"), "static hostname is already set"),
    Case("link-name-required", f"{NETWORK}link.go (LinkConfigV1Alpha1.Validate)", V12,
         add_doc("LinkConfig", mtu=9000), add_doc("LinkConfig", name="enp1s0", mtu=9000),
         "LinkConfig", ("name",), "name must be specified"),
    Case("link-address-prefix", f"{NETWORK}link.go (CommonLinkConfig.Validate)", V12,
         add_doc("LinkConfig", name="enp1s0", addresses=[{"address": "192.168.1.10"}]),
         add_doc("LinkConfig", name="enp1s0", addresses=[{"address": "192.168.1.10/24"}]),
         "LinkConfig", ("addresses", 0, "address"), "must be a valid IP prefix"),
    Case("link-address-specified-ip", f"{NETWORK}link.go (CommonLinkConfig.Validate)", V12,
         add_doc("LinkConfig", name="enp1s0", addresses=[{"address": "0.0.0.0/0"}]),
         add_doc("LinkConfig", name="enp1s0", addresses=[{"address": "fd00::10/64"}]),
         "LinkConfig", ("addresses", 0, "address"), "not unspecified"),
    Case("link-route-destination", f"{NETWORK}link.go (CommonLinkConfig.Validate)", V12,
         add_doc("LinkConfig", name="enp1s0", routes=[{"destination": "0.0.0.0/0", "gateway": "192.168.1.1"}]),
         add_doc("LinkConfig", name="enp1s0", routes=[{"gateway": "192.168.1.1"}]),
         "LinkConfig", ("routes", 0, "destination"), "destination must be a valid IP prefix"),
    Case("link-route-gateway", f"{NETWORK}link.go (CommonLinkConfig.Validate)", V12,
         add_doc("BridgeConfig", name="br0", links=["enp1s0"], routes=[{"gateway": "192.168.1"}]),
         add_doc("BridgeConfig", name="br0", links=["enp1s0"], routes=[{"gateway": "192.168.1.1"}]),
         "BridgeConfig", ("routes", 0, "gateway"), "gateway must be a valid IP address"),
    Case("bond-doc-links-and-mode", f"{NETWORK}bond.go (BondConfigV1Alpha1.Validate)", V12,
         add_doc("BondConfig", name="bond0", bondMode="802.3ad"),
         add_doc("BondConfig", name="bond0", links=["enp1s0", "enp2s0"], bondMode="802.3ad"),
         "BondConfig", ("links",), "at least one link"),
    Case("bond-doc-mode-required", f"{NETWORK}bond.go (BondConfigV1Alpha1.Validate)", V12,
         add_doc("BondConfig", name="bond0", links=["enp1s0"]),
         add_doc("BondConfig", name="bond0", links=["enp1s0"], bondMode="active-backup"),
         "BondConfig", ("bondMode",), "bond mode must be specified"),
    Case("vlan-doc-id-range", f"{NETWORK}vlan.go (VLANConfigV1Alpha1.Validate)", V12,
         add_doc("VLANConfig", name="vlan4095", vlanID=4095, parent="enp1s0"),
         add_doc("VLANConfig", name="vlan40", vlanID=40, parent="enp1s0"),
         "VLANConfig", ("vlanID",), "between 1 and 4094"),
    Case("vlan-doc-parent", f"{NETWORK}vlan.go (VLANConfigV1Alpha1.Validate)", V12,
         add_doc("VLANConfig", name="vlan40", vlanID=40),
         add_doc("VLANConfig", name="vlan40", vlanID=40, parent="bond0"),
         "VLANConfig", ("parent",), "parent must be specified"),
    Case("link-alias-selector", f"{NETWORK}link_alias.go (LinkAliasConfigV1Alpha1.Validate)", V12,
         add_doc("LinkAliasConfig", name="net0"),
         add_doc("LinkAliasConfig", name="net0", selector={"match": 'mac(link.permanent_addr) == "00:11:22:33:44:55"'}),
         "LinkAliasConfig", ("selector",), "link selector is required"),
    Case("link-alias-pattern-name", f"{NETWORK}link_alias.go (LinkAliasConfigV1Alpha1.Validate)", ("v1.13",),
         add_doc("LinkAliasConfig", name="net%s", selector={"match": "link.type == 1"}),
         add_doc("LinkAliasConfig", name="net%d", selector={"match": "link.type == 1"}),
         "LinkAliasConfig", ("name",), "invalid format verb"),
    Case("dhcp4-duid-raw-needs-duid", f"{NETWORK}dhcp4.go (DHCPv4ConfigV1Alpha1.Validate)", V12,
         add_doc("DHCPv4Config", name="enp1s0", duidRaw="00:01:00:01"),
         add_doc("DHCPv4Config", name="enp1s0", clientIdentifier="duid", duidRaw="00:01:00:01"),
         "DHCPv4Config", ("duidRaw",), "only be set if clientIdentifier is 'duid'"),
    Case("dhcp6-duid-needs-duid-raw", f"{NETWORK}dhcp6.go (DHCPv6ConfigV1Alpha1.Validate)", V12,
         add_doc("DHCPv6Config", name="enp1s0", clientIdentifier="duid"), add_doc("DHCPv6Config", name="enp1s0"),
         "DHCPv6Config", ("clientIdentifier",), "duidRaw must be set"),
    Case("layer2-vip-name-is-ip", f"{NETWORK}layer2_vip.go (Layer2VIPConfigV1Alpha1.Validate)", V12,
         add_doc("Layer2VIPConfig", name="vip", link="enp1s0"),
         add_doc("Layer2VIPConfig", name="10.0.0.5", link="enp1s0"),
         "Layer2VIPConfig", ("name",), "must be a valid IP address"),
    Case("layer2-vip-link", f"{NETWORK}layer2_vip.go (Layer2VIPConfigV1Alpha1.Validate)", V12,
         add_doc("Layer2VIPConfig", name="10.0.0.5"), add_doc("Layer2VIPConfig", name="10.0.0.5", link="bond0"),
         "Layer2VIPConfig", ("link",), "link must be specified"),
    Case("static-host-name-is-ip", f"{NETWORK}static_host.go (StaticHostConfigV1Alpha1.Validate)", V12,
         add_doc("StaticHostConfig", name="nas", hostnames=["nas.lan"]),
         add_doc("StaticHostConfig", name="10.0.0.9", hostnames=["nas.lan"]),
         "StaticHostConfig", ("name",), "must be a valid IP address"),
    Case("static-host-hostnames", f"{NETWORK}static_host.go (StaticHostConfigV1Alpha1.Validate)", V12,
         add_doc("StaticHostConfig", name="10.0.0.9", hostnames=[]),
         add_doc("StaticHostConfig", name="10.0.0.9", hostnames=["nas"]),
         "StaticHostConfig", ("hostnames",), "at least one hostname"),
    Case("time-sync-boot-timeout", f"{NETWORK}time_sync.go (TimeSyncConfigV1Alpha1.Validate)", V12,
         add_doc("TimeSyncConfig", bootTimeout="-1m"), add_doc("TimeSyncConfig", bootTimeout="1m"),
         "TimeSyncConfig", ("bootTimeout",), "cannot be negative"),
    Case("time-sync-ntp-xor-ptp", f"{NETWORK}time_sync.go (TimeSyncConfigV1Alpha1.Validate)", V12,
         add_doc("TimeSyncConfig", ntp={"servers": ["pool.ntp.org"]}, ptp={"devices": ["/dev/ptp0"]}),
         add_doc("TimeSyncConfig", ntp={"servers": ["pool.ntp.org"]}),
         "TimeSyncConfig", ("ptp",), "only one of ntp or ptp"),
    Case("time-sync-conflicts-with-legacy-servers", f"{NETWORK}time_sync.go (V1Alpha1ConflictValidate)", V12,
         both(set_in(machine, "time", {"servers": ["time.cloudflare.com"]}), add_doc("TimeSyncConfig", enabled=True)),
         both(set_in(machine, "time", {"servers": ["time.cloudflare.com"]})),
         "v1alpha1", ("machine", "time", "servers"), "cannot be specified in both"),
    Case("resolver-conflicts-with-legacy-nameservers", f"{NETWORK}resolver.go (V1Alpha1ConflictValidate)", V12,
         both(lambda docs: net(docs).__setitem__("nameservers", ["1.1.1.1"]),
              add_doc("ResolverConfig", nameservers=[{"address": "9.9.9.9"}])),
         add_doc("ResolverConfig", nameservers=[{"address": "9.9.9.9"}]),
         "v1alpha1", ("machine", "network", "nameservers"), "already set in v1alpha1 config"),
    Case("wireguard-doc-private-key", f"{NETWORK}wireguard.go (WireguardConfigV1Alpha1.Validate)", V12,
         add_doc("WireguardConfig", name="wg0", listenPort=51820),
         add_doc("WireguardConfig", name="wg0", listenPort=51820, privateKey=WG_KEY),
         "WireguardConfig", ("privateKey",), "private key must be specified"),
    Case("wireguard-doc-peer-keepalive", f"{NETWORK}wireguard.go (WireguardConfigV1Alpha1.Validate)", V12,
         add_doc("WireguardConfig", name="wg0", privateKey=WG_KEY,
                 peers=[{"publicKey": WG_KEY, "persistentKeepaliveInterval": "-25s"}]),
         add_doc("WireguardConfig", name="wg0", privateKey=WG_KEY,
                 peers=[{"publicKey": WG_KEY, "persistentKeepaliveInterval": "25s"}]),
         "WireguardConfig", ("peers", 0, "persistentKeepaliveInterval"), "cannot be negative"),
    Case("kubespan-doc-mtu", f"{NETWORK}kubespan.go (KubeSpanConfigV1Alpha1.Validate)", ("v1.13",),
         add_doc("KubeSpanConfig", enabled=True, mtu=1000), add_doc("KubeSpanConfig", enabled=True, mtu=1420),
         "KubeSpanConfig", ("mtu",), "at least 1280"),
    Case("kubespan-doc-conflicts-with-legacy", f"{NETWORK}kubespan.go (V1Alpha1ConflictValidate)", ("v1.13",),
         both(kubespan(), add_doc("KubeSpanConfig", enabled=True)), add_doc("KubeSpanConfig", enabled=True),
         "v1alpha1", ("machine", "network", "kubespan"), "already configured in v1alpha1"),
    Case("ethernet-name", f"{NETWORK}ethernet.go (EthernetConfigV1Alpha1.Validate)", VERSIONS,
         add_doc("EthernetConfig", rings={"rx": 256}), add_doc("EthernetConfig", name="enp1s0", rings={"rx": 256}),
         "EthernetConfig", ("name",), "name is required"),
    Case("registry-mirror-endpoint-scheme", "pkg/machinery/config/types/cri/registry_mirror.go "
         "(RegistryMirrorConfigV1Alpha1.Validate)", V12,
         add_doc("RegistryMirrorConfig", name="docker.io", endpoints=[{"url": "oci://mirror.lan"}]),
         add_doc("RegistryMirrorConfig", name="docker.io", endpoints=[{"url": "http://mirror.lan:5000"}]),
         "RegistryMirrorConfig", ("endpoints", 0, "url"), "unsupported scheme"),
    Case("registry-auth-one-method", "pkg/machinery/config/types/cri/registry_auth.go "
         "(RegistryAuthConfigV1Alpha1.Validate)", V12,
         add_doc("RegistryAuthConfig", name="ghcr.io", username="me", password="x", identityToken="y"),
         add_doc("RegistryAuthConfig", name="ghcr.io", username="me", password="x"),
         "RegistryAuthConfig", ("identityToken",), "only one of username/password or identityToken"),
    # --- volume documents ----------------------------------------------------------------------------------------
    Case("volume-config-system-volumes-only", f"{BLOCK}volume_config.go (VolumeConfigV1Alpha1.Validate)", VERSIONS,
         add_doc("VolumeConfig", name="DATA", provisioning={"maxSize": "10GiB"}),
         add_doc("VolumeConfig", name="EPHEMERAL", provisioning={"maxSize": "10GiB"}),
         "VolumeConfig", ("name",), "only STATE, EPHEMERAL, IMAGECACHE"),
    Case("volume-config-state-no-provisioning", f"{BLOCK}volume_config.go (VolumeConfigV1Alpha1.Validate)",
         VERSIONS, add_doc("VolumeConfig", name="STATE", provisioning={"maxSize": "1GiB"}),
         add_doc("VolumeConfig", name="STATE", encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {}}]}),
         "VolumeConfig", ("provisioning",), "not allowed for the STATE volume"),
    Case("volume-config-state-not-locked-to-state", f"{BLOCK}volume_config.go (VolumeConfigV1Alpha1.Validate)",
         VERSIONS,
         add_doc("VolumeConfig", name="STATE",
                 encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {}, "lockToState": True}]}),
         add_doc("VolumeConfig", name="EPHEMERAL",
                 encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {}, "lockToState": True}]}),
         "VolumeConfig", ("encryption", "keys", 0, "lockToState"), "state-locked key is not allowed"),
    Case("volume-min-not-above-max", f"{BLOCK}volume_config.go (ProvisioningSpec.Validate)", VERSIONS,
         add_doc("VolumeConfig", name="EPHEMERAL", provisioning={"minSize": "100GB", "maxSize": "90GiB"}),
         add_doc("VolumeConfig", name="EPHEMERAL", provisioning={"minSize": "90GB", "maxSize": "90GiB"}),
         "VolumeConfig", ("provisioning", "minSize"), "min size is greater than max size"),
    Case("volume-config-encryption-conflicts-with-legacy", f"{BLOCK}volume_config.go (V1Alpha1ConflictValidate)", V12,
         both(encryption(provider="luks2", keys=[{"slot": 0, "tpm": {}}]),
              add_doc("VolumeConfig", name="STATE",
                      encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {}}]})),
         add_doc("VolumeConfig", name="STATE", encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {}}]}),
         "v1alpha1", ("machine", "systemDiskEncryption", "state"), "configured in both"),
    Case("volume-encryption-provider", f"{BLOCK}encryption.go (EncryptionSpec.Validate)", VERSIONS,
         user_volume(encryption={"provider": "luks1", "keys": [{"slot": 0, "nodeID": {}}]}),
         user_volume(encryption={"provider": "luks2", "keys": [{"slot": 0, "nodeID": {}}]}),
         "UserVolumeConfig", ("encryption", "provider"), "unsupported encryption provider"),
    Case("volume-encryption-key-slots", f"{BLOCK}encryption.go (EncryptionSpec.Validate)", VERSIONS,
         user_volume(encryption={"provider": "luks2", "keys": [{"slot": 1, "nodeID": {}}, {"slot": 1, "tpm": {}}]}),
         user_volume(encryption={"provider": "luks2", "keys": [{"slot": 0, "nodeID": {}}, {"slot": 1, "tpm": {}}]}),
         "UserVolumeConfig", ("encryption", "keys", 1, "slot"), "duplicate key slot"),
    Case("volume-encryption-tpm-pcrs", f"{BLOCK}encryption.go (EncryptionSpec.Validate; PCRs from v1.12)", V12,
         add_doc("VolumeConfig", name="EPHEMERAL",
                 encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {"options": {"pcrs": [7, 24]}}}]}),
         add_doc("VolumeConfig", name="EPHEMERAL",
                 encryption={"provider": "luks2", "keys": [{"slot": 0, "tpm": {"options": {"pcrs": [7]}}}]}),
         "VolumeConfig", ("encryption", "keys", 0, "tpm", "options", "pcrs", 1), "out of range"),
    Case("user-volume-name-length", f"{BLOCK}user_volume_config.go (UserVolumeConfigV1Alpha1.Validate)", VERSIONS,
         user_volume(name="a" * 35), user_volume(name="a" * 34),
         "UserVolumeConfig", ("name",), "between 1 and 34 characters"),
    Case("user-volume-name-chars", f"{BLOCK}user_volume_config.go (UserVolumeConfigV1Alpha1.Validate)", VERSIONS,
         user_volume(name="local_path"), user_volume(name="local-path"),
         "UserVolumeConfig", ("name",), "letters, digits, and hyphens"),
    Case("user-volume-disk-selector", f"{BLOCK}volume_config.go (ProvisioningSpec.Validate)", VERSIONS,
         user_volume(provisioning={"maxSize": "50GiB"}), user_volume(),
         "UserVolumeConfig", ("provisioning", "diskSelector"), "disk selector is required"),
    Case("user-volume-size", f"{BLOCK}volume_config.go (ProvisioningSpec.Validate)", VERSIONS,
         user_volume(provisioning={"diskSelector": SELECTOR}),
         user_volume(provisioning={"diskSelector": SELECTOR, "minSize": "10GiB"}),
         "UserVolumeConfig", ("provisioning",), "min size or max size is required"),
    Case("user-volume-project-quota-xfs", f"{BLOCK}user_volume_config.go (FilesystemSpec.Validate)", VERSIONS,
         user_volume(filesystem={"type": "ext4", "projectQuotaSupport": True}),
         user_volume(filesystem={"type": "xfs", "projectQuotaSupport": True}),
         "UserVolumeConfig", ("filesystem", "projectQuotaSupport"), "only available for xfs"),
    Case("user-volume-directory-plain", f"{BLOCK}user_volume_config.go (UserVolumeConfigV1Alpha1.Validate)", V12,
         add_doc("UserVolumeConfig", name="data", volumeType="directory", filesystem={"type": "xfs"}),
         add_doc("UserVolumeConfig", name="data", volumeType="directory"),
         "UserVolumeConfig", ("filesystem",), "invalid for volumeType directory"),
    Case("user-volume-disk-has-no-sizes", f"{BLOCK}volume_config.go (ProvisioningSpec.Validate)", V12,
         user_volume(volumeType="disk"), user_volume(volumeType="disk", provisioning={"diskSelector": SELECTOR}),
         "UserVolumeConfig", ("provisioning",), "not supported"),
    Case("raw-volume-disk-selector", f"{BLOCK}raw_volume_config.go (RawVolumeConfigV1Alpha1.Validate)", VERSIONS,
         add_doc("RawVolumeConfig", name="ceph", provisioning={"maxSize": "100GiB"}),
         add_doc("RawVolumeConfig", name="ceph", provisioning={"diskSelector": SELECTOR, "maxSize": "100GiB"}),
         "RawVolumeConfig", ("provisioning", "diskSelector"), "disk selector is required"),
    Case("swap-volume-name-chars", f"{BLOCK}swap_volume_config.go (SwapVolumeConfigV1Alpha1.Validate)", VERSIONS,
         add_doc("SwapVolumeConfig", name="swap.1", provisioning={"diskSelector": SELECTOR, "maxSize": "8GiB"}),
         add_doc("SwapVolumeConfig", name="swap-1", provisioning={"diskSelector": SELECTOR, "maxSize": "8GiB"}),
         "SwapVolumeConfig", ("name",), "letters, digits, and hyphens"),
    Case("existing-volume-selector", f"{BLOCK}existing_volume_config.go (VolumeDiscoverySpec.Validate)", VERSIONS,
         add_doc("ExistingVolumeConfig", name="media", discovery={"volumeSelector": {}}),
         add_doc("ExistingVolumeConfig", name="media",
                 discovery={"volumeSelector": {"match": 'volume.partition_label == "MEDIA"'}}),
         "ExistingVolumeConfig", ("discovery", "volumeSelector"), "volume selector is required"),
    # --- ExtensionServiceConfig ----------------------------------------------------------------------------------
    Case("extension-service-name", EXTENSIONS, VERSIONS,
         add_doc("ExtensionServiceConfig", environment=["TS_AUTHKEY=x"]),
         add_doc("ExtensionServiceConfig", name="tailscale", environment=["TS_AUTHKEY=x"]),
         "ExtensionServiceConfig", ("name",), "name is required"),
    Case("extension-service-files-or-environment", EXTENSIONS, VERSIONS,
         add_doc("ExtensionServiceConfig", name="nut-client"),
         add_doc("ExtensionServiceConfig", name="nut-client",
                 configFiles=[{"content": "MONITOR ups@nas 1", "mountPath": "/usr/local/etc/nut/upsmon.conf"}]),
         "ExtensionServiceConfig", (), "no config files or environment"),
    Case("extension-service-file-mount-path", EXTENSIONS, VERSIONS,
         add_doc("ExtensionServiceConfig", name="nut-client", configFiles=[{"content": "MONITOR ups"}]),
         add_doc("ExtensionServiceConfig", name="nut-client",
                 configFiles=[{"content": "MONITOR ups", "mountPath": "/usr/local/etc/nut/upsmon.conf"}]),
         "ExtensionServiceConfig", ("configFiles", 0, "mountPath"), "mount path is required"),
    # --- container.go: duplicate and conflicting documents -------------------------------------------------------
    Case("duplicate-document", f"{CONTAINER} (New)", VERSIONS,
         both(user_volume(), user_volume()), both(user_volume(), user_volume(name="logs")),
         "UserVolumeConfig", ("name",), "duplicate document"),
    Case("user-and-existing-volume-conflict", f"{CONTAINER} (New); {BLOCK}user_volume_config.go "
         "(ConflictsWithKinds)", VERSIONS,
         both(user_volume(), add_doc("ExistingVolumeConfig", name="data",
                                     discovery={"volumeSelector": {"match": "volume.name == 'xfs'"}})),
         both(user_volume(), add_doc("ExistingVolumeConfig", name="media",
                                     discovery={"volumeSelector": {"match": "volume.name == 'xfs'"}})),
         "ExistingVolumeConfig", ("name",), "conflicting documents"),
    Case("link-kinds-conflict", f"{CONTAINER} (New); {NETWORK}link.go (conflictingLinkKinds)", V12,
         both(add_doc("LinkConfig", name="bond0", mtu=9000),
              add_doc("BondConfig", name="bond0", links=["enp1s0"], bondMode="802.3ad")),
         both(add_doc("LinkConfig", name="enp1s0", mtu=9000),
              add_doc("BondConfig", name="bond0", links=["enp1s0"], bondMode="802.3ad")),
         "BondConfig", ("name",), "conflicting documents"),
]


def _build(version: str, case: Case, edit: Edit) -> Docs:
    docs = base(version, case.role)
    edit(docs)
    return docs


def _matching(findings: list[rules.RuleFinding], case: Case) -> list[rules.RuleFinding]:
    return [f for f in findings if (f.kind, f.path) == (case.kind, case.path) and case.reason in f.reason]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rule_breaks_and_passes_per_version(case: Case, version: str) -> None:
    bad = _build(version, case, case.bad)
    if version not in case.versions:
        # The version's Talos has no such rule: the patch is not refused for it (or its kind is not decoded).
        assert _matching(rules.check(bad, version), case) == []
        return
    assert len(_matching(rules.check(bad, version), case)) == 1, rules.check(bad, version)
    good = _build(version, case, case.good)
    assert rules.check(good, version) == []
    if case.schema_ok:
        assert ts.validate(good, version, "good.yaml") == []


def test_every_case_names_a_talos_source_file() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case.source.startswith("pkg/machinery/") and ".go" in case.source, case.id


@pytest.mark.parametrize("role", ["controlplane", "worker"])
@pytest.mark.parametrize("version", VERSIONS)
def test_talosctl_bases_break_no_rule(version: str, role: str) -> None:
    assert rules.check(base(version, role), version) == []


@pytest.mark.parametrize("kind", ["LinkConfig", "BondConfig", "VLANConfig", "Layer2VIPConfig", "TimeSyncConfig"])
def test_v1_12_network_kinds_are_refused_by_decoding_on_v1_11(kind: str) -> None:
    # The rules of these kinds do not exist for v1.11 (its Talos does not register them): decoding refuses them.
    doc = {"apiVersion": "v1alpha1", "kind": kind, "name": "x"}
    assert rules.check([*base("v1.11"), doc], "v1.11") == []
    assert "not registered" in ts.strict_check([doc], "v1.11", "p.yaml")[0].reason


def test_schema_validate_reports_rules_with_dotted_paths_and_lines() -> None:
    # schema.validate (what check_node_config calls) carries the rules' findings, located like its own.
    docs = _build("v1.12", CASES[8], CASES[8].bad)  # iface-address-is-ip-or-cidr
    findings = ts.validate(docs, "v1.12", "n.yaml", locate=lambda index, path: 40 + len(path))
    assert [(f.path, f.line) for f in findings] == [("machine.network.interfaces[0].addresses[0]", 46)]


def test_findings_never_quote_the_offending_value() -> None:
    # A value may have been copied from a secret: reasons name the field and the problem only.
    secret = "c2VjcmV0LXZhbHVlLXRoYXQtaXMtbm90LWEta2V5"
    docs = base("v1.12")
    net(docs)["interfaces"] = [
        {"interface": "wg0", "addresses": [secret], "wireguard": {"privateKey": secret, "peers": [
            {"publicKey": secret, "endpoint": secret, "allowedIPs": [secret]}]}}]
    machine(docs)["logging"] = {"destinations": [{"endpoint": secret, "format": secret}]}
    cluster(docs)["network"]["dnsDomain"] = secret
    docs.append({"apiVersion": "v1alpha1", "kind": "StaticHostConfig", "name": secret, "hostnames": ["h"]})
    findings = rules.check(docs, "v1.12")
    assert len(findings) >= 8
    assert not [f for f in findings if secret in f.reason or secret[:8] in f.reason]


def test_ignored_interfaces_skip_the_device_checks() -> None:
    # Source: pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (ValidateNetworkDevices): an ignored
    # device is not checked; tags v1.11.6, v1.12.11, v1.13.9.
    for version in VERSIONS:
        docs = base(version)
        net(docs)["interfaces"] = [{"interface": "eth0", "ignore": True, "addresses": ["x/99"]}]
        assert rules.check(docs, version) == []


def test_resolver_conflict_counts_only_legacy_nameservers_that_are_ips() -> None:
    # Source: pkg/machinery/config/types/network/resolver.go (V1Alpha1ConflictValidate) asks Config.Resolvers
    # (pkg/machinery/config/types/v1alpha1/v1alpha1_network_bridge.go), which keeps the entries that parse.
    for version in V12:
        docs = base(version)
        docs.append({"apiVersion": "v1alpha1", "kind": "ResolverConfig", "nameservers": [{"address": "9.9.9.9"}]})
        net(docs)["nameservers"] = []
        assert rules.check(docs, version) == []
        net(docs)["nameservers"] = ["dns.lan", "1.1.1.1"]
        assert [f.path for f in rules.check(docs, version)] == [("machine", "network", "nameservers")]


def test_talos_reports_only_the_first_time_sync_conflict() -> None:
    # Source: pkg/machinery/config/types/network/time_sync.go (V1Alpha1ConflictValidate) returns at the first.
    docs = base("v1.13")
    machine(docs)["time"] = {"disabled": True, "servers": ["pool.ntp.org"]}
    docs.append({"apiVersion": "v1alpha1", "kind": "TimeSyncConfig", "enabled": True})
    assert [f.path for f in rules.check(docs, "v1.13")] == [("machine", "time", "disabled")]
