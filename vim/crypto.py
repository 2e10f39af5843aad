"""VIM passwords at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key kept outside the database.

The key file is created on first use with mode 0600 (``os.open`` with O_EXCL, so two servers
starting at once cannot each write a different key). Whoever reads the database alone learns
no password; the key file must be shared by every server of one database.
"""

from __future__ import annotations

import logging
import os
import stat

from cryptography.fernet import Fernet, InvalidToken

LOG = logging.getLogger(__name__)


class KeyFileError(RuntimeError):
    """The key file cannot be read or made; the message names it."""


def load_or_create_key(path: str) -> bytes:
    """The Fernet key in ``path``; a new one (mode 0600) if the file does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise KeyFileError(f"key file {path}: cannot create it: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        LOG.info("created the VIM password key %s (mode 0600); back it up: without it the "
                 "stored passwords cannot be read", path)
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as handle:
            key = handle.read().strip()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        LOG.warning("key file %s is readable by others (mode %o); chmod 600 it", path,
                    stat.S_IMODE(mode))
    try:
        Fernet(key)
    except ValueError:
        raise KeyFileError(f"key file {path}: not a Fernet key (32 url-safe base64 bytes)") \
            from None
    return key


class PasswordBox:
    """Encrypts and decrypts VIM passwords with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_key_file(cls, path: str) -> PasswordBox:
        return cls(load_or_create_key(path))

    def encrypt(self, password: str) -> str:
        return self._fernet.encrypt(password.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The password; KeyFileError when the key is not the one it was stored with."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise KeyFileError("a stored VIM password does not decrypt with this key file "
                               "(another server's key?)") from None
