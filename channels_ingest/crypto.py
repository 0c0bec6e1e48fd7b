"""Encryption at rest for channel credentials.

Keys come from ``settings.ENCRYPTION_KEYS`` (Fernet keys, newest first). Several keys may be
listed so an old key keeps decrypting while rows are re-encrypted with the new one.
"""

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("SCRM_ENCRYPTION_KEYS is empty.")
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


def encrypt_json(value: Any) -> str:
    return fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> Any:
    try:
        return json.loads(fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "Channel credentials cannot be decrypted with any key in SCRM_ENCRYPTION_KEYS."
        ) from exc


if TYPE_CHECKING:
    # For type checkers, a field that is set and read as a dict.
    _TextBase = models.TextField[dict[str, Any], dict[str, Any]]
else:
    _TextBase = models.TextField


class EncryptedJSONField(_TextBase):
    """A JSON value stored as a Fernet token: a raw read of the table shows no plaintext."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return {}
        return decrypt_json(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            return decrypt_json(value) if value else {}
        return value

    def get_prep_value(self, value: Any) -> str:
        return encrypt_json(value if value is not None else {})


if TYPE_CHECKING:
    _StrBase = models.TextField[str, str]
else:
    _StrBase = models.TextField


class EncryptedTextField(_StrBase):
    """A secret string stored as a Fernet token, like EncryptedJSONField."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        return str(decrypt_json(value)) if value else ""

    def to_python(self, value: Any) -> str:
        return "" if value is None else str(value)

    def get_prep_value(self, value: Any) -> str:
        return encrypt_json(value or "")
