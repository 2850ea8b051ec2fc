"""Gateway credentials at rest (Fernet-encrypted JSON, key derived from the app's secret key), and the
one masking of secrets in provider text."""
import base64
import json

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


class UnreadableCredentials(Exception):
    """The stored credentials cannot be decrypted with this secret key (it changed)."""


def _fernet() -> Fernet:
    secret = current_app.config["SECRET_KEY"].encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mpm-gateway-credentials", info=b"fernet").derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(credentials: dict) -> str:
    return _fernet().encrypt(json.dumps(credentials, sort_keys=True).encode()).decode()


def decrypt(token: str | None) -> dict:
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise UnreadableCredentials("The saved credentials cannot be read with the current secret key; enter them again.") from None


def masked(value: str | None) -> str:
    """Only the last 4 characters are ever shown back."""
    if not value:
        return ""
    return "•" * 8 + value[-4:] if len(value) > 4 else "•" * len(value)


def scrub(text: str, secrets: dict) -> str:
    """Provider text with every secret value masked: a provider or a library may echo what it was
    sent, and such text is stored, shown and exported. The one masking of provider text."""
    for value in secrets.values():
        if isinstance(value, str) and len(value) >= 4 and value in text:
            text = text.replace(value, masked(value))
    return text
