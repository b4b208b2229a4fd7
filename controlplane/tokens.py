"""Access tokens and what each kind may do.

- admin: everything (the web page, the admin CLI, DataHub's CLI and client used by operators).
- executor: a Remote Executor token, for one or more pools (or all): heartbeat, claim, report
  and release the executions of its pools, read its pools' queues. No GraphQL, no management.
- ingest: minted for one execution when it is claimed, handed to that task only, revoked when
  the execution ends: it may write metadata (ingestProposal), read the server config and read
  ordinary metadata (sources read GMS: stateful ingestion, lookups; decision 30), and nothing
  else; not the control plane's own entities, no secrets, not another run, not a claim. An admin
  may also create one bound to no execution, for a sink outside our runs (an upstream-mode
  control plane's tasks, docs/datahub-oss.md): the same rights, until it is revoked.

Tokens are random, shown once, and stored as SHA-256 hashes.
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from .errors import Forbidden, Invalid, NotFound, Unauthorized
from .ids import new_id
from .store import Store, dumps, loads

ADMIN = "admin"
EXECUTOR = "executor"
INGEST = "ingest"
KINDS = (ADMIN, EXECUTOR, INGEST)
PREFIX = "dhx_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    token_id: str
    kind: str
    pools: tuple[str, ...] | None  # executor tokens: None means every pool
    execution_id: str | None  # ingest tokens: the one execution they write for

    @property
    def actor(self) -> str:
        """The urn recorded as the writer of what this identity writes."""
        return f"urn:li:corpuser:__datahub_executor_{self.kind}_{self.token_id}"

    @property
    def is_admin(self) -> bool:
        return self.kind == ADMIN

    def require_admin(self, what: str = "this") -> None:
        if self.kind != ADMIN:
            raise Forbidden(f"{what} needs an admin token; this is a{'n' if self.kind[0] in 'aeiou' else ''} "
                            f"{self.kind} token")

    def require_pool(self, pool_id: str) -> None:
        if self.kind == ADMIN:
            return
        if self.kind == EXECUTOR and (self.pools is None or pool_id in self.pools):
            return
        raise Forbidden(f"this token is not scoped to pool {pool_id}")


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, kind: str, pools: list[str] | None = None, description: str = "", *,
               execution_id: str | None = None, tx: sqlite3.Connection | None = None) -> tuple[dict, str]:
        """A new token: its record, and the token itself, shown this once and stored hashed."""
        if kind not in KINDS:
            raise Invalid(f"kind must be one of {', '.join(KINDS)}")
        token = PREFIX + secrets.token_urlsafe(32)
        record = {"id": new_id("tok_"), "kind": kind, "pools": pools, "description": description,
                  "created_at": time.time(), "execution_id": execution_id}
        row = (record["id"], hash_token(token), kind, dumps(pools) if pools is not None else None, description,
               record["created_at"], execution_id)
        sql = "INSERT INTO tokens (id, hash, kind, pools, description, created_at, execution_id) VALUES (?,?,?,?,?,?,?)"
        if tx is not None:
            tx.execute(sql, row)
        else:
            with self.store.transaction() as own:
                own.execute(sql, row)
        return record, token

    def list(self) -> list[dict]:
        rows = self.store.query("SELECT id, kind, pools, description, created_at, execution_id FROM tokens "
                                "WHERE kind <> ? OR execution_id IS NULL ORDER BY created_at", (INGEST,))
        return [{**r, "pools": loads(r["pools"])} for r in rows]

    def revoke(self, token_id: str) -> None:
        with self.store.transaction() as tx:
            if tx.execute("DELETE FROM tokens WHERE id=?", (token_id,)).rowcount == 0:
                raise NotFound(f"token {token_id} not found")

    @staticmethod
    def forget_pool(tx: sqlite3.Connection, pool_id: str) -> tuple[list[str], list[str]]:
        """POOL_ID leaves every executor token's scope, with the pool's deletion (in its
        transaction): a token for it would otherwise speak for a new pool of the same id. A token
        that named no other pool is revoked. Returns (narrowed token ids, revoked token ids)."""
        narrowed, revoked = [], []
        for token_id, scope in tx.execute("SELECT id, pools FROM tokens WHERE kind=? AND pools IS NOT NULL",
                                          (EXECUTOR,)).fetchall():
            pools = loads(scope)
            if pool_id not in pools:
                continue
            left = [p for p in pools if p != pool_id]
            if left:
                tx.execute("UPDATE tokens SET pools=? WHERE id=?", (dumps(left), token_id))
                narrowed.append(token_id)
            else:
                tx.execute("DELETE FROM tokens WHERE id=?", (token_id,))
                revoked.append(token_id)
        return narrowed, revoked

    @staticmethod
    def revoke_for_execution(tx: sqlite3.Connection, execution_id: str) -> int:
        return tx.execute("DELETE FROM tokens WHERE kind=? AND execution_id=?", (INGEST, execution_id)).rowcount

    def authenticate(self, header: str | None) -> Identity:
        if not header or not header.startswith("Bearer "):
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        token = header[7:].strip()
        if not token.startswith(PREFIX) or len(token) > 128:
            raise Unauthorized("unknown token")
        row = self.store.one("SELECT id, kind, pools, execution_id FROM tokens WHERE hash=?", (hash_token(token),))
        if row is None:
            raise Unauthorized("unknown token")
        pools = loads(row["pools"])
        return Identity(row["id"], row["kind"], tuple(pools) if pools is not None else None, row["execution_id"])
