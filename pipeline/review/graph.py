"""A picture of the promotion graph: intent files -> render:<node> -> encrypt:<node> -> check -> stage.

Plain functions, no doit: :func:`build_graph` reads the repository (inventory, ledger, artefact
hashes; no key, no sops), :func:`to_dot` writes Graphviz DOT and :func:`render_images` asks the
``dot`` program, when installed, for SVG/PNG. Each task is coloured by what ``doit`` would do
with it now:

- *up to date*: the ledger says the artefact is what today's intent renders (``intent.is_current``);
- *will run*: something the node depends on changed (the tooltip says what), or it is new;
- *failing*: its intent cannot be read (unparsable YAML, undefined template variable, missing
  patch): the error is in the tooltip, and the file at fault is drawn red.

Intent files a node's change comes from are outlined as *changed*.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.layout import base_artefact, node_artefact
from pipeline.promote import bootstrap, intent
from pipeline.promote.intent import intent_inputs
from pipeline.promote.secrets import SecretsChanged
from pipeline.state.ledger import Ledger, load_ledger, sha256_file
from pipeline.talos.inventory import INVENTORY_FILE, Inventory, load_inventory

UP_TO_DATE = "up to date"
WILL_RUN = "will run"
FAILING = "failing"
CHANGED = "changed"  # an intent file some node will be redone for
PLAIN = "unchanged"  # an intent file nothing is redone for

# state -> (fill colour, border colour)
COLOURS: dict[str, tuple[str, str]] = {
    UP_TO_DATE: ("#d8f0d8", "#3a8a3a"),
    WILL_RUN: ("#ffe2b0", "#d98200"),
    FAILING: ("#f7c4c4", "#c62828"),
    CHANGED: ("#fff4d6", "#d98200"),
    PLAIN: ("#ffffff", "#7a7a7a"),
}
DEFAULT_FORMATS = ("svg", "png")


@dataclass
class GraphNode:
    """One box of the picture: an intent file, a base config or a task."""

    id: str
    label: str
    kind: str  # "intent", "artefact" or "task"
    state: str
    tooltip: str = ""


@dataclass
class TaskGraph:
    """Boxes, arrows, and the node-level states the picture was drawn from."""

    cluster: str
    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    node_states: dict[str, str] = field(default_factory=dict)  # cluster node -> state
    _edge_set: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, node: GraphNode) -> GraphNode:
        """Add ``node`` (or return the one already there under its id)."""
        return self.nodes.setdefault(node.id, node)

    def link(self, source: str, target: str) -> None:
        """An arrow from ``source`` to ``target`` (each once)."""
        if (source, target) not in self._edge_set:
            self._edge_set.add((source, target))
            self.edges.append((source, target))

    def counts(self) -> dict[str, int]:
        """How many cluster nodes are in each state."""
        out = {UP_TO_DATE: 0, WILL_RUN: 0, FAILING: 0}
        for state in self.node_states.values():
            out[state] += 1
        return out


def _file_id(path: str) -> str:
    return f"file:{path}"


def _changed_inputs(entry: dict[str, object], inputs: list[str]) -> list[str]:
    """Input names ("patches/cp1.yaml", "base", "node", "code") whose digest differs from the ledger."""
    recorded = entry.get("inputs") or []
    if not isinstance(recorded, list):
        return []
    before = dict(str(item).rsplit(" ", 1) for item in recorded if " " in str(item))
    now = dict(item.rsplit(" ", 1) for item in inputs)
    return [name for name in now if before.get(name) != now[name]]


def _node_state(inventory: Inventory, record: Ledger, graph: TaskGraph, name: str) -> tuple[str, str]:
    """(state, tooltip) of one cluster node; marks the intent files its state comes from."""
    node = inventory.nodes[name]
    try:
        inputs = intent_inputs(inventory, node)
    except SecretsChanged as error:  # encrypted variables or patch changed: a key holder's doit redoes it
        return WILL_RUN, f"{name}: {error}"
    except PipelineError as error:
        if error.path and _file_id(error.path) in graph.nodes:
            culprit = graph.nodes[_file_id(error.path)]
            culprit.state, culprit.tooltip = FAILING, str(error)
        return FAILING, str(error)
    if intent.is_current(inventory, record, node):
        return UP_TO_DATE, f"{name}: up to date"
    entry = record.nodes.get(name) or {}
    artefact = node_artefact(inventory, node)
    recorded_sha = entry.get("artefact_sha256")
    artefact_known = recorded_sha is not None and sha256_file(inventory.root / artefact) == recorded_sha
    trigger = intent.describe_trigger(entry, inputs, artefact_known)
    for changed in _changed_inputs(entry, inputs) if entry else ():
        target = {"node": _file_id(INVENTORY_FILE), "base": base_artefact(node.role)}.get(changed, _file_id(changed))
        box = graph.nodes.get(target)
        if box is not None and box.state == PLAIN:
            box.state = CHANGED
    return WILL_RUN, f"{name}: {trigger}"


def build_graph(root: Path) -> TaskGraph:
    """The promotion graph of the repository at ``root``, each box coloured by its state.

    Reads only intent, the ledger and artefact hashes: no key and no sops process.
    Raises PipelineError when the inventory or the ledger cannot be read.
    """
    inventory = load_inventory(root)
    record = load_ledger(root)
    graph = TaskGraph(inventory.cluster.name)

    graph.add(GraphNode(_file_id(INVENTORY_FILE), INVENTORY_FILE, "intent", PLAIN, "the inventory"))
    for node in inventory.nodes.values():
        for source in inventory.patches_for(node):
            graph.add(GraphNode(_file_id(source), source, "intent", PLAIN, "a patch"))

    try:
        missing = bootstrap.missing(inventory)
        boot_state = WILL_RUN if missing else UP_TO_DATE
        boot_tip = f"bootstrap will make: {', '.join(missing)}" if missing else "bootstrap: nothing missing"
    except PipelineError as error:
        boot_state, boot_tip, missing = FAILING, str(error), []
    graph.add(GraphNode("bootstrap", "bootstrap", "task", boot_state, boot_tip))
    graph.link(_file_id(INVENTORY_FILE), "bootstrap")
    for role in sorted({node.role for node in inventory.nodes.values()}):
        artefact = base_artefact(role)
        state = WILL_RUN if artefact in missing else PLAIN
        graph.add(GraphNode(artefact, artefact, "artefact", state, f"base {role} config"))
        graph.link("bootstrap", artefact)

    for name, node in inventory.nodes.items():
        state, tooltip = _node_state(inventory, record, graph, name)
        graph.node_states[name] = state
        render_id, encrypt_id = f"render:{name}", f"encrypt:{name}"
        graph.add(GraphNode(render_id, render_id, "task", state, tooltip))
        graph.add(GraphNode(encrypt_id, encrypt_id, "task", state, tooltip))
        graph.link(_file_id(INVENTORY_FILE), render_id)
        graph.link(base_artefact(node.role), render_id)
        for source in inventory.patches_for(node):
            graph.link(_file_id(source), render_id)
        graph.link(render_id, encrypt_id)
        graph.link(encrypt_id, "check")

    counts = graph.counts()
    pending = counts[WILL_RUN] + counts[FAILING] > 0 or boot_state != UP_TO_DATE
    tail = WILL_RUN if pending else UP_TO_DATE
    summary = f"{counts[WILL_RUN]} will run, {counts[FAILING]} failing, {counts[UP_TO_DATE]} up to date"
    graph.add(GraphNode("check", "check", "task", tail, f"keyless guard ({summary})"))
    graph.add(GraphNode("stage", "stage", "task", tail, f"git add the changed artefacts ({summary})"))
    graph.link("check", "stage")
    return graph


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{key}={_quote(value)}" for key, value in attrs.items()) + "]"


def _box(node: GraphNode) -> str:
    fill, border = COLOURS[node.state]
    shape = {"intent": "note", "artefact": "cylinder"}.get(node.kind, "box")
    style = "filled,rounded" if node.kind == "task" else "filled"
    width = "2" if node.state in (CHANGED, FAILING, WILL_RUN) else "1"
    return (f"    {_quote(node.id)} "
            + _attrs(label=node.label, shape=shape, style=style, fillcolor=fill, color=border,
                     penwidth=width, tooltip=node.tooltip or node.label))


def _column(name: str, label: str, nodes: Iterable[GraphNode]) -> list[str]:
    lines = [f"  subgraph {_quote('cluster_' + name)} {{", f"    label={_quote(label)};",
             '    style="rounded,dashed"; color="#b0b0b0"; fontcolor="#606060";']
    lines += [_box(node) for node in nodes]
    lines.append("  }")
    return lines


def to_dot(graph: TaskGraph) -> str:
    """Graphviz DOT for ``graph``: columns intent -> render -> encrypt -> check/stage, and a legend."""
    boxes = list(graph.nodes.values())
    counts = graph.counts()
    title = (f"talos-promote: {graph.cluster} · {len(graph.node_states)} nodes · "
             f"{counts[WILL_RUN]} will run · {counts[FAILING]} failing · {counts[UP_TO_DATE]} up to date")
    lines = [
        f"digraph {_quote('promotion')} {{",
        f"  graph {_attrs(rankdir='LR', label=title, labelloc='t', fontname='Helvetica', fontsize='16', nodesep='0.15', ranksep='0.9', newrank='true')};",  # noqa: E501
        f"  node {_attrs(fontname='Helvetica', fontsize='11', height='0.3', margin='0.12,0.04')};",
        f"  edge {_attrs(color='#8a8a8a', arrowsize='0.6')};",
    ]
    lines += _column("intent", "intent (cluster.yaml, patches/)", [b for b in boxes if b.kind == "intent"])
    lines += _column("bootstrap", "bootstrap", [b for b in boxes if b.id == "bootstrap" or b.kind == "artefact"])
    lines += _column("render", "render -> rendered/ (plaintext, purged)",
                     [b for b in boxes if b.id.startswith("render:")])
    lines += _column("encrypt", "encrypt -> encrypted/ (SOPS)", [b for b in boxes if b.id.startswith("encrypt:")])
    lines += _column("versioned", "versioned state", [b for b in boxes if b.id in ("check", "stage")])
    legend = [GraphNode(f"legend:{state}", state, "task" if state in (UP_TO_DATE, WILL_RUN, FAILING) else "intent",
                        state, f"legend: {state}") for state in (UP_TO_DATE, WILL_RUN, FAILING, CHANGED)]
    lines += _column("legend", "legend", legend)
    for source, target in graph.edges:
        # The inventory and the base configs feed every node: drawn light, so patches stand out.
        light = (source == _file_id(INVENTORY_FILE) and target != "bootstrap") or graph.nodes[source].kind == "artefact"
        style = " " + _attrs(color="#c8c8c8", style="dashed") if light else ""
        lines.append(f"  {_quote(source)} -> {_quote(target)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_images(dot_file: Path, formats: Iterable[str] = DEFAULT_FORMATS) -> list[Path]:
    """Run Graphviz ``dot`` on ``dot_file`` for each format (next to it, same stem).

    Returns the images made; an empty list when ``dot`` is not installed.
    Raises PipelineError when ``dot`` rejects the file.
    """
    program = shutil.which("dot")
    if program is None:
        return []
    made: list[Path] = []
    for fmt in formats:
        target = dot_file.with_suffix(f".{fmt}")
        result = subprocess.run([program, f"-T{fmt}", str(dot_file), "-o", str(target)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = " ".join(result.stderr.split())[:300]
            raise PipelineError(f"graphviz dot -T{fmt} failed: {detail}", path=str(dot_file))
        made.append(target)
    return made


def write_graph(root: Path, out: Path, formats: Iterable[str] = DEFAULT_FORMATS) -> tuple[TaskGraph, list[Path]]:
    """Build the graph of ``root``, write DOT to ``out`` and, with graphviz, images beside it."""
    graph = build_graph(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_dot(graph), encoding="utf-8")
    return graph, render_images(out, formats)
