"""DataHub's clients and CLI at the edges of the GMS endpoints: the paths they spell their own
way, and input no client of DataHub's sends but anyone may, which must get a 4xx, never a 500."""
from __future__ import annotations

import datahub.metadata.schema_classes as model
import requests

from .test_datahub_client import DATASET, datahub_cli


def test_datahubs_put_aspect_command_writes_through_its_own_spelling_of_the_ingest_path(cp, graph, tmp_path):
    # `datahub put aspect` posts to /aspects/?action=ingestProposal (a slash before the query),
    # which GMS's Rest.li takes as /aspects?action=ingestProposal.
    data = tmp_path / "status.json"
    data.write_text('{"removed": true}')
    put = datahub_cli(cp, "put", "aspect", "--urn", DATASET, "-a", "status", "-d", str(data))
    assert put.returncode == 0, put.stdout + put.stderr
    assert graph.get_aspect(DATASET, model.StatusClass) == model.StatusClass(removed=True)


def test_numbers_gms_could_not_take_are_a_400_not_a_500(cp, graph):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {cp.admin_token}"
    for body in ({"pageOffset": "ten"}, {"pageSize": [1]}, {"start": 1 << 70}, {"count": {"n": 1}}):
        listed = session.post(f"{cp.gms_url}/runs?action=list", json=body, timeout=10)
        assert listed.status_code == 400, (body, listed.status_code, listed.text[:200])
        assert listed.json()["status"] == 400
    described = session.post(f"{cp.gms_url}/runs?action=describe", json={"runId": "r", "start": "0"}, timeout=10)
    assert described.status_code == 400, described.text[:200]
    encoded = requests.utils.quote(DATASET, safe="")
    read = session.get(f"{cp.gms_url}/aspects/{encoded}?aspect=status&version={1 << 70}", timeout=10)
    assert read.status_code == 400, read.text[:200]
    assert session.post(f"{cp.gms_url}/runs?action=list", json={"pageOffset": 0, "pageSize": 10},
                        timeout=10).json() == {"value": []}
    assert graph.get_aspect(DATASET, model.StatusClass) is None, "and the service goes on"
