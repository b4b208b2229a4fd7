"""What the claim of an upstream run adds to the claim answer (docs/protocol.md, "claim"):

- `sink`: the upstream GMS and the token its operator gave for ingesting (the task's default
  `datahub-rest` sink writes there, not here); the token file is read at every claim, so a
  rotated token is used from the next run on;
- `secrets`: the values DataHub's secret store has for the names the recipe references, as the
  executor finds them (vocabulary.secret_references: ${NAME}, a $NAME beside one, the names of
  ${NAME:-default} forms and those inside their defaults, whose stored values win), fetched
  now with getSecretValues and handed to the claiming executor in the answer only: never
  stored, queued or logged here. The executor's own stores (files, environment, AWS) come first.

At most capacity.DATAHUB_CALLS claims ask DataHub at once: one more is answered 503 at once, with
retry_after_s, instead of waiting for a slot (a DataHub that hangs holds each for its client's
timeout). DataHub unreachable while the recipe names secrets, failing inside (a GraphQL error of code 5xx,
as GMS answers its database or search index failing), or refusing our token (401: expired, revoked,
being replaced; the file is read again on the next try): the claim answers 503 and the executor
asks again (a run is delayed, not failed for a secret it could not see). A DataHub that refuses
getSecretValues otherwise (403: the token's user lacks MANAGE_SECRETS) is logged, and the run
gets no DataHub secrets: a name no store has then fails the run with SECRET_NOT_FOUND, naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from loguru import logger

from vocabulary.secret_references import recipe_secret_names

from ..capacity import DataHubSlots
from ..errors import Unavailable
from .gms import UpstreamGms, UpstreamRefused, UpstreamUnreachable
from .mirror import Mirror


class UpstreamClaims:
    def __init__(self, gms: UpstreamGms, mirror: Mirror, *, ingest_token_file: Path, sink_url: str) -> None:
        self.gms = gms
        self.mirror = mirror
        self.ingest_token_file = Path(ingest_token_file)
        self.sink_url = sink_url.rstrip("/")
        self.datahub_slots = DataHubSlots()

    def __call__(self, execution_id: str, args: dict[str, Any]) -> dict[str, Any]:
        if not self.mirror.is_mirrored(execution_id):
            return {}
        extra: dict[str, Any] = {"sink": {"server": self.sink_url, "token": self._ingest_token()}}
        recipe = str(args.get("recipe") or "")
        found = recipe_secret_names(recipe)
        names = found.required + found.optional
        if names:
            try:
                with self.datahub_slots.slot("the recipe names secrets"):
                    extra["secrets"] = self.gms.secret_values(names)
            except UpstreamUnreachable as exc:
                raise Unavailable(f"the recipe names secrets and {exc}; ask again") from None
            except UpstreamRefused as exc:
                if exc.status == 401:  # the sync loop names the token's file in the log; not the executor's to see
                    raise Unavailable("the recipe names secrets and DataHub refused this control plane's token "
                                      "(401); ask again") from None
                logger.warning("execution {}: DataHub's secrets not read: {}", execution_id, exc)
        return extra

    def _ingest_token(self) -> str:
        try:
            token = self.ingest_token_file.read_text().strip()
        except OSError as exc:
            raise Unavailable(f"the ingest token file {self.ingest_token_file} cannot be read ({exc.strerror})") from None
        if not token:
            raise Unavailable(f"the ingest token file {self.ingest_token_file} is empty")
        return token
