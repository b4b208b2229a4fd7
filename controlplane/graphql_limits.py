"""DataHub's GraphQL query limits: depth 50 and complexity 2000 (GMS's application.yaml,
graphQL.query.depthLimit and complexityLimit, GRAPHQL_QUERY_DEPTH_LIMIT and
GRAPHQL_QUERY_COMPLEXITY_LIMIT), measured as graphql-java's MaxQueryDepthInstrumentation and
MaxQueryComplexityInstrumentation measure them, which GMS's GraphQLEngine installs; and the
parser's limit GMS gets from graphql-java's defaults (ParserOptions.MAX_QUERY_TOKENS, 15,000),
without which parsing a 1 MiB document of aliased fields alone took seconds of CPU.

Over the operation to be run, with fragments expanded: a field's depth is how many fields
enclose it, plus one; a field's complexity is 1 plus its sub-selection's (graphql-java's default
calculator), and the operation's is the sum over its fields. Checked after validation and before
anything runs, as graphql-java does (beginExecuteOperation): the depth first, then the
complexity, each refused with graphql-java's message and an ExecutionAborted error.

A fragment is measured once, however often it is spread: two spreads per fragment down a chain
of fragments doubles the complexity per link, and expanding it would itself be the exhaustion
the limits are there to stop.
"""
from __future__ import annotations

from typing import Any

from graphql import (DocumentNode, FieldNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLError,
                     InlineFragmentNode, SelectionSetNode, parse)
from graphql.utilities import get_operation_ast

DEPTH_LIMIT = 50
COMPLEXITY_LIMIT = 2000
MAX_TOKENS = 15_000
# graphql-java counts in a Java int; a chain of doubling fragments is reported as at least this.
COUNT_CAP = (1 << 31) - 1


class QueryLimitExceeded(GraphQLError):
    """graphql-java's AbortExecutionException: a whole-request error, with no data."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"classification": "ExecutionAborted"})


def parse_within_limits(_context: Any, data: dict[str, Any]) -> DocumentNode:
    """The request's document (ariadne's query_parser), refused past MAX_TOKENS as a syntax error."""
    return parse(data["query"], max_tokens=MAX_TOKENS)


def check(document: DocumentNode, operation_name: str | None) -> list[GraphQLError]:
    """The limit the operation of DOCUMENT named OPERATION_NAME exceeds, if any. An operation
    that cannot be picked (none by that name, or several and no name) is left to execution,
    which answers that error itself."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return []
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    measured: dict[str, tuple[int, int]] = {}
    for name in _fragments_in_dependency_order(operation.selection_set, fragments):
        measured[name] = _measure(fragments[name].selection_set, measured)
    depth, complexity = _measure(operation.selection_set, measured)
    if depth > DEPTH_LIMIT:
        return [QueryLimitExceeded(f"maximum query depth exceeded {depth} > {DEPTH_LIMIT}")]
    if complexity > COMPLEXITY_LIMIT:
        return [QueryLimitExceeded(f"maximum query complexity exceeded {complexity} > {COMPLEXITY_LIMIT}")]
    return []


def _measure(selection_set: SelectionSetNode, measured: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(depth, complexity) of SELECTION_SET; the fragments it spreads are already MEASURED.
    Recursion follows the document's own nesting, which graphql-core's parser bounds (200)."""
    depth = complexity = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            below = _measure(selection.selection_set, measured) if selection.selection_set else (0, 0)
            depth, complexity = max(depth, below[0] + 1), complexity + 1 + below[1]
        else:
            if isinstance(selection, InlineFragmentNode):
                inner = _measure(selection.selection_set, measured)
            else:
                inner = measured.get(selection.name.value, (0, 0))  # unknown or cyclic: validation refused it
            depth, complexity = max(depth, inner[0]), complexity + inner[1]
    return depth, min(complexity, COUNT_CAP)


def _fragments_in_dependency_order(root: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]) -> list[str]:
    """The fragments ROOT uses, each after every fragment it spreads; without recursion along
    the chain of spreads, which a 1 MiB document can make thousands of fragments long."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(name, False) for name in _spreads(root)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            order.append(name)
            continue
        if name in seen or name not in fragments:
            continue
        seen.add(name)
        stack.append((name, True))
        stack.extend((child, False) for child in _spreads(fragments[name].selection_set) if child not in seen)
    return order


def _spreads(selection_set: SelectionSetNode) -> list[str]:
    """The names of the fragments spread anywhere inside SELECTION_SET (not inside those fragments)."""
    names: list[str] = []
    pending = [selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                names.append(selection.name.value)
            elif selection.selection_set is not None:
                pending.append(selection.selection_set)
    return names
