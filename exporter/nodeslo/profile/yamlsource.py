"""YAML with provenance: every value remembers its file and line.

Profile errors must name the file, the key path and the line. PyYAML's composed node
tree has the marks; this module turns it into plain values wrapped in `Located`, and
deep-merges a profile over the one it `extends`, keeping each value's own origin.
"""

from __future__ import annotations

import os
import stat
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


# What a YAML source may be. A profile is a few KiB (the shipped one 6 KiB); these
# bounds leave ten times that for a site's file while keeping a hostile one (a 50 MB
# file, a "billion laughs" alias bomb, a 5,000-deep nesting, a FIFO) to a clear error
# within a second. The size bound also bounds how long LibYAML's parser holds the GIL
# (it never releases it): 64 KiB compose in ~0.2 s on a loaded 2-core machine, while
# the watchdog pings and scrapes wait.
MAX_BYTES = 64 * 1024
MAX_DEPTH = 64
# Alias uses, counted as they are expanded (an alias inside an expanded alias counts
# again), and values in the expanded tree: together they bound the expansion.
MAX_ALIASES = 100
MAX_NODES = 200_000
# `extends:` chains longer than this are refused (a cycle is named as one).
MAX_EXTENDS = 16

# LibYAML's parser when PyYAML was built with it (3-5x faster, and its own nesting
# limit); the same safe constructor either way.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Converter:
    """Composed YAML nodes -> a Located tree, within the bounds; one per load, so the
    loader's constructor (which keeps every object it built) dies with it."""

    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.aliases = MAX_ALIASES
        self.nodes = MAX_NODES
        self.seen: set[int] = set()  # ids of collection nodes expanded once already
        self.open: set[int] = set()  # ids of the collections being converted now

    def fail(self, node: yaml.Node, key: str, message: str) -> SourceError:
        return SourceError(self.file, node.start_mark.line + 1, key, message)

    def convert(self, node: yaml.Node, key: str, depth: int) -> Located:
        self.nodes -= 1
        if self.nodes < 0:
            raise self.fail(node, key, f"more than {MAX_NODES} values (alias expansion?)")
        if depth > MAX_DEPTH:
            raise self.fail(node, key, f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, yaml.CollectionNode):
            return Located(self.scalar(node, key), self.file, node.start_mark.line + 1)
        # A collection met twice is an alias; met inside itself, a cycle (`a: &a [*a]`).
        if id(node) in self.open:
            raise self.fail(node, key, "an alias refers to the collection it is in")
        if id(node) in self.seen:
            self.aliases -= 1
            if self.aliases < 0:
                raise self.fail(node, key, f"more than {MAX_ALIASES} aliases expanded")
        self.seen.add(id(node))
        self.open.add(id(node))
        try:
            return self.collection(node, key, depth)
        finally:
            self.open.discard(id(node))

    def collection(self, node: yaml.CollectionNode, key: str, depth: int) -> Located:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.SequenceNode):
            items = [
                self.convert(item, f"{key}[{i}]", depth + 1) for i, item in enumerate(node.value)
            ]
            return Located(items, self.file, line)
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, key, "keys must be scalars")
            name = str(self.scalar(key_node, key))
            child = f"{key}.{name}" if key else name
            if name in out:
                # PyYAML silently keeps the last duplicate; a profile must not.
                raise self.fail(key_node, child, "duplicate key")
            out[name] = self.convert(value_node, child, depth + 1)
        return Located(out, self.file, line)

    def scalar(self, node: yaml.Node, key: str) -> Any:
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, ArithmeticError) as exc:
            # A 5,000-digit integer, a timestamp out of range, a bad !!binary...
            raise self.fail(node, key, f"cannot read this value: {exc}") from None


def read_bounded(path: str, max_bytes: int = MAX_BYTES) -> bytes:
    """A regular file's bytes, at most `max_bytes`; SourceError for anything else.

    Opened non-blocking so a FIFO (or a device) in the file's place is refused, not
    waited on for ever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise SourceError(path, None, "", exc.strerror or str(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(path, None, "", "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(path, None, "", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise SourceError(path, None, "", f"larger than {max_bytes} bytes")
    return data


def load(path: str) -> Located:
    """Parse one YAML file into a Located tree (an empty file is an empty mapping)."""
    data = read_bounded(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(path, line, "", f"not UTF-8 (byte {exc.start})") from None
    return loads(text, path)


def loads(text: str, file: str = "<string>") -> Located:
    """Parse YAML text within the bounds above; every failure is a SourceError.

    Each call has its own loader (parser and constructor): nothing read is kept once
    the tree is returned.
    """
    if len(text) > MAX_BYTES:
        raise SourceError(file, None, "", f"larger than {MAX_BYTES} bytes")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located({}, file, 1)
        return _Converter(file, loader).convert(node, "", 0)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SourceError(file, line, "", f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, None, "", f"invalid YAML: {exc}") from None
    except (RecursionError, MemoryError) as exc:
        # The pure-Python parser (without LibYAML) recurses once per nesting level.
        raise SourceError(file, None, "", f"cannot parse: {type(exc).__name__}") from None
    finally:
        loader.dispose()


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
    """Follow `extends:` chains (a shipped profile name or a relative path).

    Files are compared by their real path, so `./a.yaml`, `sub/../a.yaml` and a
    symlink to it are one file and a cycle through any of them is named as one.
    """
    if not isinstance(tree.value, dict) or "extends" not in tree.value:
        return tree
    ref = tree.value["extends"]
    if not isinstance(ref.value, str):
        raise SourceError(ref.file, ref.line, "extends", "must be a profile name or path")
    parent_path = resolve(ref.value, os.path.dirname(ref.file))
    if parent_path is None:
        raise SourceError(ref.file, ref.line, "extends", f"no profile {ref.value!r}")
    chain = (*seen, os.path.realpath(ref.file))
    if os.path.realpath(parent_path) in chain:
        raise SourceError(ref.file, ref.line, "extends", f"cycle through {parent_path}")
    if len(chain) >= MAX_EXTENDS:
        raise SourceError(ref.file, ref.line, "extends", f"more than {MAX_EXTENDS} levels")
    parent = resolve_extends(load(parent_path), resolve, chain)
    child = Located({k: v for k, v in tree.value.items() if k != "extends"}, tree.file, tree.line)
    return merge(parent, child)
