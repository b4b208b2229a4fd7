"""DataHub's secret store: `dataHubSecret` entities keyed by name (`urn:li:dataHubSecret:<name>`,
as DataHub's createSecret keys them), each with its `dataHubSecretValue` aspect {name, value,
description, created}, the value encrypted with the control plane's key (secret_cipher.py).

As in DataHub: createSecret refuses a name that exists, updateSecret replaces the value and the
description, deleteSecret is a hard delete, getSecretValues answers the names that exist and
omits the others, and the stored aspect (through GET /aspects, /entitiesV2) shows the value
encrypted. Stricter than DataHub: a name is one a recipe can reference as ${NAME}
(vocabulary.ids.SECRET_NAME); a secret keeps its name (DataHub would let updateSecret change the
aspect's name under the old urn, where getSecretValues no longer finds it); and a
dataHubSecretValue that comes through ingestProposal must hold a value encrypted with this
control plane's key, because DataHub would store whatever came, a plaintext too.

Only getSecretValues returns a plaintext. Nothing here logs a value or puts one in an error.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from vocabulary import ids

from . import entities as E
from .errors import Conflict, Invalid, NotFound
from .metadata import aspect_store
from .secret_cipher import SecretCipher
from .store import Store


def check_name(name: Any) -> str:
    try:
        return ids.secret_name(name)
    except ids.InvalidId as exc:
        raise Invalid(str(exc)) from None


def name_of(urn: Any) -> str:
    """The name in a secret's urn; Invalid for any other urn."""
    if not isinstance(urn, str) or not urn.startswith(f"urn:li:{E.SECRET}:"):
        raise Invalid(f"{str(urn)[:80]!r} is not a secret urn (urn:li:{E.SECRET}:<name>)")
    return check_name(E.key_of(urn, E.SECRET))


def view(stored: aspect_store.StoredAspect) -> dict[str, Any]:
    """DataHub's Secret: urn, name and description, never the value."""
    return {"urn": stored.urn, "name": stored.value["name"], "description": stored.value.get("description")}


class Secrets:
    def __init__(self, store: Store, cipher: SecretCipher) -> None:
        self.store = store
        self.cipher = cipher

    def value_aspect(self, name: str, plaintext: str, description: str | None,
                     created: dict[str, Any] | None) -> dict[str, Any]:
        """The dataHubSecretValue of secret NAME holding PLAINTEXT, encrypted."""
        if not self.cipher.has_key() and self._any_stored():
            raise Conflict(f"secrets are stored but the key they were encrypted with ({self.cipher.key_path}) is "
                           "missing: restore it from the backup of the state directory, or delete those secrets "
                           "(deleteSecret) before storing new ones")
        value: dict[str, Any] = {"name": name, "value": self.cipher.encrypt(plaintext)}
        if description is not None:
            value["description"] = description
        if created is not None:
            value["created"] = created
        return value

    def check_write(self, tx: sqlite3.Connection, change_type: str, urn: str, value: dict[str, Any] | None) -> None:
        """The rule for a dataHubSecretValue written through the ingest endpoint's path (the
        mutations write that way too): a referenceable name, the urn's own, a value encrypted
        with our key, and CREATE_ENTITY (createSecret) only for a name not taken."""
        name = E.key_of(urn, E.SECRET)
        if change_type == "DELETE":
            return
        check_name(name)
        assert value is not None
        if value.get("name") != name:
            raise Invalid(f"secret {name}: dataHubSecretValue.name must be the name in its urn, {name!r}")
        self.cipher.check(value.get("value"), name)
        if change_type in ("CREATE", "CREATE_ENTITY") and aspect_store.exists(tx, urn):
            raise Conflict(f"secret {name} already exists; updateSecret changes its value")

    def get(self, urn: str) -> aspect_store.StoredAspect:
        name = name_of(urn)
        with self.store.read() as db:
            stored = aspect_store.get(db, E.secret_urn(name), E.SECRET_VALUE)
        if stored is None:
            raise NotFound(f"secret {name} not found")
        return stored

    def list(self, query: str | None = None) -> list[aspect_store.StoredAspect]:
        """Every secret whose name contains QUERY (any case; none, "" or "*" for all), the newest
        first, as DataHub's listSecrets sorts them."""
        with self.store.read() as db:
            found = aspect_store.latest_of_type(db, E.SECRET, E.SECRET_VALUE)
        needle = (query or "").strip().lower()
        if needle not in ("", "*"):
            found = [s for s in found if needle in s.value["name"].lower()]
        return sorted(found, key=lambda s: (-(s.value.get("created") or {}).get("time", s.created_on_ms), s.urn))

    def values(self, names: list[str]) -> list[dict[str, str]]:
        """getSecretValues: {name, value} in plaintext for each of NAMES that is stored, in the
        order asked; a name that is not stored (or could not be) is left out, as DataHub does."""
        found = []
        for name in dict.fromkeys(names):
            if not ids.SECRET_NAME.fullmatch(name):
                continue
            with self.store.read() as db:
                stored = aspect_store.get(db, E.secret_urn(name), E.SECRET_VALUE)
            if stored is not None:
                found.append({"name": stored.value["name"], "value": self.cipher.decrypt(stored.value["value"], name)})
        return found

    def _any_stored(self) -> bool:
        return self.store.one("SELECT 1 AS x FROM aspects WHERE entity_type=? AND aspect=? LIMIT 1",
                              (E.SECRET, E.SECRET_VALUE)) is not None
