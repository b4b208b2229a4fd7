"""`sources set-pool` against someone else's edit of the same source: it reads the whole source
info and writes it back with the new pool, so an edit that lands between its read and its write
was undone without a word. It now writes on condition that the source is still the version it
read (DataHub's If-Version-Match), and reads again when it is not."""
from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from controlplane import admin_cli
from controlplane import entities as E
from controlplane.metadata import aspect_store

RECIPE = json.dumps({"source": {"type": "datahub-mock-data", "config": {}}})
UPDATE = "mutation($u: String!, $i: UpdateIngestionSourceInput!) { updateIngestionSource(urn: $u, input: $i) }"


@pytest.fixture
def nightly(cp):
    """A scheduled source on the default pool, and a pool to move it to."""
    cp.create_pool("first", default=True)
    cp.create_pool("remote")
    cp.graphql("mutation($i: UpdateIngestionSourceInput!) { createIngestionSource(input: $i) }",
               i={"name": "nightly", "type": "datahub-mock-data",
                  "schedule": {"interval": "0 3 * * *", "timezone": "UTC"},
                  "config": {"recipe": RECIPE, "executorId": "default"}})
    [source] = cp.graphql("{ listIngestionSources(input: {start: 0, count: 10}) { ingestionSources { urn } } }")[
        "listIngestionSources"]["ingestionSources"]
    return source["urn"]


def edit_schedule(cp, urn: str, interval: str) -> None:
    """Someone else's edit, as the UI makes it: the whole source, its pool as GraphQL shows it."""
    cp.graphql(UPDATE, u=urn, i={"name": "nightly", "type": "datahub-mock-data",
                                 "schedule": {"interval": interval, "timezone": "Europe/Paris"},
                                 "config": {"recipe": RECIPE, "executorId": "default"}})


def stored(cp, urn: str) -> dict:
    """The source's info as DataHub's Rest.li API answers it, with its systemMetadata."""
    entity = requests.get(f"{cp.gms_url}/entitiesV2/{quote(urn, safe='')}?aspects=List({E.SOURCE_INFO})",
                          headers={"Authorization": f"Bearer {cp.admin_token}"}, timeout=10)
    return entity.json()["aspects"][E.SOURCE_INFO]


def stored_info(cp, urn: str) -> dict:
    return stored(cp, urn)["value"]


def read(cp, urn: str) -> tuple[dict, str]:
    """The source's info and its version."""
    aspect = stored(cp, urn)
    return aspect["value"], aspect["systemMetadata"]["version"]


def edited_after_each_read(monkeypatch, cp, urn: str, edits: Iterator[str]) -> list[str]:
    """Make each of set-pool's reads of the source's info be followed, before set-pool writes, by
    the next of EDITS (a schedule), made through the control plane's API, until they run out. The
    schedules set, in order."""
    made: list[str] = []
    restli = admin_cli.AdminClient.restli

    def read_then_edit(client, method: str, path: str, **kwargs):
        answer = restli(client, method, path, **kwargs)
        if method == "GET" and E.SOURCE_INFO in path:
            interval = next(edits, None)
            if interval is not None:
                edit_schedule(cp, urn, interval)
                made.append(interval)
        return answer

    monkeypatch.setattr(admin_cli.AdminClient, "restli", read_then_edit)
    return made


def set_pool(monkeypatch, capsys, cp, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("DATAHUB_CONTROLPLANE_URL", cp.base_url)
    monkeypatch.setenv("DATAHUB_ADMIN_TOKEN", cp.admin_token)
    code = admin_cli.main(["--json", "sources", "set-pool", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_set_pool_keeps_a_schedule_edit_made_between_its_read_and_its_write(cp, nightly, monkeypatch, capsys):
    edited_after_each_read(monkeypatch, cp, nightly, iter(["30 4 * * *"]))

    code, out, err = set_pool(monkeypatch, capsys, cp, "nightly", "remote")

    assert code == 0, err
    info = stored_info(cp, nightly)
    assert info["config"]["executorId"] == "remote", "the pool was set"
    assert info["schedule"] == {"interval": "30 4 * * *", "timezone": "Europe/Paris"}, "the other edit was kept"
    assert json.loads(out)["schedule"] == {"interval": "30 4 * * *", "timezone": "Europe/Paris"}


def test_set_pool_against_a_source_that_changes_at_every_read_fails_and_overwrites_nothing(cp, nightly, monkeypatch,
                                                                                          capsys):
    made = edited_after_each_read(monkeypatch, cp, nightly, (f"{minute} 4 * * *" for minute in range(60)))

    code, out, err = set_pool(monkeypatch, capsys, cp, "nightly", "remote")

    assert code == 1 and out == "", "a refusal, not a silent overwrite"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"changed each of the {len(made)} times" in err and "its pool is unchanged" in err, err
    assert 2 <= len(made) <= 10, "it tried again, a few times, then gave up"
    info = stored_info(cp, nightly)
    assert info["config"]["executorId"] == "default", "no write went through"
    assert info["schedule"] == {"interval": made[-1], "timezone": "Europe/Paris"}, "the last edit stands"


def test_an_mcp_whose_if_version_match_is_stale_is_refused_422_and_stores_nothing(cp, nightly):
    """DataHub's conditional write: the version read is systemMetadata.version; a write naming an
    older one is refused with GMS's words, one naming the current one goes through."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {cp.admin_token}"

    def write(value: dict, version: str) -> requests.Response:
        proposal = {"entityType": E.SOURCE, "entityUrn": nightly, "changeType": "UPSERT",
                    "aspectName": E.SOURCE_INFO, "headers": {"If-Version-Match": version},
                    "aspect": {"value": json.dumps(value), "contentType": "application/json"}}
        return session.post(f"{cp.gms_url}/aspects?action=ingestProposal", json={"proposal": proposal}, timeout=10)

    info, version = read(cp, nightly)
    assert version == "1", "a first value"
    same = write(info, version)
    assert same.status_code == 200, same.text
    assert read(cp, nightly)[1] == "1", "the same value again keeps its version"
    edit_schedule(cp, nightly, "0 5 * * *")
    assert read(cp, nightly)[1] == "2", "a change is the next version"

    stale = write({**info, "config": {**info["config"], "executorId": "remote"}}, version)
    assert stale.status_code == 422
    assert "Expected version 1, actual version 2" in stale.json()["message"]
    assert stored_info(cp, nightly)["config"]["executorId"] == "default"
    assert stored_info(cp, nightly)["schedule"]["interval"] == "0 5 * * *"

    edited, current = read(cp, nightly)
    moved = write({**edited, "config": {**edited["config"], "executorId": "remote"}}, current)
    assert moved.status_code == 200, moved.text
    assert stored_info(cp, nightly)["config"]["executorId"] == "remote"
    assert stored_info(cp, nightly)["schedule"]["interval"] == "0 5 * * *"
    assert read(cp, nightly)[1] == "3"


def test_set_pool_moves_a_source_stored_before_versions_were_recorded(cp, nightly, monkeypatch, capsys):
    """A database from before: the source's systemMetadata has no version, which GMS counts as 1."""
    with cp.cp.store.transaction() as tx:
        info = aspect_store.get(tx, nightly, E.SOURCE_INFO).value
        aspect_store.put(tx, urn=nightly, entity_type=E.SOURCE, aspect=E.SOURCE_INFO,
                         value={**info, "schedule": {"interval": "0 6 * * *", "timezone": "UTC"}})
        # As a database of before stored it: every write stamps its version now.
        tx.execute("UPDATE aspects SET system_metadata=NULL WHERE urn=? AND aspect=? AND version=0",
                   (nightly, E.SOURCE_INFO))
    assert "systemMetadata" not in stored(cp, nightly)

    code, _, err = set_pool(monkeypatch, capsys, cp, "nightly", "remote")

    assert code == 0, err
    info, version = read(cp, nightly)
    assert info["config"]["executorId"] == "remote" and info["schedule"]["interval"] == "0 6 * * *"
    assert version == "3", "its third value, and numbered from then on"
