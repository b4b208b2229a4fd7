"""YAML from people who may not mean well: recipes reach the control plane from users and the
executor from the control plane, and both parse them.

`yaml.safe_load` constructs nothing dangerous, but it is not bounded: a "billion laughs"
document (aliases of aliases) is a few hundred bytes that expand to 10^9 nodes for whoever walks
it (our secret scan, datahub's own variable expansion), and a deeply nested flow sequence
(`[[[[...`) recurses in the composer until Python's recursion limit, which is a RecursionError,
not a YAMLError, and escapes the usual error handling. Limits here: the text size, the nesting
depth (checked on the parser's events, before anything recurses), and the node count and the
scalars' characters with every alias expanded (computed on the composed graph without expanding
it). The characters count because nodes alone let a few aliases of one long string through, and
whoever writes the document out again (the executor dumps the recipe for the CLI; PyYAML never
aliases a string) writes the string once per alias: 2,000 aliases of a 300 KB string, a 0.3 MB
recipe, dumped to 600 MB. Real recipes are far below each.
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 100_000
MAX_EXPANDED_CHARS = 8 * MAX_BYTES  # the scalars' characters once aliases are expanded


class YamlRefused(ValueError):
    """The text is not YAML, or is YAML beyond the limits; the message says which."""


# libyaml's parser and composer when PyYAML has them (four times faster on a recipe: the claim of
# every task parses one); the pure-Python ones otherwise. libyaml's parser keeps its nesting on
# the heap, but composing recurses in C, so the depth is checked on the events first.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
_OPENING = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _scan_events(text: str) -> tuple[int, bool]:
    """(nodes, whether any is an alias) from the parser's events; refuses a node nested deeper
    than MAX_DEPTH (the root is at depth 1) before anything recurses over it. Without an alias
    the document is a tree and its node count is its expanded size: the walk of the composed
    graph (a third of a recipe's parse) is needed only when there are aliases."""
    loader = _LOADER(text)
    try:
        open_collections = nodes = 0
        aliases = False
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, _NODE_EVENTS):
                if open_collections >= MAX_DEPTH:
                    raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels")
                nodes += 1
                aliases = aliases or isinstance(event, yaml.AliasEvent)
            if isinstance(event, _OPENING):
                open_collections += 1
            elif isinstance(event, _CLOSING):
                open_collections -= 1
        return nodes, aliases
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(nodes, scalar characters) the document has once every alias is expanded, each distinct
    node counted once.

    A node that holds an alias to itself or to a node around it (`a: &x [*x]`) has no finite
    expansion: PyYAML composes and constructs it as a structure that contains itself, and
    whoever walks it (this count, our secret scan, DataHub's variable expansion) never ends.
    It is refused as soon as the walk meets a node on its own path."""
    sizes: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()  # the nodes whose children are being counted: the current path
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:  # iterative post-order: the graph may be deep (up to MAX_DEPTH) and wide
        node, children_done = pending.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = [sizes[id(child)] for child in _children(node)]
            nodes = 1 + sum(n for n, _ in children)
            chars = len(node.value) if isinstance(node, yaml.ScalarNode) else sum(c for _, c in children)
            # Saturated: the counts can be astronomical.
            sizes[key] = (min(nodes, MAX_EXPANDED_NODES + 1), min(chars, MAX_EXPANDED_CHARS + 1))
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused("holds an alias to a node that contains it: a recursive alias has no end")
        on_path.add(key)
        pending.append((node, True))
        pending.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_bounded(text: str) -> Any:
    """Parse one YAML document within the limits, or raise YamlRefused naming the broken one."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise YamlRefused(f"larger than {MAX_BYTES} bytes")
    loader = None
    try:
        nodes, aliases = _scan_events(text)
        if not aliases and nodes > MAX_EXPANDED_NODES:
            raise YamlRefused(f"has more than {MAX_EXPANDED_NODES} nodes")
        loader = _LOADER(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if aliases:
            nodes, chars = _expanded_size(node)
            if nodes > MAX_EXPANDED_NODES:
                raise YamlRefused(f"expands to more than {MAX_EXPANDED_NODES} nodes through its aliases "
                                  "(a YAML bomb?)")
            if chars > MAX_EXPANDED_CHARS:
                raise YamlRefused(f"expands to more than {MAX_EXPANDED_CHARS} characters through its aliases "
                                  "(a YAML bomb?)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own limit (1000) met first
            raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels") from None
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlRefused(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except UnicodeError:  # a lone surrogate (from a store that does not check text): libyaml takes UTF-8 only
        raise YamlRefused("not valid text: it holds a lone UTF-16 surrogate") from None
    except ValueError as exc:  # a scalar the constructor cannot make: an integer over Python's 4300 digits
        raise YamlRefused(f"a value cannot be read: {str(exc)[:200]}") from None
    finally:
        if loader is not None:
            loader.dispose()
