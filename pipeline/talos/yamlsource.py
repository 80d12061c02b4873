"""Reading YAML intent with the line numbers a user needs in an error message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError

# Limits on what one YAML document may expand to. Aliases are shared when composed, so a
# "billion laughs" file of a few hundred bytes composes instantly and blows up later, when its
# documents are copied, merged or serialised (gigabytes, minutes): the node graph is sized first.
MAX_EXPANDED_NODES = 1_000_000

# Types that have no JSON form: a set's order follows PYTHONHASHSEED (so the intent digest did),
# an omap becomes a list of pairs and binary becomes bytes, none of which Talos's decoder would see
# alike. Refused, with the line, rather than converted behind the user's back.
_REFUSED_TAGS = {f"tag:yaml.org,2002:{name}": f"!!{name}" for name in ("set", "omap", "pairs", "binary", "timestamp")}


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def may_need_check(text: str) -> bool:
    """Whether YAML ``text`` can hold an alias (`*name`) or an explicit tag (`!`): without either
    there is nothing for :func:`check_node_tree` to find, and the walk is skipped."""
    return "*" in text or "!" in text


def check_node_tree(root: yaml.Node | None, source: str | Path, error: type[PipelineError] = PipelineError,
                    limit: int = MAX_EXPANDED_NODES) -> None:
    """Refuse, before anything is constructed: alias expansion past ``limit`` nodes, recursive aliases,
    and tags with no JSON form (one line naming ``source`` and the line).

    Linear in the distinct nodes (sizes are memoised per node, and an alias is the same node), and
    iterative, so neither a bomb nor deep nesting costs more than the text already did.
    """
    if root is None:
        return
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            active.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise error(f"YAML aliases expand to more than {limit} nodes (an alias bomb?): refused",
                            path=str(source), line=node.start_mark.line + 1)
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise error("recursive YAML alias (a node that contains itself): refused", path=str(source),
                        line=node.start_mark.line + 1)
        refused = _REFUSED_TAGS.get(node.tag)
        if refused is not None:
            raise error(f"{refused} has no JSON form (Talos would not read it alike): use a plain list, "
                        "mapping or string", path=str(source), line=node.start_mark.line + 1)
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)

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
        if may_need_check(text):
            check_node_tree(node, source)
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
        raise PipelineError(f"invalid YAML: {error.problem or error}", path=source, line=line) from None
    except yaml.YAMLError as error:
        raise PipelineError(f"invalid YAML: {error}", path=source) from None
    lines: LineMap = {}
    _line_map(node, (), lines)
    return data, lines


def line_of(lines: LineMap, *path: Any) -> int | None:
    """The line of the deepest known prefix of ``path`` (the closest thing to point at)."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
