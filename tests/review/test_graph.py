"""`doit graph`: a DOT picture of the promotion graph that graphviz accepts, coloured by state."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.review.graph import COLOURS, FAILING, UP_TO_DATE, WILL_RUN, GraphNode, TaskGraph, build_graph, to_dot
from tests.conftest import Repo

NODE_LINE = re.compile(r'^\s+"(?P<id>[^"]+)" \[(?P<attrs>.*)\]$')


def dot_program() -> str:
    program = shutil.which("dot")
    assert program, "graphviz `dot` is not installed (.ci/run installs Debian's graphviz)"
    return program


def boxes(dot_text: str) -> dict[str, str]:
    """Box id -> its attribute text, from our DOT output (one box per line)."""
    return {match["id"]: match["attrs"] for line in dot_text.splitlines() if (match := NODE_LINE.match(line))}


def fill(attrs: str) -> str:
    found = re.search(r'fillcolor="([^"]+)"', attrs)
    assert found, attrs
    return found.group(1)


def inventory_nodes(repo: Repo) -> list[str]:
    return list(yaml.safe_load((repo.path / "cluster.yaml").read_text())["nodes"])


def test_graph_writes_dot_that_graphviz_accepts_with_every_node(promoted: Repo) -> None:
    result = promoted.doit("graph")
    assert result.returncode == 0, result.stdout + result.stderr
    dot_file = promoted.path / "graph.dot"
    text = dot_file.read_text()
    checked = subprocess.run([dot_program(), "-Tsvg", str(dot_file)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.lstrip().startswith("<?xml") and "<svg" in checked.stdout

    found = boxes(text)
    for node in inventory_nodes(promoted):
        assert f"render:{node}" in found and f"encrypt:{node}" in found
        assert fill(found[f"encrypt:{node}"]) == COLOURS[UP_TO_DATE][0]
    for box in ("file:cluster.yaml", "file:patches/resolvers.yaml", "file:patches/cp1.yaml", "bootstrap", "stage"):
        assert box in found
    assert (promoted.path / "graph.svg").stat().st_size > 0
    assert (promoted.path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "graph: wrote graph.dot, graph.svg, graph.png · 6 nodes: 0 will run, 0 failing, 6 up to date" \
        in result.stdout
    assert promoted.sops_runs() == []  # a picture needs no key


def test_graph_colours_what_will_run_and_what_fails(promoted: Repo) -> None:
    cp1 = promoted.path / "patches/cp1.yaml"
    cp1.write_text(cp1.read_text().replace("hostname: {{ node.name }}", "hostname: {{ node.name }}-x"))
    with (promoted.path / "patches/w2.yaml").open("a") as handle:
        handle.write("  broken: {{ no_such_variable }}\n")
    result = promoted.doit("graph", "--out", "pictures/now.dot", "--formats", "svg")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (promoted.path / "pictures/now.svg").is_file()
    assert not (promoted.path / "pictures/now.png").exists()
    found = boxes((promoted.path / "pictures/now.dot").read_text())
    assert fill(found["render:cp1"]) == fill(found["encrypt:cp1"]) == COLOURS[WILL_RUN][0]
    assert "patches/cp1.yaml changed" in found["encrypt:cp1"]
    assert fill(found["encrypt:w2"]) == COLOURS[FAILING][0]
    assert "no_such_variable" in found["encrypt:w2"]
    assert fill(found["file:patches/w2.yaml"]) == COLOURS[FAILING][0]
    assert fill(found["encrypt:w1"]) == COLOURS[UP_TO_DATE][0]
    assert "1 will run, 1 failing, 4 up to date" in result.stdout


def test_graph_of_a_fresh_clone_needs_no_key_and_shows_everything_to_do(fresh: Repo) -> None:
    graph = build_graph(fresh.path)
    assert graph.counts() == {UP_TO_DATE: 0, WILL_RUN: 6, FAILING: 0}
    assert graph.nodes["bootstrap"].state == WILL_RUN
    assert not (fresh.home / ".config").exists()  # no key was made


def test_graph_of_a_broken_inventory_is_one_line_and_exit_1(promoted: Repo) -> None:
    (promoted.path / "cluster.yaml").write_text("cluster: [unclosed\n")
    result = promoted.doit("graph")
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("FAILED")] == [
        line for line in result.stdout.splitlines() if "cluster.yaml" in line]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (promoted.path / "graph.dot").exists()


def test_out_must_not_be_an_image_name(promoted: Repo) -> None:
    result = promoted.doit("graph", "--out", "graph.svg")
    assert result.returncode == 1
    assert "FAILED graph: --out graph.svg" in result.stdout


def test_dot_quotes_labels(tmp_path: Path) -> None:
    graph = TaskGraph('we"ird\\name')
    graph.add(GraphNode('a "b"', 'say "hi"\\', "task", UP_TO_DATE, "tip\nline"))
    graph.add(GraphNode("c", "c", "intent", "unchanged"))
    graph.link("c", 'a "b"')
    dot_file = tmp_path / "g.dot"
    dot_file.write_text(to_dot(graph))
    checked = subprocess.run([dot_program(), "-Tsvg", str(dot_file)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("formats", ["none", "svg"])
def test_formats_option(promoted: Repo, formats: str) -> None:
    result = promoted.doit("graph", "--formats", formats)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (promoted.path / "graph.svg").exists() == (formats == "svg")
    assert not (promoted.path / "graph.png").exists()


def test_the_default_image_formats_of_the_task_are_the_graph_module_s() -> None:
    # graph_task repeats them so that dodo.py need not import pipeline.review.graph on every run.
    from pipeline.review import graph
    from pipeline.wiring import graph_task

    assert graph_task.DEFAULT_FORMATS == graph.DEFAULT_FORMATS
