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
        checks: list[Check] = []

        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            # Looked up at call time: a schema may refer to itself (recursion) before it is compiled.
            checks.append(lambda value, target=target: self.check(target)(value))
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            for name in names:
                _is_type(None, name)  # an unknown type name is refused now, not at the first document
            checks.append(lambda value: any(_is_type(value, name) for name in names))
        if "enum" in schema:
            allowed = list(schema["enum"])
            checks.append(lambda value: any(_json_equal(value, option) for option in allowed))
        if "pattern" in schema:
            pattern = re.compile(schema["pattern"])
            checks.append(lambda value: not isinstance(value, str) or pattern.search(value) is not None)
        if "required" in schema:
            required = tuple(schema["required"])
            checks.append(lambda value: not isinstance(value, dict) or all(key in value for key in required))
        if "items" in schema:
            item_schema = schema["items"]
            checks.append(lambda value: not isinstance(value, list)
                          or all(self.check(item_schema)(item) for item in value))
        if "oneOf" in schema:
            branches = list(schema["oneOf"])
            checks.append(lambda value: sum(1 for branch in branches if self.check(branch)(value)) == 1)
        if {"properties", "patternProperties", "additionalProperties"} & schema.keys():
            checks.append(self._object_check(schema))

        if len(checks) == 1:
            return checks[0]
        return lambda value: all(check(value) for check in checks)

    def _object_check(self, schema: dict[str, Any]) -> Check:
        properties: dict[str, Any] = schema.get("properties", {})
        patterns = [(re.compile(p), sub) for p, sub in schema.get("patternProperties", {}).items()]
        additional = schema.get("additionalProperties", True)

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for key, item in value.items():
                known = False
                if key in properties:
                    known = True
                    if not self.check(properties[key])(item):
                        return False
                for pattern, sub in patterns:
                    if isinstance(key, str) and pattern.search(key):
                        known = True
                        if not self.check(sub)(item):
                            return False
                if not known and additional is not True and not self.check(additional)(item):
                    return False
            return True

        return check
