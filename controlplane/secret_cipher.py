"""The key that encrypts DataHub secrets at rest, and encryption with it (Fernet: AES-128-CBC
with an HMAC-SHA256, from the `cryptography` package).

The key lives in the state directory beside the database (`secret-key`, mode 0600), so a copy of
the database alone (a backup, a support bundle) holds no readable secret; back the two up
together, because a secret whose key is lost cannot be read again. The file is created on the
first encryption: written to a private temporary file and linked into place, so a crash leaves
either no key or a whole one, and two writers racing agree on the one that was linked first.
A key file that others may read is refused, as ssh refuses such a private key.

An in-memory database gets an in-memory key: its secrets die with it.
"""
from __future__ import annotations

import os
import secrets
import stat
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import Invalid, Unavailable

KEY_FILE = "secret-key"


class SecretCipher:
    def __init__(self, key_path: Path | None) -> None:
        self.key_path = key_path
        self._fernet: Fernet | None = None
        self._lock = threading.Lock()  # GraphQL's resolvers run in FastAPI's worker threads

    def has_key(self) -> bool:
        return self._fernet is not None or (self.key_path is not None and self.key_path.exists())

    def encrypt(self, plaintext: str) -> str:
        """PLAINTEXT as a Fernet token (URL-safe base64 text), creating the key on first use."""
        return self._key(create=True).encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, name: str) -> str:
        """The plaintext of secret NAME's TOKEN; Unavailable when this key did not make it."""
        try:
            return self._key(create=False).decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise Unavailable(f"secret {name} cannot be decrypted with the key in {self._where()}: it was encrypted "
                              "with another key (restore the key file from the backup of this state directory, "
                              "or set the secret again with updateSecret)") from None

    def check(self, token: object, name: str) -> None:
        """Invalid unless TOKEN was encrypted with this key (its signature verifies); nothing is decrypted."""
        if not self.has_key():
            raise Invalid(f"secret {name}: its value is not encrypted with this control plane's key (there is none "
                          "yet); write secrets with the createSecret and updateSecret mutations, which encrypt them")
        try:
            self._key(create=False).extract_timestamp(str(token).encode("ascii"))
        except (InvalidToken, UnicodeError):
            raise Invalid(f"secret {name}: its value is not encrypted with this control plane's key; write secrets "
                          "with the createSecret and updateSecret mutations, which encrypt them") from None

    def _where(self) -> str:
        return str(self.key_path) if self.key_path is not None else "this process's memory"

    def _key(self, *, create: bool) -> Fernet:
        with self._lock:
            if self._fernet is None:
                self._fernet = Fernet(self._load(create))
            return self._fernet

    def _load(self, create: bool) -> bytes:
        if self.key_path is None:
            if not create:
                raise Unavailable("no secret has been encrypted by this in-memory control plane yet")
            return Fernet.generate_key()
        try:
            return self._read()
        except FileNotFoundError:
            if not create:
                raise Unavailable(f"the secret key {self.key_path} is missing: restore it from the backup of this "
                                  "state directory; secrets encrypted with another key cannot be read") from None
        self._create()
        return self._read()

    def _read(self) -> bytes:
        assert self.key_path is not None
        with open(self.key_path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise Unavailable(f"the secret key {self.key_path} is not a regular file")
            if mode & 0o077:
                raise Unavailable(f"the secret key {self.key_path} may be read by others (mode {stat.S_IMODE(mode):04o}); "
                                  f"run: chmod 600 {self.key_path}")
            key = f.read(1024).strip()
        try:
            Fernet(key)
        except ValueError:
            raise Unavailable(f"the secret key {self.key_path} is not a Fernet key (32 bytes, URL-safe base64); "
                              "restore it from the backup of this state directory") from None
        return key

    def _create(self) -> None:
        assert self.key_path is not None
        temporary = self.key_path.with_name(f".{KEY_FILE}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temporary, self.key_path)  # never replaces a key another writer linked first
            except FileExistsError:
                return
            directory = os.open(self.key_path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            temporary.unlink(missing_ok=True)
