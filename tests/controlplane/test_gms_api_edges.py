"""DataHub's clients and CLI at the edges of the GMS endpoints: the paths they spell their own way."""
from __future__ import annotations

import datahub.metadata.schema_classes as model

from .test_datahub_client import DATASET, datahub_cli


def test_datahubs_put_aspect_command_writes_through_its_own_spelling_of_the_ingest_path(cp, graph, tmp_path):
    # `datahub put aspect` posts to /aspects/?action=ingestProposal (a slash before the query),
    # which GMS's Rest.li takes as /aspects?action=ingestProposal.
    data = tmp_path / "status.json"
    data.write_text('{"removed": true}')
    put = datahub_cli(cp, "put", "aspect", "--urn", DATASET, "-a", "status", "-d", str(data))
    assert put.returncode == 0, put.stdout + put.stderr
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=True)
