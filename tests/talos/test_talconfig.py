"""talhelper's talconfig.yaml -> cluster.yaml + patches/ (pipeline.talos.talconfig).

Checked against talhelper's own example files (tests/data/talhelper, see SOURCES.md): the
converted cluster.yaml parses with the inventory parser, and every node, rendered from a base
config plus its converted patches, carries each field where talhelper's docs and code put it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PipelineError
from pipeline.promote.intent import load_node_patches
from pipeline.talos.baseconfig import ClusterParams, generate_base
from pipeline.talos.inventory import Inventory, parse_inventory
from pipeline.talos.patching import apply_patches
from pipeline.talos.talconfig import TalconfigImport, convert_talconfig, import_talconfig, load_talenv, node_name_for
from pipeline.talos.templating import render_template
from pipeline.talos.validation import validate_machine_config

DATA = Path(__file__).resolve().parents[1] / "data" / "talhelper"
EXAMPLE = DATA / "example"
TESTDATA = DATA / "config-testdata"
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "talos-fixtures"


@pytest.fixture(scope="module")
def bundle() -> dict:
    return yaml.safe_load((FIXTURES / "secrets" / "secrets.yaml").read_text())


def write_repo(result: TalconfigImport, root: Path) -> Inventory:
    (root / "patches").mkdir(parents=True, exist_ok=True)
    for name, text in result.patches.items():
        path = root / "patches" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "cluster.yaml").write_text(result.cluster_yaml)
    return parse_inventory(result.cluster_yaml, root)


def render(inventory: Inventory, node: str, bundle: dict, talos_version: str | None = None) -> list[dict]:
    cluster = inventory.cluster
    params = ClusterParams(name=cluster.name, endpoint=cluster.endpoint,
                           talos_version=talos_version or cluster.talos_version,
                           kubernetes_version=cluster.kubernetes_version)
    entry = inventory.nodes[node]
    documents = apply_patches(generate_base(entry.role, bundle, params), load_node_patches(inventory, entry))
    validate_machine_config(documents, node)
    return documents


def v1alpha1(documents: list[dict]) -> dict:
    return next(doc for doc in documents if "kind" not in doc)


def kind(documents: list[dict], name: str) -> list[dict]:
    return [doc for doc in documents if doc.get("kind") == name]


@pytest.fixture(scope="module")
def example() -> TalconfigImport:
    text = (EXAMPLE / "talconfig.yaml").read_text()
    return convert_talconfig(text, EXAMPLE, "talconfig.yaml", env={"myDomainName": "home.example"})


@pytest.fixture(scope="module")
def example_repo(example: TalconfigImport, tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    return write_repo(example, tmp_path_factory.mktemp("example"))


# --- example/talconfig.yaml (Talos v1.12: hostname and resolver as documents) ----------------------


def test_example_cluster_fields(example_repo: Inventory) -> None:
    talconfig = yaml.safe_load((EXAMPLE / "talconfig.yaml").read_text())
    cluster = example_repo.cluster
    assert (cluster.name, cluster.endpoint, cluster.talos_version, cluster.kubernetes_version) == (
        talconfig["clusterName"], talconfig["endpoint"], talconfig["talosVersion"], talconfig["kubernetesVersion"])
    assert {name: (node.role, node.address) for name, node in example_repo.nodes.items()} == {
        "kmaster1": ("controlplane", "192.168.200.11"), "kworker1": ("worker", "192.168.200.13")}


def test_example_controlplane_renders_every_converted_field(example_repo: Inventory, bundle: dict) -> None:
    # The user has set the WireGuard key the import moved into an encrypted variable: stood in here by its value.
    key = yaml.safe_load((EXAMPLE / "talconfig.yaml").read_text())["nodes"][0]["networkInterfaces"][1]["wireguard"][
        "privateKey"]
    patch = example_repo.root / "patches" / "talhelper-node-kmaster1.yaml"
    patch_text = patch.read_text()
    assert key not in patch_text and '"{{ secrets.kmaster1_wg0_wireguard_private_key }}"' in patch_text
    patch.write_text(patch_text.replace("{{ secrets.kmaster1_wg0_wireguard_private_key }}", key))
    talconfig = yaml.safe_load((EXAMPLE / "talconfig.yaml").read_text())
    node = talconfig["nodes"][0]
    documents = render(example_repo, "kmaster1", bundle)
    config = v1alpha1(documents)
    machine, cluster = config["machine"], config["cluster"]
    # domain -> cluster.network.dnsDomain (talenv substituted); pod/svc nets -> podSubnets/serviceSubnets
    assert cluster["network"]["dnsDomain"] == "home.example"
    assert cluster["network"]["podSubnets"] == talconfig["clusterPodNets"]
    assert cluster["network"]["serviceSubnets"] == talconfig["clusterSvcNets"]
    assert cluster["network"]["cni"] == talconfig["cniConfig"]  # cniConfig -> cluster.network.cni
    assert cluster["allowSchedulingOnControlPlanes"] is True  # allowSchedulingOnMasters (alias)
    assert machine["install"]["diskSelector"] == node["installDiskSelector"] == {"size": "4GB", "model": "WDC*"}
    assert "home-cluster.local" in cluster["apiServer"]["certSANs"]  # additionalApiServerCertSans
    assert "192.168.200.10" in machine["certSANs"]  # additionalMachineCertSans -> machine.certSANs
    # networkInterfaces -> machine.network.interfaces (as given)
    # (as given: the WireGuard private key arrives through secrets.NAME, never in the plaintext patch)
    given = [dict(item) for item in node["networkInterfaces"]]
    assert machine["network"]["interfaces"] == given
    patch.write_text(patch_text)
    assert [i.get("interface") for i in machine["network"]["interfaces"]] == ["bond0", "wg0", None]
    assert machine["network"]["interfaces"][0]["mtu"] == 1500
    assert machine["network"]["interfaces"][2]["deviceSelector"]["hardwareAddr"] == "00:30:93:12:31:78"
    # hostname -> HostnameConfig (Talos >= 1.12, as talhelper writes it); nameservers -> ResolverConfig
    assert kind(documents, "HostnameConfig") == [
        {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "off", "hostname": "kmaster1"}]
    resolver = kind(documents, "ResolverConfig")[0]
    assert [item["address"] for item in resolver["nameservers"]] == node["nameservers"]
    assert resolver["searchDomains"]["disableDefault"] is True  # disableSearchDomain
    # nodeLabels -> machine.nodeLabels (minus the Go template); the @file patch's talenv label
    labels = machine["nodeLabels"]
    assert labels["rack"] == "rack1a" and labels["zone"] == "us-east-1a"
    assert labels["domainname"] == "home.example"
    assert "isSecureBootEnabled" not in labels
    # controlPlane patches, then global inline and @file patches
    assert machine["kubelet"]["extraArgs"]["feature-gates"] == "GracefulNodeShutdown=true,MixedProtocolLBService=true"
    assert machine["env"] == {"GRPC_GO_LOG_SEVERITY_LEVEL": "error"}
    assert sorted(doc["name"] for doc in kind(documents, "UserVolumeConfig")) == ["sata2", "sata3"]


def test_example_worker_renders_every_converted_field(example_repo: Inventory, bundle: dict) -> None:
    documents = render(example_repo, "kworker1", bundle)
    config = v1alpha1(documents)
    machine, cluster = config["machine"], config["cluster"]
    assert machine["install"]["disk"] == "/dev/sdb"  # installDisk -> machine.install.disk
    assert kind(documents, "HostnameConfig")[0]["hostname"] == "kworker1"
    assert not kind(documents, "ResolverConfig")  # no nameservers on this node or the worker group
    # the node's inline patch, the worker group's patch, the @file patch shared with controlPlane
    assert [i["interface"] for i in machine["network"]["interfaces"]] == ["eth1"]
    assert machine["kubelet"]["extraArgs"]["feature-gates"] == "GracefulNodeShutdown=false,MixedProtocolLBService=false"
    assert machine["nodeLabels"]["domainname"] == "home.example"
    # controlplane-only fields stay off workers, as Talos generates them
    assert "allowSchedulingOnControlPlanes" not in cluster and "apiServer" not in cluster
    assert "192.168.200.10" in machine["certSANs"] and cluster["network"]["dnsDomain"] == "home.example"


def test_example_patch_order_is_talhelpers(example: TalconfigImport) -> None:
    nodes = yaml.safe_load(example.cluster_yaml)["nodes"]
    assert nodes["kworker1"]["patches"] == [
        "talhelper-node-kworker1.yaml",  # node fields
        "talhelper-worker-1.yaml",  # worker group patch
        "talhelper-kworker1-1.yaml", "extraNodeLabels-patch.yaml",  # the node's own patches
        "talhelper-global-1.yaml", "talhelper-global-2.yaml", "uservolumeconfig3.yaml",  # global, last
    ]


def test_example_unconverted_fields_are_listed_by_name(example: TalconfigImport) -> None:
    assert sorted(example.unconverted) == sorted([
        "worker.ingressFirewall", "worker.schematic",
        "nodes[kmaster1].extensionServices", "nodes[kmaster1].userVolumes", "nodes[kmaster1].volumes",
        "nodes[kmaster1].ingressFirewall", "nodes[kmaster1].machineSpec", "nodes[kmaster1].schematic",
        "nodes[kmaster1].machineFiles", "nodes[kmaster1].nodeAnnotations",
        "nodes[kmaster1].nodeTaints", "nodes[kmaster1].kernelModules",
        "nodes[kmaster1].nodeLabels.isSecureBootEnabled (talhelper Go template)",
    ])


def test_example_talenv_reference_in_patch_text_becomes_a_var(example: TalconfigImport) -> None:
    assert example.vars == {"myDomainName": "home.example"}
    assert yaml.safe_load(example.cluster_yaml)["vars"] == {"myDomainName": "home.example"}
    assert "{{ vars.myDomainName }}" in example.patches["extraNodeLabels-patch.yaml"]
    assert "${" not in "".join(example.patches.values())


def test_example_real_talenv_is_sops_encrypted_and_refused() -> None:
    with pytest.raises(PipelineError, match="SOPS-encrypted") as caught:
        import_talconfig(EXAMPLE / "talconfig.yaml", [EXAMPLE / "talenv.yaml"])
    assert "talenv.yaml" in str(caught.value)


# --- pkg/config/testdata/talconfig.yaml (Talos v1.5: v1alpha1 network fields) ---------------------


@pytest.fixture(scope="module")
def testdata() -> TalconfigImport:
    return import_talconfig(TESTDATA / "talconfig.yaml", [TESTDATA / "env1.yaml", TESTDATA / "env2.yml"])


def test_testdata_talenv_substitution_in_node_fields(testdata: TalconfigImport, tmp_path: Path,
                                                     bundle: dict) -> None:
    inventory = write_repo(testdata, tmp_path)
    assert testdata.node_names == {"hostname1": "hostname1", "hostname2": "hostname2"}
    assert {name: (node.role, node.address) for name, node in inventory.nodes.items()} == {
        "hostname1": ("controlplane", "192.168.200.10"), "hostname2": ("worker", "192.168.200.11")}
    assert inventory.cluster.talos_version == "v1.5.4"
    assert testdata.vars == {}  # substituted in fields, never in patch text
    # Talos v1.5 is older than the base-config generator's contracts: render on v1.11, which uses the
    # same v1alpha1 fields for everything converted here.
    control = v1alpha1(render(inventory, "hostname1", bundle, "v1.11.5"))
    worker = v1alpha1(render(inventory, "hostname2", bundle, "v1.11.5"))
    assert control["machine"]["network"]["hostname"] == "hostname1"  # hostname (Talos <= 1.11)
    assert worker["machine"]["network"]["hostname"] == "hostname2"
    assert control["machine"]["install"]["disk"] == worker["machine"]["install"]["disk"] == "/dev/sda"
    # node certSANs, then the controlPlane group's, plus the cluster-wide additionalMachineCertSans
    assert control["machine"]["certSANs"] == ["example.org", "example.net", "example.com"]
    assert worker["machine"]["certSANs"] == ["example.org"]
    assert control["machine"]["network"]["disableSearchDomain"] is True  # controlPlane.disableSearchDomain
    assert "disableSearchDomain" not in worker["machine"]["network"]


def test_testdata_unconverted(testdata: TalconfigImport) -> None:
    assert sorted(testdata.unconverted) == ["controlPlane.schematic", "nodes[hostname1].schematic",
                                            "worker.schematic"]


def test_unset_variable_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"\$\{HOSTNAME2\} is not set") as caught:
        import_talconfig(TESTDATA / "talconfig.yaml", [TESTDATA / "env1.yaml"])
    assert "nodes[1].hostname" in str(caught.value)


# --- synthetic cases ------------------------------------------------------------------------------

BASIC = """\
clusterName: Lab_Cluster
talosVersion: v1.11.5
kubernetesVersion: v1.34.1
endpoint: https://10.0.0.10:6443
allowSchedulingOnControlPlanes: true
cniConfig:
  name: none
imageFactory:
  registryURL: factory.example
nodes:
  - hostname: CP-01.lab.example
    ipAddress: 10.0.0.11, 10.0.0.12
    controlPlane: true
    installDisk: /dev/nvme0n1
    nodeLabels:
      zone: "1.10"
      tier: no
    kernelModules:
      - name: br_netfilter
    patches:
      - |-
        machine:
          sysctls:
            net.core.somaxconn: "${SOMAXCONN}"
          files:
            - content: "{% raw %} $$HOME"
              path: /var/x
              op: create
      - "@patches/extra.yaml"
  - hostname: cp-01-lab-example
    ipAddress: 10.0.0.13
    controlPlane: false
    installDisk: /dev/sda
    patches:
      - "@patches/extra.yaml"
      - |-
        machine:
          nodeLabels:
            arch: '{{ .MachineConfig.MachineInstall.InstallImage }}'
"""


def convert(text: str, folder: Path, env: dict[str, str] | None = None) -> TalconfigImport:
    return convert_talconfig(text, folder, "talconfig.yaml", env)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "extra.yaml").write_text("machine:\n  env:\n    EXTRA: '${EXTRA}'\n")
    return tmp_path


def test_basic_conversion(folder: Path, tmp_path_factory: pytest.TempPathFactory, bundle: dict) -> None:
    result = convert(BASIC, folder, {"SOMAXCONN": "65535", "EXTRA": "two words"})
    inventory = write_repo(result, tmp_path_factory.mktemp("repo"))
    assert inventory.cluster.name == "lab-cluster"
    assert result.node_names == {"CP-01.lab.example": "cp-01-lab-example", "cp-01-lab-example": "cp-01-lab-example-2"}
    assert inventory.nodes["cp-01-lab-example"].address == "10.0.0.11"
    assert inventory.vars == {"EXTRA": "two words", "SOMAXCONN": "65535"}
    assert sorted(result.unconverted) == [
        "imageFactory", "nodes[CP-01.lab.example].ipAddress (addresses after the first)",
        "nodes[CP-01.lab.example].kernelModules", "nodes[cp-01-lab-example].patches[1] (talhelper Go template)"]
    control = v1alpha1(render(inventory, "cp-01-lab-example", bundle))
    assert control["machine"]["network"]["hostname"] == "CP-01.lab.example"  # the hostname itself is kept
    assert control["cluster"]["network"]["cni"] == {"name": "none"}
    assert control["cluster"]["allowSchedulingOnControlPlanes"] is True
    assert control["machine"]["install"]["disk"] == "/dev/nvme0n1"
    assert control["machine"]["nodeLabels"]["zone"] == "1.10" and control["machine"]["nodeLabels"]["tier"] == "no"
    assert control["machine"]["sysctls"]["net.core.somaxconn"] == "65535"
    assert control["machine"]["files"][0]["content"] == "{% raw %} $HOME"  # jinja-looking text stays literal
    assert control["machine"]["env"]["EXTRA"] == "two words"
    worker = v1alpha1(render(inventory, "cp-01-lab-example-2", bundle))
    assert worker["machine"]["env"]["EXTRA"] == "two words"
    # one file for both references, under its talconfig-relative path
    assert [name for name in result.patches if name.endswith("extra.yaml")] == ["patches/extra.yaml"]
    assert inventory.nodes["cp-01-lab-example-2"].patches[1] == "patches/extra.yaml"


@pytest.mark.parametrize("reference", ["@../outside.yaml", "@/etc/hostname", "@patches/../../outside.yaml",
                                       "@link/outside.yaml"])
def test_file_patch_outside_the_folder_is_refused(tmp_path: Path, reference: str) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (tmp_path / "outside.yaml").write_text("machine: {env: {SECRET: x}}\n")
    (folder / "link").symlink_to(tmp_path)
    text = BASIC.split("nodes:")[0] + f"nodes:\n  - hostname: a\n    patches: ['{reference}']\n"
    with pytest.raises(PipelineError, match=r"nodes\[a\]\.patches\[0\]: patch file .* (inside|outside)") as caught:
        convert(text, folder)
    assert str(caught.value).startswith("talconfig.yaml: ")


def test_missing_file_patch_is_named(tmp_path: Path) -> None:
    text = BASIC.split("nodes:")[0] + "nodes:\n  - hostname: a\n    patches: ['@nope.yaml']\n"
    with pytest.raises(PipelineError, match=r"'nope\.yaml' does not exist"):
        convert(text, tmp_path)


def test_unsupported_envsubst_form_is_refused(tmp_path: Path) -> None:
    text = BASIC.split("nodes:")[0] + "nodes:\n  - hostname: ${NAME:-a}\n"
    with pytest.raises(PipelineError, match="not supported"):
        convert(text, tmp_path, {"NAME": "x"})


def test_secret_values_never_in_errors(tmp_path: Path) -> None:
    text = BASIC.split("nodes:")[0] + "nodes:\n  - hostname: a\n    controlPlane: ${CP}\n"
    with pytest.raises(PipelineError) as caught:
        convert(text, tmp_path, {"CP": "s3cr3t-value"})
    assert "s3cr3t-value" not in str(caught.value)


def test_whole_scalar_reference_is_retyped(tmp_path: Path) -> None:
    text = BASIC.split("nodes:")[0] + "nodes:\n  - hostname: a\n    controlPlane: ${CP}\n"
    result = convert(text, tmp_path, {"CP": "true"})
    assert yaml.safe_load(result.cluster_yaml)["nodes"]["a"]["role"] == "controlplane"


def test_required_fields(tmp_path: Path) -> None:
    without_version = BASIC.replace("talosVersion: v1.11.5\n", "")
    with pytest.raises(PipelineError, match="talosVersion: not set"):
        convert(without_version, tmp_path)
    with pytest.raises(PipelineError, match="nodes: at least one node"):
        convert(BASIC.split("nodes:")[0], tmp_path)


def test_load_talenv_keeps_text() -> None:
    assert load_talenv("A: 1.10\nB: yes\nC: '007'\n") == {"A": "1.10", "B": "yes", "C": "007"}
    with pytest.raises(PipelineError, match="plain value"):
        load_talenv("A: [1]\n", "env.yaml")


def test_node_name_for() -> None:
    assert node_name_for("kmaster1") == "kmaster1"
    assert node_name_for("Worker_01.Home.lan") == "worker-01-home-lan"
    assert node_name_for("x" * 80) == "x" * 63


def test_environment_is_consulted_after_files(tmp_path: Path) -> None:
    result = import_talconfig(TESTDATA / "talconfig.yaml", [TESTDATA / "env1.yaml"],
                              environ={**os.environ, "HOSTNAME2": "from-env", "IP1": "ignored"})
    assert result.node_names["from-env"] == "from-env"
    assert yaml.safe_load(result.cluster_yaml)["nodes"]["hostname1"]["address"] == "192.168.200.10"


def test_yaml_is_read_as_talhelpers_go_decoder_reads_it(tmp_path: Path, bundle: dict) -> None:
    text = BASIC.split("nodes:")[0].replace("OnControlPlanes: true", "OnControlPlanes: yes")
    text = text.replace("cniConfig:\n  name: none\n", "domain: null\ncniConfig:\n  name: custom\n"
                        "  urls: ['https://example.org/{#x}/cni.yaml']\n")
    text += "nodes:\n  - hostname: a\n    controlPlane: on\n    installDisk: /dev/sda\n"
    result = convert(text, tmp_path)
    inventory = write_repo(result, tmp_path / "repo")
    assert inventory.nodes["a"].role == "controlplane"  # `on` is true for a Go bool
    config = v1alpha1(render(inventory, "a", bundle))
    assert config["cluster"]["allowSchedulingOnControlPlanes"] is True
    assert config["cluster"]["network"]["dnsDomain"] == "cluster.local"  # null: not set
    assert config["cluster"]["network"]["cni"]["urls"] == ["https://example.org/{#x}/cni.yaml"]  # stays literal


def test_load_talenv_dotenv_lines_and_empty_values() -> None:
    assert load_talenv("# comment\nA=1\nexport B='two words'\n") == {"A": "1", "B": "two words"}
    assert load_talenv("A:\n") == {"A": ""}
    with pytest.raises(PipelineError, match="VARIABLE=value"):
        load_talenv("- a\n- b\n", "env.yaml")


def test_empty_talenv_value_is_refused_like_talhelper(tmp_path: Path) -> None:
    text = BASIC.split("nodes:")[0] + "nodes:\n  - hostname: $NAME\n"
    with pytest.raises(PipelineError, match=r"\$\{NAME\} is not set"):
        convert(text, tmp_path, load_talenv("NAME:\n"))


def test_notes_say_what_behaves_differently(example: TalconfigImport) -> None:
    notes = "\n".join(example.notes)
    assert "exclude-from-external-load-balancers" in notes
    assert ("nodes[kmaster1].networkInterfaces[1].wireguard.privateKey is a secret: the patch reads "
            "secrets.kmaster1_wg0_wireguard_private_key; set it once with: doit secrets set "
            "kmaster1_wg0_wireguard_private_key") in example.notes
    assert "talenv myDomainName substituted in domain" in notes


EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "60"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_node_names_are_dns_labels(hostname: str) -> None:
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", node_name_for(hostname))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(alphabet="{}%#$ab \n'", max_size=40))
def test_inline_patch_text_renders_back_to_itself(tmp_path_factory: pytest.TempPathFactory, body: str) -> None:
    text = BASIC.split("nodes:")[0] + "nodes:\n  - hostname: a\n    patches: [PATCH]\n"
    talconfig = text.replace("PATCH", yaml.safe_dump(body, default_style='"').strip())
    if "{{" in body or "}}" in body or "$" in body:
        return  # Go templates are not converted; `$` is envsubst's (tested above)
    result = convert(talconfig, tmp_path_factory.getbasetemp())
    name = yaml.safe_load(result.cluster_yaml)["nodes"]["a"]["patches"][-1]
    rendered = render_template(result.patches[name], name, {"vars": {}, "node": {}, "cluster": {}})
    assert rendered == body if body.endswith("\n") else rendered == body + "\n"
