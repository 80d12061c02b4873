"""`doit graph`: draw the promotion graph of this repository (DOT, and SVG/PNG with graphviz)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.wiring.action import action

DEFAULT_OUT = "graph.dot"
# pipeline.review.graph.DEFAULT_FORMATS; that module is imported by the action only (dodo.py imports this
# one on every run).
DEFAULT_FORMATS = ("svg", "png")


def _formats(text: str) -> list[str]:
    items = [item.strip().lower() for item in text.replace(" ", ",").split(",") if item.strip()]
    return [] if items == ["none"] else items


def draw(out: str = DEFAULT_OUT, formats: str = ",".join(DEFAULT_FORMATS)) -> dict[str, Any]:
    """The action: write the graph; bad input or a graphviz error is a one-line task failure."""
    from pipeline.review.graph import FAILING, UP_TO_DATE, WILL_RUN, write_graph

    root = Path.cwd()  # doit runs from the folder of dodo.py: the repository
    target = Path(out) if Path(out).is_absolute() else root / out
    wanted = _formats(formats)
    if target.suffix.lstrip(".").lower() in wanted:
        raise PipelineError(f"--out {out}: give the DOT file a .dot name; the {target.suffix} image is made beside it")
    graph, images = write_graph(root, target, wanted)
    counts = graph.counts()
    shown = [_relative(target, root), *(_relative(image, root) for image in images)]
    note = "" if images or not wanted else " (graphviz `dot` not installed: DOT only)"
    line = (f"graph: wrote {', '.join(shown)}{note} · {len(graph.node_states)} nodes: "
            f"{counts[WILL_RUN]} will run, {counts[FAILING]} failing, {counts[UP_TO_DATE]} up to date")
    return {"lines": [line], "files": shown}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def task_graph() -> dict[str, Any]:
    """Draw the task graph (intent -> render -> encrypt -> stage) as graph.dot (+ .svg/.png with graphviz)."""
    return {
        "actions": [action(draw)],
        "params": [
            {"name": "out", "long": "out", "type": str, "default": DEFAULT_OUT,
             "help": "where to write the DOT file; images go beside it [default: %(default)s]"},
            {"name": "formats", "long": "formats", "type": str, "default": ",".join(DEFAULT_FORMATS),
             "help": "images to make with graphviz `dot`, comma separated; `none` for DOT only "
                     "[default: %(default)s]"},
        ],
        "uptodate": [False],  # a picture of now: always drawn
        "doc": task_graph.__doc__,
        "verbosity": 2,
    }
