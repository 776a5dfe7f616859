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

import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.bounded import MIB, UnreadableFile, read_bounded
from harness.errors import InfraError

logger = logging.getLogger(__name__)

FORMAT = "stapmatrix-cache-v1"


def _digest(payload_text: str) -> str:
    return hashlib.sha256(payload_text.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one. A write
    that fails (a full disk, a read-only cache) leaves the old entry and no temporary file,
    and is an InfraError that names the entry and what to do."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # a directory where an entry belongs would make the rename fail forever
        _remove_stale_temporaries(path)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from None
        raise


STALE_TEMPORARY_S = 3600  # no write of one entry takes this long; a younger file may be a live writer's


def _remove_stale_temporaries(path: Path) -> None:
    """A writer killed mid-write leaves its temporary file (never read as an entry); remove
    those of this entry that are old enough to belong to no live writer."""
    cutoff = time.time() - STALE_TEMPORARY_S
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
        except OSError:
            pass


def _write_error(path: Path, error: OSError) -> InfraError:
    return InfraError(f"cannot write the cache entry {path}: {error.strerror or error}; the previous entry, if "
                      "any, is unchanged. Free space there, or set STAPMATRIX_CACHE to a directory with room")


def write_entry(path: Path, payload: Any) -> None:
    payload_text = json.dumps(payload, sort_keys=True)
    record = {"format": FORMAT, "digest": _digest(payload_text), "payload": json.loads(payload_text)}
    atomic_write_bytes(path, json.dumps(record).encode())


# The largest entry is sid's package catalogue (about 7 MiB); a FIFO or device put where an
# entry belongs, or a runaway file, must not hang or exhaust the reader.
ENTRY_LIMIT = 256 * MIB


def read_entry(path: Path) -> Any | None:
    """The payload, or None when there is no entry or it is damaged (then it is removed)."""
    if not os.path.lexists(path):
        return None
    try:
        text = read_bounded(path, ENTRY_LIMIT, "a cache entry").decode()
    except (UnreadableFile, UnicodeDecodeError) as error:
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
    """Remove a damaged entry (a directory in its place too); the caller rebuilds it."""
    logger.warning("cache entry %s is %s: discarding it and rebuilding", path, why)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        pass
