"""Stable content hashes of JSON-able values: cache keys, code versions, data versions."""

from __future__ import annotations

import hashlib
import json


def stable_hash(payload: object, length: int = 16) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
