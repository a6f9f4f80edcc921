"""API keys and the ids that own data.

`API_KEYS` is a comma-separated list whose entries are either `id:key` or a bare `key`. Tasks,
and everything else kept per caller, belong to the id: a key can be replaced by a new one under
the same id without orphaning what the old one created. A bare key's id is a hash of the key,
which is what tasks were owned by before ids could be named, so existing data stays owned.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pydantic import SecretStr

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ApiKey:
    id: str
    """What owns data and may appear in logs and stores."""
    key: SecretStr
    """What callers send; never logged or stored."""


def hashed_key_id(key: str) -> str:
    """The id of a key given without one: stable and not reversible."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_api_keys(value: str) -> list[ApiKey]:
    """`id:key` and bare `key` entries, comma-separated; ValueError naming the entry (never the key)."""
    keys: list[ApiKey] = []
    for number, entry in enumerate((item.strip() for item in value.split(",")), start=1):
        if not entry:
            continue
        key_id, colon, key = entry.partition(":")
        if not colon:
            key_id, key = hashed_key_id(entry), entry
        elif not KEY_ID_PATTERN.fullmatch(key_id) or not key:
            raise ValueError(
                f"API_KEYS entry {number}: write it as id:key, the id being 1-64 letters, digits, '_', '.' or '-' "
                "(not starting with a punctuation mark), or as a bare key without ':'"
            )
        keys.append(ApiKey(key_id, SecretStr(key)))
    ids = [api_key.id for api_key in keys]
    if len(set(ids)) != len(ids):
        raise ValueError("API_KEYS: two entries share an id; each id names one owner and must be unique")
    return keys
