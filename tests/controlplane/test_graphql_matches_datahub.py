"""Our GraphQL schema is DataHub's, a subset of it: every type, field, argument, input field and
enum value we declare exists in DataHub's published schema with the same type; input types take
exactly DataHub's fields (a client builds its inputs from DataHub's schema, and one field we did
not declare would fail its request). The reference is DataHub's published SDL, transcribed with
the commits it came from (see its README); set DHX_DATAHUB_GRAPHQL_REFERENCE to its path.

Independently of the reference, DataHub's own CLI sends its documents to our server in
test_datahub_client.py (deploy, list-source-runs), which fail on any field we lack."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from graphql import (GraphQLEnumType, GraphQLInputObjectType, GraphQLInterfaceType, GraphQLObjectType, build_schema)

from controlplane.graphql_api import SCHEMA_PATH

DEFAULT_REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "datahub-graphql" / "datahub-reference.graphql"


def reference_path() -> Path:
    path = Path(os.environ.get("DHX_DATAHUB_GRAPHQL_REFERENCE", DEFAULT_REFERENCE))
    if not path.exists():
        pytest.skip(f"DataHub's published GraphQL schema is not at {path} (set DHX_DATAHUB_GRAPHQL_REFERENCE)")
    return path


def ours():
    return build_schema(SCHEMA_PATH.read_text())


def theirs():
    return build_schema(reference_path().read_text())


def named_types(schema):
    return {name: kind for name, kind in schema.type_map.items() if not name.startswith("__")}


def test_every_type_we_declare_is_datahubs_with_the_same_fields_and_arguments():
    ours_schema, their_schema = ours(), theirs()
    problems = []
    for name, kind in named_types(ours_schema).items():
        other = their_schema.type_map.get(name)
        if other is None:
            problems.append(f"{name}: not a DataHub type")
            continue
        if type(kind) is not type(other):
            problems.append(f"{name}: a {type(kind).__name__} here, a {type(other).__name__} in DataHub")
            continue
        if isinstance(kind, GraphQLEnumType):
            extra = set(kind.values) - set(other.values)
            if extra:
                problems.append(f"{name}: values {sorted(extra)} are not DataHub's")
        if isinstance(kind, (GraphQLObjectType, GraphQLInterfaceType)):
            for field_name, field in kind.fields.items():
                their_field = other.fields.get(field_name)
                if their_field is None:
                    problems.append(f"{name}.{field_name}: not a DataHub field")
                    continue
                if str(field.type) != str(their_field.type):
                    problems.append(f"{name}.{field_name}: {field.type} here, {their_field.type} in DataHub")
                if {a: str(t.type) for a, t in field.args.items()} != {a: str(t.type) for a, t in their_field.args.items()}:
                    problems.append(f"{name}.{field_name}: arguments differ from DataHub's")
        if isinstance(kind, GraphQLInputObjectType):
            mine = {f: str(t.type) for f, t in kind.fields.items()}
            theirs_fields = {f: str(t.type) for f, t in other.fields.items()}
            if mine != theirs_fields:
                problems.append(f"input {name}: {mine} here, {theirs_fields} in DataHub")
    assert not problems, "\n".join(problems)


def test_the_operations_of_the_issue_are_all_served():
    schema = ours()
    queries = set(schema.query_type.fields)
    mutations = set(schema.mutation_type.fields)
    assert {"listIngestionSources", "ingestionSource", "listExecutionRequests", "executionRequest",
            "listRemoteExecutorPools", "defaultRemoteExecutorPool", "getRemoteExecutor"} <= queries
    assert {"createIngestionSource", "updateIngestionSource", "deleteIngestionSource", "createIngestionExecutionRequest",
            "cancelIngestionExecutionRequest", "createTestConnectionRequest", "createRemoteExecutorPool",
            "updateRemoteExecutorPool", "updateDefaultRemoteExecutorPool"} <= mutations
    assert "executions" in schema.type_map["IngestionSource"].fields
