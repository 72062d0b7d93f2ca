"""YAML with provenance: every value remembers its file and line.

Profile errors must name the file, the key path and the line. PyYAML's composed node
tree has the marks; this module turns it into plain values wrapped in `Located`, and
deep-merges a profile over the one it `extends`, keeping each value's own origin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml


class SourceError(Exception):
    """A problem in a YAML source, located as precisely as known."""

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass
class Located:
    """A value from a YAML file: scalars as Python values, mappings as dict[str, Located]."""

    value: Any
    file: str
    line: int

    def plain(self) -> Any:
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


_constructor = yaml.constructor.SafeConstructor()


def _convert(node: yaml.Node, file: str, key: str) -> Located:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError(file, key_node.start_mark.line + 1, key, "keys must be scalars")
            name = str(_constructor.construct_object(key_node))
            child = f"{key}.{name}" if key else name
            if name in out:
                # PyYAML silently keeps the last duplicate; a profile must not.
                raise SourceError(file, key_node.start_mark.line + 1, child, "duplicate key")
            out[name] = _convert(value_node, file, child)
        return Located(out, file, line)
    if isinstance(node, yaml.SequenceNode):
        items = [_convert(item, file, f"{key}[{i}]") for i, item in enumerate(node.value)]
        return Located(items, file, line)
    return Located(_constructor.construct_object(node), file, line)


def load(path: str) -> Located:
    """Parse one YAML file into a Located tree (an empty file is an empty mapping)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SourceError(path, None, "", exc.strerror or str(exc)) from None
    return loads(text, path)


def loads(text: str, file: str = "<string>") -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SourceError(file, line, "", f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, None, "", f"invalid YAML: {exc}") from None
    if node is None:
        return Located({}, file, 1)
    return _convert(node, file, "")


def merge(base: Located, override: Located) -> Located:
    """Deep-merge mappings; anything else in `override` replaces. A null deletes a key."""
    if not (isinstance(base.value, dict) and isinstance(override.value, dict)):
        return override
    merged = dict(base.value)
    for key, value in override.value.items():
        if value.value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return Located(merged, override.file, override.line)


def resolve_extends(tree: Located, resolve: Any, seen: tuple[str, ...] = ()) -> Located:
    """Follow `extends:` chains (a shipped profile name or a relative path)."""
    if not isinstance(tree.value, dict) or "extends" not in tree.value:
        return tree
    ref = tree.value["extends"]
    if not isinstance(ref.value, str):
        raise SourceError(ref.file, ref.line, "extends", "must be a profile name or path")
    parent_path = resolve(ref.value, os.path.dirname(ref.file))
    if parent_path is None:
        raise SourceError(ref.file, ref.line, "extends", f"no profile {ref.value!r}")
    if parent_path in seen or parent_path == ref.file:
        raise SourceError(ref.file, ref.line, "extends", f"cycle through {parent_path}")
    parent = resolve_extends(load(parent_path), resolve, (*seen, ref.file))
    child = Located({k: v for k, v in tree.value.items() if k != "extends"}, tree.file, tree.line)
    return merge(parent, child)
