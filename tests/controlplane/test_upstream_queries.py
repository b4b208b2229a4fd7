"""Every GraphQL document upstream mode sends to a DataHub is valid against DataHub's published
schema (the transcribed reference, see test_graphql_matches_datahub.py) and against ours, which
is a checked subset of it: a real DataHub answers them as they are."""
from __future__ import annotations

import pytest
from graphql import parse, validate

from controlplane.upstream import queries

from .test_graphql_matches_datahub import ours, theirs


@pytest.mark.parametrize("name", sorted(queries.ALL))
def test_each_document_is_valid_against_datahubs_published_schema(name):
    assert validate(theirs(), parse(queries.ALL[name])) == []


@pytest.mark.parametrize("name", sorted(queries.ALL))
def test_each_document_is_valid_against_the_schema_we_serve(name):
    assert validate(ours(), parse(queries.ALL[name])) == []
