"""Card-key secrets at rest: AES-256-GCM with a key id per ciphertext, HMAC-SHA256 lookup hashes.

Keys come from the environment (QUANYI_CARD_KEYS, QUANYI_CARD_KEY_ACTIVE,
QUANYI_LOOKUP_KEY) or, in the embedded set-up, from ``keys.json`` in the data
directory, created with mode 0600 on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quanyi.core.config import Settings
from quanyi.core.errors import CardKeyError, ConfigError

KEY_FILE = "keys.json"
_NONCE = 12


@dataclass(frozen=True)
class KeyRing:
    enc_keys: dict[str, bytes]
    active: str
    lookup_key: bytes
    # HMAC key the sandbox payment method signs its callbacks with.
    sandbox_key: bytes = b""

    def __post_init__(self) -> None:
        if self.active not in self.enc_keys:
            raise ConfigError(f"active card key id {self.active!r} has no key")
        for key_id, key in self.enc_keys.items():
            if len(key) != 32:
                raise ConfigError(f"card key {key_id!r} must be 32 bytes (AES-256)")
        if len(self.lookup_key) < 32:
            raise ConfigError("lookup key must be at least 32 bytes")

    def __repr__(self) -> str:  # keys never reach a log through repr()
        return f"KeyRing(active={self.active!r}, key_ids={sorted(self.enc_keys)!r})"

    def encrypt(self, plaintext: str, aad: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self.enc_keys[self.active]).encrypt(nonce, plaintext.encode(), aad)
        return self.active, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> str:
        key = self.enc_keys.get(key_id)
        if key is None:
            raise CardKeyError(f"card key id {key_id!r} is not loaded")
        try:
            return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad).decode()
        except InvalidTag:
            raise CardKeyError("card key ciphertext failed authentication") from None

    def lookup_hash(self, plaintext: str) -> bytes:
        return hmac.new(self.lookup_key, plaintext.encode(), hashlib.sha256).digest()

    @classmethod
    def load(cls, settings: Settings) -> KeyRing:
        if settings.card_keys or settings.lookup_key:
            return cls._from_env(settings)
        return cls._from_file(settings.data_dir / KEY_FILE, settings)

    @classmethod
    def _from_env(cls, settings: Settings) -> KeyRing:
        if not (settings.card_keys and settings.lookup_key):
            raise ConfigError("set both QUANYI_CARD_KEYS and QUANYI_LOOKUP_KEY, or neither")
        keys: dict[str, bytes] = {}
        for part in settings.card_keys.split(","):
            key_id, sep, encoded = part.strip().partition(":")
            if not sep or not key_id:
                raise ConfigError("QUANYI_CARD_KEYS is 'id:base64key,id:base64key'")
            keys[key_id] = _b64(encoded, "QUANYI_CARD_KEYS")
        active = settings.card_key_active or list(keys)[-1]
        if active not in keys:
            raise ConfigError(f"QUANYI_CARD_KEY_ACTIVE is {active!r}, a key id QUANYI_CARD_KEYS does not hold")
        sandbox = settings.sandbox_secret.encode() or _derive(keys[active], b"sandbox")
        return cls(keys, active, _b64(settings.lookup_key, "QUANYI_LOOKUP_KEY"), sandbox)

    @classmethod
    def _from_file(cls, path: Path, settings: Settings) -> KeyRing:
        if not path.exists():
            _create_key_file(path)
        data = json.loads(path.read_text())
        keys = {k: base64.b64decode(v) for k, v in data["enc_keys"].items()}
        sandbox = settings.sandbox_secret.encode() or base64.b64decode(data["sandbox_key"])
        return cls(keys, data["active"], base64.b64decode(data["lookup_key"]), sandbox)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "enc_keys": {"k1": base64.b64encode(secrets.token_bytes(32)).decode()},
        "active": "k1",
        "lookup_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "sandbox_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first; use theirs
        return
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise ConfigError(f"{name} is not valid base64") from None


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()
