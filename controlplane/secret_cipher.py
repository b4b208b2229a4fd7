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

import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import Invalid, Unavailable
from .private_file import NotARegularFile, OthersMayRead, read_private, write_private

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
        key = self._read()
        if key is None and create:
            # Never over a key another writer linked first: that one is read instead.
            write_private(self.key_path, Fernet.generate_key() + b"\n", replace=False)
            key = self._read()
        if key is None:
            raise Unavailable(f"the secret key {self.key_path} is missing: restore it from the backup of this "
                              "state directory; secrets encrypted with another key cannot be read")
        return key

    def _read(self) -> bytes | None:
        """The key in the key file, None when there is none; Unavailable, saying why, when it
        cannot be read (a directory in its place, permission denied): a bare OSError became an
        internal error that named neither the file nor the fault."""
        assert self.key_path is not None
        try:
            content = read_private(self.key_path)
        except (NotARegularFile, IsADirectoryError):
            raise Unavailable(f"the secret key {self.key_path} is not a regular file") from None
        except OthersMayRead as refused:
            raise Unavailable(f"the secret key {self.key_path} may be read by others (mode {refused.mode:04o}); "
                              f"run: chmod 600 {self.key_path}") from None
        except OSError as exc:
            raise Unavailable(f"the secret key {self.key_path} cannot be read ({exc.strerror}): let the control "
                              "plane's user read it, or restore it from the backup of this state directory") from None
        if content is None:
            return None
        key = content.strip()
        try:
            Fernet(key)
        except ValueError:
            raise Unavailable(f"the secret key {self.key_path} is not a Fernet key (32 bytes, URL-safe base64); "
                              "restore it from the backup of this state directory") from None
        return key
