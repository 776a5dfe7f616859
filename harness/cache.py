"""One rule for every cache entry the harness keeps on disk (package indexes, compile results,
the KVM verdict, kernel trees' manifests, packed guests):

- keyed by everything its content depends on (the caller's key),
- written atomically (a temporary file in the same directory, then a rename), so a killed
  process or a full disk leaves the old entry or none, never half of one,
- checked when read: the entry carries a digest of its payload; a damaged or unreadable
  entry is discarded with a warning and the caller rebuilds it.

Only verdicts about the user's code are cached; an infrastructure failure never is (that is
the callers' part: they do not call `write_entry` for one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT = "stapmatrix-cache-v1"


def _digest(payload_text: str) -> str:
    return hashlib.sha256(payload_text.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_entry(path: Path, payload: Any) -> None:
    payload_text = json.dumps(payload, sort_keys=True)
    record = {"format": FORMAT, "digest": _digest(payload_text), "payload": json.loads(payload_text)}
    atomic_write_bytes(path, json.dumps(record).encode())


def read_entry(path: Path) -> Any | None:
    """The payload, or None when there is no entry or it is damaged (then it is removed)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        _discard(path, f"unreadable ({error})")
        return None
    try:
        record = json.loads(text)
        payload = record["payload"]
        if record.get("format") != FORMAT or record.get("digest") != _digest(json.dumps(payload, sort_keys=True)):
            _discard(path, "its digest does not match (damaged or written by another version)")
            return None
        return payload
    except (ValueError, KeyError, TypeError) as error:
        _discard(path, f"not valid ({error.__class__.__name__}: {error})")
        return None


def _discard(path: Path, why: str) -> None:
    """Remove a damaged entry; returns None, which callers pass on as "no entry"."""
    logger.warning("cache entry %s is %s: discarding it and rebuilding", path, why)
    try:
        path.unlink()
    except OSError:
        pass
