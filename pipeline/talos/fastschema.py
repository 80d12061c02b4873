"""A yes/no JSON-schema check for Talos's schemas, fast enough to run on every rendered node of a fleet.

``jsonschema`` stays the reference: it is what words every error (:func:`pipeline.talos.schema.validate`).
But it costs a few milliseconds per machine config, most of it in building one validator object per
schema node it descends into, which is most of a cold promotion's validation time on 500 nodes.
The answer "valid" is all a healthy fleet needs, so each schema is compiled here, once and lazily (only
the parts a document reaches), into plain closures, and ``jsonschema`` runs only on a document this check
refuses, to say why. ``tests/talos/test_fastschema.py`` proves both give the same verdict on real and
generated documents.

Only the keywords Talos's schemas use are compiled (Draft 2020-12 meaning): ``$ref`` (local), ``type``,
``enum``, ``properties``, ``patternProperties``, ``additionalProperties``, ``required``, ``items``,
``pattern``, ``oneOf``; ``format`` and the annotations are not assertions. A schema using any other
keyword raises :class:`Unsupported`, and the caller validates with ``jsonschema`` alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "$defs", "title", "description", "markdownDescription", "default",
    "examples", "format", "deprecated", "readOnly", "writeOnly", "x-kubernetes-preserve-unknown-fields",
})
_COMPILED = frozenset({
    "$ref", "type", "enum", "properties", "patternProperties", "additionalProperties", "required", "items",
    "pattern", "oneOf",
})


class Unsupported(Exception):
    """The schema uses a keyword this module does not compile."""


def _is_type(value: Any, name: str) -> bool:
    # JSON types of parsed YAML; a bool is never a number, an integral float is an integer (as jsonschema).
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float)
    raise Unsupported(f"type {name!r}")


def _json_equal(left: Any, right: Any) -> bool:
    # JSON equality: true is not 1, 1 is 1.0, containers compared item by item.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


class Compiler:
    """Compiles the schemas of one root document (``$defs`` and local ``$ref``) into checks, lazily."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self._by_id: dict[int, Check] = {}

    def check(self, schema: Any) -> Check:
        """The check for ``schema`` (a node of the root document); compiled on first use, then reused."""
        compiled = self._by_id.get(id(schema))
        if compiled is None:
            compiled = self._compile(schema)
            self._by_id[id(schema)] = compiled
        return compiled

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise Unsupported(f"$ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise Unsupported(f"$ref {ref!r} does not resolve")
            node = node[part]
        return node

    def _lazy(self, schema: Any) -> Check:
        """The check of ``schema``, compiled at its first call (a schema may refer to itself, recursion)."""
        compiled: Check | None = None

        def check(value: Any) -> bool:
            nonlocal compiled
            if compiled is None:
                compiled = self.check(schema)  # the same object whichever thread compiles it first
            return compiled(value)

        return check

    def _compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return lambda value: True
        if schema is False:
            return lambda value: False
        if not isinstance(schema, dict):
            raise Unsupported("a schema that is not an object")
        unknown = set(schema) - _COMPILED - _ANNOTATIONS
        if unknown:
            raise Unsupported(f"keywords {sorted(unknown)}")
        # The checks run in this order and stop at the first "no" (the order decides which lazily
        # compiled part is reached, so which Unsupported is raised): one closure per keyword, each
        # as direct as its keyword allows, since a fleet runs them on every value of every node.
        checks: list[Check] = []

        if "$ref" in schema:
            checks.append(self._lazy(self._resolve(schema["$ref"])))
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            for name in names:
                _is_type(None, name)  # an unknown type name is refused now, not at the first document
            checks.append(_type_check(names))
        if "enum" in schema:
            allowed = list(schema["enum"])
            checks.append(lambda value: any(_json_equal(value, option) for option in allowed))
        if "pattern" in schema:
            search = re.compile(schema["pattern"]).search
            checks.append(lambda value: not isinstance(value, str) or search(value) is not None)
        if "required" in schema:
            required = tuple(schema["required"])
            checks.append(lambda value: not isinstance(value, dict) or all(key in value for key in required))
        if "items" in schema:
            item_check = self._lazy(schema["items"])

            def items(value: Any) -> bool:
                if isinstance(value, list):
                    for item in value:
                        if not item_check(item):
                            return False
                return True

            checks.append(items)
        if "oneOf" in schema:
            branches = [self._lazy(branch) for branch in schema["oneOf"]]
            checks.append(lambda value: sum(1 for branch in branches if branch(value)) == 1)
        if {"properties", "patternProperties", "additionalProperties"} & schema.keys():
            checks.append(self._object_check(schema))

        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda value: first(value) and second(value)
        return lambda value: all(check(value) for check in checks)

    def _object_check(self, schema: dict[str, Any]) -> Check:
        properties: dict[str, Any] = schema.get("properties", {})
        patterns = [(re.compile(p).search, self._lazy(sub)) for p, sub in schema.get("patternProperties", {}).items()]
        additional = schema.get("additionalProperties", True)
        extra = None if additional is True else self._lazy(additional)
        # Each property's check, found once per key (the same keys recur in every node of a fleet).
        known_checks = {key: self._lazy(sub) for key, sub in properties.items()}

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for key, item in value.items():
                known = False
                if key in properties:
                    known = True
                    if not known_checks[key](item):
                        return False
                if patterns:
                    for search, sub in patterns:
                        if isinstance(key, str) and search(key):
                            known = True
                            if not sub(item):
                                return False
                if not known and extra is not None and not extra(item):
                    return False
            return True

        return check


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


# _is_type's answers as one-argument checks (bool is an int in Python, never a JSON number).
_TYPE_CHECKS: dict[str, Check] = {
    "string": lambda value: isinstance(value, str),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _type_check(names: list[str]) -> Check:
    """The ``type`` keyword: any of ``names`` (already known to be JSON type names)."""
    checks = [_TYPE_CHECKS[name] for name in names]
    if len(checks) == 1:
        return checks[0]
    return lambda value: any(check(value) for check in checks)
