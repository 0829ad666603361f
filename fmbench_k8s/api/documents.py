"""Reading Benchmark files: YAML as a spec may be written, refused in one line when it is hostile.

A spec is a few kilobytes of YAML. Before a document reaches the models, a file is refused when it
is larger than ``MAX_BYTES`` (a 50 MB file took 55 s to parse), not UTF-8, nested deeper than
``MAX_DEPTH`` (PyYAML's composer recurses: 100k levels were a RecursionError), expands through
aliases to more than ``MAX_NODES`` nodes (an alias bomb drove ``run`` past 1.9 GB), or repeats a
key in one mapping (YAML takes the last one silently; the API server refuses the object).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # the API server stores at most ~1.5 MiB per object; a spec is a few KiB
MAX_DEPTH = 64  # a Benchmark is 6 levels deep; metadata is free-form but shallow
MAX_NODES = 100_000  # after alias expansion: 32 variants with 64-entry lists are ~20k nodes


class DocumentError(ValueError):
    """A file that is not a spec file; the message is one line naming what to fix."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that bounds depth and expanded size while composing, and refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for once aliases are expanded

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise DocumentError(
                f"yaml: {_where(mark)}: nested more than {MAX_DEPTH} levels deep; a Benchmark is a few levels deep"
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        self._sizes[id(node)] = size = self._size(node)
        if size > MAX_NODES:
            raise DocumentError(
                f"yaml: {_where(node.start_mark)}: expands to more than {MAX_NODES} values (through anchors and "
                "aliases); write the spec out, or use fewer aliases"
            )
        return node

    def _size(self, node: Node) -> int:
        if isinstance(node, ScalarNode):
            return 1
        if isinstance(node, SequenceNode):
            return 1 + sum(self._sizes.get(id(child), 1) for child in node.value)
        if isinstance(node, MappingNode):
            return 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        return 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`; keys given next to it override it, as YAML says
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool | None):
                raise DocumentError(f"yaml: {_where(key_node.start_mark)}: a mapping key must be a plain value")
            if key in seen:
                raise DocumentError(
                    f"yaml: {_where(key_node.start_mark)}: key {key!r} appears twice in one mapping; keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_documents(data: bytes, source: str) -> list[Any]:
    """The non-empty YAML documents of ``data``; DocumentError (one line) when it is not a spec file."""
    if len(data) > MAX_BYTES:
        raise DocumentError(f"file: larger than the {MAX_BYTES:,} bytes a spec file may have; is {source} a spec file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DocumentError(
            f"file: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None
    loader = _BoundedLoader(text)
    try:
        docs = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            doc = loader.get_data()
            if doc is not None:
                docs.append(doc)
        return docs
    except yaml.MarkedYAMLError as err:
        problem = " ".join(str(err.problem or err.context or "not valid YAML").split())
        raise DocumentError(f"yaml: {_where(err.problem_mark)}: {problem}") from None
    except yaml.YAMLError as err:
        raise DocumentError(f"yaml: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()
