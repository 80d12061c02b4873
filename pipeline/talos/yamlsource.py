"""Reading YAML intent with the line numbers a user needs in an error message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.redact import safe_library_message

# Dotted paths such as ("nodes", "cp1", "role") mapped to 1-based source lines.
LineMap = dict[tuple[Any, ...], int]


# libyaml's parser when PyYAML was built with it: the inventory is parsed on every run.
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise PipelineError(
                "mapping key is not a scalar", line=key_node.start_mark.line + 1
            ) from None
        if key in seen:
            raise PipelineError(
                f"duplicate key '{key}' (first defined on line {seen[key]})",
                line=key_node.start_mark.line + 1,
            )
        seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node | None, prefix: tuple[Any, ...], out: LineMap) -> None:
    if node is None:
        return
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            out[(*prefix, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*prefix, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*prefix, index), out)


def load_yaml_with_lines(text: str, source: str | Path) -> tuple[Any, LineMap]:
    """Parse one YAML document, refusing duplicate keys, and map each key path to its line."""
    try:
        # One parse: compose the node tree (it carries the line marks), then construct from it.
        node = yaml.compose(text, Loader=_BASE_LOADER)
        loader = _StrictLoader("")
        try:
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except PipelineError as error:
        raise PipelineError(error.message, path=source, line=error.line) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = safe_library_message(error).removeprefix("YAML error: ").split(" at line ")[0]
        raise PipelineError(f"invalid YAML: {problem}", path=source, line=line) from None
    except yaml.YAMLError as error:
        raise PipelineError(f"invalid YAML: {safe_library_message(error).removeprefix('YAML error: ')}",
                            path=source) from None
    lines: LineMap = {}
    _line_map(node, (), lines)
    return data, lines


def line_of(lines: LineMap, *path: Any) -> int | None:
    """The line of the deepest known prefix of ``path`` (the closest thing to point at)."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
