"""Card-key secrets at rest: AES-256-GCM with a key id per ciphertext, HMAC-SHA256 lookup hashes.

Keys come from the environment (QUANYI_CARD_KEYS, QUANYI_CARD_KEY_ACTIVE,
QUANYI_LOOKUP_KEY, QUANYI_AUDIT_KEY) or, in the embedded set-up, from ``keys.json`` in the
data directory, created with mode 0600 only for a database that holds no ciphertext
(``keycheck.init_keys``). Loading never creates keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quanyi.core.errors import CardKeyError, ConfigError
from quanyi.core.platform.config import Settings

KEY_FILE = "keys.json"
_NONCE = 12


@dataclass(frozen=True)
class KeyRing:
    enc_keys: dict[str, bytes]
    active: str
    lookup_key: bytes
    # HMAC key the sandbox payment method signs its callbacks with.
    sandbox_key: bytes = b""
    # HMAC key of the audit chain: kept with the other keys, never in the database, so someone
    # who can write the database cannot re-chain an edited record. Empty = derived from the
    # lookup key (key files and environments from before the keyed chain).
    audit_key: bytes = b""
    # The key file this ring came from: a running process adopts keys ``quanyi keys rotate``
    # adds to it (see ``_refresh``), so codes stay readable while they are re-encrypted.
    source: Path | None = field(default=None, compare=False)
    _seen: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.active not in self.enc_keys:
            raise ConfigError(f"active card key id {self.active!r} has no key")
        for key_id, key in self.enc_keys.items():
            if len(key) != 32:
                raise ConfigError(f"card key {key_id!r} must be 32 bytes (AES-256)")
        if len(self.lookup_key) < 32:
            raise ConfigError("lookup key must be at least 32 bytes")
        if not self.audit_key:
            object.__setattr__(self, "audit_key", _derive(self.lookup_key, b"quanyi audit chain"))
        elif len(self.audit_key) < 32:
            raise ConfigError("audit key must be at least 32 bytes")

    def __repr__(self) -> str:  # keys never reach a log through repr()
        return f"KeyRing(active={self.active!r}, key_ids={sorted(self.enc_keys)!r})"

    def encrypt(self, plaintext: str, aad: bytes) -> tuple[str, bytes]:
        self._refresh()
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self.enc_keys[self.active]).encrypt(nonce, plaintext.encode(), aad)
        return self.active, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> str:
        key = self.enc_keys.get(key_id)
        if key is None:
            self._refresh()
            key = self.enc_keys.get(key_id)
        if key is None:
            raise CardKeyError(f"card key id {key_id!r} is not loaded")
        try:
            return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad).decode()
        except InvalidTag:
            raise CardKeyError("card key ciphertext failed authentication") from None

    def _refresh(self) -> None:
        """Adopt keys added to the key file since it was read, and its active key.

        Without this a running ``quanyi serve`` could not read codes a rotation has already
        re-encrypted, and would keep encrypting new ones under a key about to be retired.
        Keys already loaded are never dropped or replaced.
        """
        if self.source is None:
            return
        try:
            mtime = self.source.stat().st_mtime_ns
        except OSError:
            return
        if self._seen.get("mtime") == mtime:
            return
        data = json.loads(self.source.read_text())
        for key_id, encoded in data["enc_keys"].items():
            key = base64.b64decode(encoded)
            if len(key) == 32:
                self.enc_keys.setdefault(key_id, key)
        if data["active"] in self.enc_keys:
            object.__setattr__(self, "active", data["active"])
        self._seen["mtime"] = mtime

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
        audit = _b64(settings.audit_key, "QUANYI_AUDIT_KEY") if settings.audit_key else b""
        return cls(keys, active, _b64(settings.lookup_key, "QUANYI_LOOKUP_KEY"), sandbox, audit)

    @classmethod
    def _from_file(cls, path: Path, settings: Settings) -> KeyRing:
        if not path.exists():
            raise ConfigError(
                f"no key file at {path}: restore keys.json from your backup, or for a new database run "
                "`quanyi db upgrade` (or `quanyi keys init`)"
            )
        mtime = path.stat().st_mtime_ns
        data = json.loads(path.read_text())
        keys = {k: base64.b64decode(v) for k, v in data["enc_keys"].items()}
        sandbox = settings.sandbox_secret.encode() or base64.b64decode(data["sandbox_key"])
        audit = base64.b64decode(data["audit_key"]) if data.get("audit_key") else b""
        ring = cls(keys, data["active"], base64.b64decode(data["lookup_key"]), sandbox, audit, source=path)
        ring._seen["mtime"] = mtime
        return ring


def create_key_file(path: Path) -> bool:
    """Write a new key file (0600); False when one already exists (another process made it).

    Only ``keycheck.init_keys`` calls this, for a database that holds no ciphertext.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {
        "enc_keys": {"k1": base64.b64encode(secrets.token_bytes(32)).decode()},
        "active": "k1",
        "lookup_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "sandbox_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "audit_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first; use theirs
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def add_file_key(path: Path) -> str:
    """Add a fresh key to the key file and make it the active one; returns its id.

    Ids are never reused: retired ids stay listed (without their keys) under ``retired``.
    """
    data = _read_key_file(path)
    taken = [*data["enc_keys"], *data.get("retired", [])]
    numbers = [int(m.group(1)) for key_id in taken if (m := re.fullmatch(r"k(\d+)", key_id))]
    key_id = f"k{max(numbers, default=0) + 1}"
    data["enc_keys"][key_id] = base64.b64encode(secrets.token_bytes(32)).decode()
    data["active"] = key_id
    _write_key_file(path, data)
    return key_id


def retire_file_keys(path: Path, key_ids: Iterable[str]) -> list[str]:
    """Remove keys from the key file (never the active one); returns the ids removed."""
    data = _read_key_file(path)
    removed = [k for k in key_ids if k in data["enc_keys"] and k != data["active"]]
    if not removed:
        return []
    for key_id in removed:
        del data["enc_keys"][key_id]
    data["retired"] = [*data.get("retired", []), *removed]
    _write_key_file(path, data)
    return removed


def _read_key_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"no key file at {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("enc_keys"), dict) or "active" not in data:
        raise ConfigError(f"{path} is not a quanyi key file")
    return data


def _write_key_file(path: Path, data: object) -> None:
    """Replace the key file atomically: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise ConfigError(f"{name} is not valid base64") from None


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()
