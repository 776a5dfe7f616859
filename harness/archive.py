"""Where kernels and systemtap packages come from: Debian's package indexes.

Every kernel ABI name and every `deb:` systemtap version in a matrix is looked up in the
`Packages` index of the suites below, so a typo is caught before any image is built and the
error can list what the archive really has.
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from filelock import FileLock

from harness.errors import InfraError
from harness.settings import cache_dir, mirror_url

logger = logging.getLogger(__name__)

# Oldest first. The order is also the order of preference when a package is in several.
SUITES: tuple[str, ...] = ("bookworm", "bookworm-backports", "trixie", "sid")

# Only these stanzas matter; keeping just them makes the parsed index small (~2 MB).
_INTERESTING_PREFIXES = ("linux-image-", "linux-headers-", "linux-kbuild-", "linux-compiler-",
                         "systemtap", "gcc-")
_FIELDS = ("Package", "Version", "Depends", "Filename")
_INDEX_MAX_AGE_S = 6 * 3600


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    depends: tuple[str, ...]  # first alternative of each dependency, version constraint removed
    suite: str


def _first_alternatives(depends: str) -> tuple[str, ...]:
    names = []
    for clause in depends.split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(first.split("(")[0].split(":")[0].strip())
    return tuple(names)


def _download_index(suite: str) -> bytes:
    url = f"{mirror_url()}/dists/{suite}/main/binary-amd64/Packages.xz"
    last_error: Exception | None = None
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return lzma.decompress(response.read())
        except (urllib.error.URLError, OSError, lzma.LZMAError) as error:
            last_error = error
            logger.warning("downloading %s failed (%s), attempt %d of 3", url, error, attempt + 1)
            time.sleep(2 * (attempt + 1))
    raise InfraError(f"cannot download the package index {url}: {last_error}")


def _parse_index(text: str, suite: str) -> list[dict[str, str]]:
    stanzas = []
    for block in text.split("\n\n"):
        if not block.startswith("Package: "):
            continue
        name = block[9 : block.index("\n")] if "\n" in block else block[9:]
        if not name.startswith(_INTERESTING_PREFIXES):
            continue
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in _FIELDS:
                fields[key] = value
        fields["suite"] = suite
        stanzas.append(fields)
    return stanzas


def _load_suite(suite: str) -> list[Package]:
    directory = cache_dir() / "indexes"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{suite}.json"
    with FileLock(str(path) + ".lock"):
        fresh = path.exists() and time.time() - path.stat().st_mtime < _INDEX_MAX_AGE_S
        if not fresh and not os.environ.get("STAPMATRIX_OFFLINE"):
            logger.info("reading the %s package index", suite)
            stanzas = _parse_index(_download_index(suite).decode("utf-8", "replace"), suite)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(stanzas))
            tmp.replace(path)
        if not path.exists():
            raise InfraError(f"no cached package index for {suite} and STAPMATRIX_OFFLINE is set")
        stanzas = json.loads(path.read_text())
    return [
        Package(s["Package"], s["Version"], _first_alternatives(s.get("Depends", "")), suite)
        for s in stanzas
    ]


class Archive:
    """The packages of every suite, loaded lazily and once per process."""

    def __init__(self) -> None:
        self._by_suite: dict[str, list[Package]] = {}

    def packages(self, suite: str) -> list[Package]:
        if suite not in self._by_suite:
            self._by_suite[suite] = _load_suite(suite)
        return self._by_suite[suite]

    def find(self, name: str, version: str | None = None) -> Package | None:
        """The package in the oldest suite that has it (at that version, if given)."""
        for suite in SUITES:
            for package in self.packages(suite):
                if package.name == name and (version is None or package.version == version):
                    return package
        return None

    def kernel_abis(self) -> list[str]:
        """Every amd64 kernel ABI name whose debuginfo package the archive carries."""
        abis = set()
        for suite in SUITES:
            for package in self.packages(suite):
                name = package.name
                if name.startswith("linux-image-") and name.endswith("-amd64-dbg"):
                    abi = name[len("linux-image-") : -len("-dbg")]
                    if not abi.endswith(("-cloud-amd64", "-rt-amd64")):
                        abis.add(abi)
        return sorted(abis)

    def systemtap_versions(self) -> list[tuple[str, str]]:
        """(version, suite) of every systemtap package in the archive."""
        return [(p.version, p.suite) for s in SUITES for p in self.packages(s) if p.name == "systemtap"]
