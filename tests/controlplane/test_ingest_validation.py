"""Ingest validates each aspect text once: what it remembers never changes what is accepted."""
from __future__ import annotations

import json

import pytest

from controlplane.ingest import Ingest, ValidTexts
from controlplane.metadata.registry import MetadataInvalid, Registry
from controlplane.store import Store
from controlplane.tokens import ADMIN, Identity

ADMIN_IDENTITY = Identity("tok_admin", ADMIN, None, None)


def proposal(urn: str, aspect: str, value: object) -> dict:
    return {"entityType": "dataset", "entityUrn": urn, "changeType": "UPSERT", "aspectName": aspect,
            "aspect": {"value": json.dumps(value), "contentType": "application/json"}}


@pytest.fixture
def ingest(tmp_path):
    store = Store(str(tmp_path / "store.sqlite3"))
    yield Ingest(Registry.load(), {}, store, after_commit=lambda: None)
    store.close()


def test_a_remembered_valid_text_is_stored_for_every_entity_and_a_refused_one_is_refused_every_time(ingest):
    urns = [f"urn:li:dataset:(urn:li:dataPlatform:hive,db.t{i},PROD)" for i in range(3)]
    ingest.ingest([proposal(urn, "subTypes", {"typeNames": ["Table"]}) for urn in urns], ADMIN_IDENTITY)
    stored = ingest.store.query("SELECT urn, metadata FROM aspects WHERE aspect='subTypes' AND version=0 ORDER BY urn")
    assert [(r["urn"], json.loads(r["metadata"])) for r in stored] == [(u, {"typeNames": ["Table"]}) for u in urns]

    for _ in range(2):
        with pytest.raises(MetadataInvalid, match="/typeNames/0 :: 5 is not a string"):
            ingest.ingest([proposal(urns[0], "subTypes", {"typeNames": [5]})], ADMIN_IDENTITY)
    assert ("subTypes", json.dumps({"typeNames": [5]})) not in ingest._valid


def test_valid_texts_keep_the_newest_few_and_no_long_ones():
    texts = ValidTexts(size=3, max_chars=10)
    for i in range(5):
        texts.add(("status", f'{{"n": {i}}}'))
    texts.add(("status", "x" * 11))
    assert [("status", f'{{"n": {i}}}') in texts for i in range(5)] == [False, False, True, True, True]
    assert ("status", "x" * 11) not in texts
