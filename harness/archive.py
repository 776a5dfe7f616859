"""Where kernels and systemtap packages come from: Debian's package indexes.

Every Debian kernel ABI name and every `deb:` systemtap version in a matrix is looked up in
the `Packages` index of the suites below, so a typo is caught before any image is built and
the error can list what the archive really has.

An index is trusted only after its `InRelease` file verified with Debian's archive keyring
(`gpgv`) and the index matched the SHA256 and size that file lists. Every name and version
kept from it is checked against Debian's grammar, because they become arguments of image
builds. Parsed indexes are cache entries (harness/cache.py): atomic, checked when read.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian import deb822
from debian.debian_support import Version
from filelock import FileLock

from harness import cache
from harness.bounded import MIB, size_text
from harness.debian_names import valid_name, valid_version
from harness.errors import InfraError
from harness.progress import Download, Progress
from harness.settings import cache_dir
from harness.suites import BASE_SUITE_SOURCES, SUITE_BY_NAME, SUITES, Suite

logger = logging.getLogger(__name__)


# Full records (dependencies, sizes) are kept only for these; for every other package the
# name, version and what it provides, which is enough to tell whether a dependency is met.
_INTERESTING_PREFIXES = ("linux-image-", "linux-headers-", "linux-kbuild-", "linux-compiler-",
                         "linux-binary-", "linux-modules-", "linux-base-", "linux-source", "systemtap")
_INDEX_MAX_AGE_S = 6 * 3600
INDEX_FORMAT = 4
KEYRINGS = (Path("/usr/share/keyrings/debian-archive-keyring.pgp"),
            Path("/usr/share/keyrings/debian-archive-keyring.gpg"))


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    suite: str
    depends: str = ""  # the raw Depends field (interesting packages only)
    provides: tuple[str, ...] = ()
    size: int = 0  # download size in bytes (interesting packages only)
    filename: str = ""  # the path in the archive's pool (interesting packages only)
    sha256: str = ""  # of the .deb, as the signed index lists it (interesting packages only)

    @property
    def pinned(self) -> str:
        """NAME=VERSION, as apt-get takes it."""
        return f"{self.name}={self.version}"

    def relations(self) -> list[list[dict[str, object]]]:
        return deb822.PkgRelation.parse_relations(self.depends) if self.depends else []  # type: ignore[return-value]


# Every download is bounded twice: by size (an InRelease file at most INRELEASE_LIMIT, an
# index or package exactly what the signed InRelease or index lists) and by time (a grace
# period plus one second per MIN_RATE bytes it should weigh, and no STALL_S without a byte).
# A socket timeout alone is per read: a mirror sending one byte every 20 s never trips it.
INRELEASE_LIMIT = 16 * MIB  # sid's is about 100 KiB
INRELEASE_TIME_SIZE = MIB  # what an InRelease file's time limit allows for
UNLISTED_LIMIT = 1024 * MIB  # an uncompressed index whose size InRelease does not list
MIN_RATE = 256 * 1024  # bytes per second: a 1 GB -dbg package may take 68 min
STALL_S = 60.0
CHUNK = 1024 * 1024


def download_grace_s() -> float:
    """The fixed part of every download's time limit: STAPMATRIX_DOWNLOAD_GRACE seconds
    (1 to 3600) for a slow mirror, 60 by default."""
    value = os.environ.get("STAPMATRIX_DOWNLOAD_GRACE", "")
    return float(value) if re.fullmatch(r"[0-9]{1,4}", value) and 1 <= int(value) <= 3600 else 60.0


class _Bounded(InfraError):
    """A download that went over its size or time limit: trying again would not help."""


def _stream(url: str, what: str, limit: int, sink: Callable[[bytes], object], expected: int | None = None) -> int:
    """Stream `url` into `sink`; at most `limit` bytes, within the time limit for `expected`
    bytes (default: `limit`). Returns the number of bytes."""
    deadline_s = download_grace_s() + (expected or limit) / MIN_RATE
    started = time.monotonic()
    done = 0
    with urllib.request.urlopen(url, timeout=min(STALL_S, deadline_s)) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Bounded(f"{url}: the mirror announces {size_text(int(declared))}, more than the "
                           f"{size_text(limit)} {what} may be; is the mirror a Debian archive?")
        while chunk := response.read1(CHUNK):  # what has arrived, not a full CHUNK: the clock is checked
            done += len(chunk)
            if done > limit:
                raise _Bounded(f"{url}: the mirror sent more than the {size_text(limit)} {what} may be "
                               "(a response that does not end); is the mirror a Debian archive?")
            sink(chunk)
            if time.monotonic() - started > deadline_s:
                raise _Bounded(f"{url}: the mirror sent {size_text(done)} in {deadline_s:.0f} s and is not done "
                               f"(a stalled or very slow mirror); set STAPMATRIX_MIRROR to another, or "
                               "STAPMATRIX_DOWNLOAD_GRACE to more seconds")
    return done


def _get(url: str, what: str, limit: int = INRELEASE_LIMIT, expected: int = INRELEASE_TIME_SIZE) -> bytes:
    last_error: Exception | None = None
    for attempt in range(3):
        parts: list[bytes] = []
        try:
            _stream(url, what, limit, parts.append, min(limit, expected))
            return b"".join(parts)
        except _Bounded:
            raise
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise InfraError(f"{url}: not found (404); is the mirror a Debian archive with {what}?") from None
            last_error = error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            stalled = isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError)
            last_error = InfraError(f"no data for {STALL_S:.0f} s") if stalled else error
        logger.warning("downloading %s failed (%s), attempt %d of 3", url, last_error, attempt + 1)
        time.sleep(2 * (attempt + 1))
    raise InfraError(f"cannot download {url}: {last_error}")


def _keyring() -> Path:
    for keyring in KEYRINGS:
        if keyring.exists():
            return keyring
    raise InfraError("Debian's archive keyring is not installed: `apt-get install debian-archive-keyring gpgv` "
                     "(or `./sm setup`); package indexes are not trusted without it")


def verified_release(signed: bytes, url: str) -> str:
    """The text of an InRelease file whose signature gpgv accepts with Debian's keyring."""
    with tempfile.TemporaryDirectory(prefix="stapmatrix-gpgv-") as tmp:
        signed_path = Path(tmp) / "InRelease"
        signed_path.write_bytes(signed)
        try:
            completed = subprocess.run(
                ["gpgv", "--keyring", str(_keyring()), "--output", "-", str(signed_path)],
                capture_output=True, timeout=60, check=False,
            )
        except FileNotFoundError:
            raise InfraError("gpgv is not installed: `apt-get install gpgv` (or `./sm setup`)") from None
        except subprocess.TimeoutExpired:
            raise InfraError(f"gpgv did not finish within 60 s checking {url}") from None
    if completed.returncode != 0:
        said = completed.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise InfraError(f"{url}: the signature does not verify with Debian's archive keyring: {' / '.join(said)}")
    return completed.stdout.decode("utf-8", "replace")


def _listed_checksum(release_text: str, member: str, url: str) -> tuple[str, int]:
    release = deb822.Release(release_text)
    for entry in release.get("SHA256", []):
        if entry["name"] == member:
            return str(entry["sha256"]), int(entry["size"])
    raise InfraError(f"{url} lists no SHA256 for {member}")


def _listed_size(release_text: str, member: str) -> int | None:
    for entry in deb822.Release(release_text).get("SHA256", []):
        if entry["name"] == member:
            return int(entry["size"])
    return None


def _download_index(suite: Suite) -> bytes:
    base = f"{suite.url()}/dists/{suite.name}"
    release_text = verified_release(_get(f"{base}/InRelease", "an InRelease file"), f"{base}/InRelease")
    sha256, size = _listed_checksum(release_text, "main/binary-amd64/Packages.xz", f"{base}/InRelease")
    data = _get(f"{base}/main/binary-amd64/Packages.xz", "this index (its signed InRelease lists the size)", size, size)
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise InfraError(f"{base}/main/binary-amd64/Packages.xz does not match the SHA256 its signed "
                         "InRelease lists (a broken download or a stale mirror)")
    # Decompressed no further than the size InRelease lists for the plain index.
    limit = _listed_size(release_text, "main/binary-amd64/Packages") or UNLISTED_LIMIT
    try:
        decompressor = lzma.LZMADecompressor()
        text = decompressor.decompress(data, max_length=limit + 1)
    except lzma.LZMAError as error:
        raise InfraError(f"{base}/main/binary-amd64/Packages.xz: cannot decompress: {error}") from None
    if len(text) > limit:
        raise InfraError(f"{base}/main/binary-amd64/Packages.xz decompresses to more than the {size_text(limit)} "
                         "its signed InRelease lists")
    return text


def _field(block: str, name: str) -> str:
    match = re.search(rf"^{name}: (.*)$", block, re.MULTILINE)
    return match.group(1).strip() if match else ""


def parse_index(text: str, suite: str) -> list[list[object]]:
    """[name, version, provides, depends, size, filename, sha256] per package; the last four
    only for the interesting ones. Stanzas whose name or version break Debian's grammar are
    dropped."""
    records: list[list[object]] = []
    dropped = 0
    for block in text.split("\n\n"):
        if not block.startswith("Package: "):
            continue
        name = block[9 : block.index("\n")] if "\n" in block else block[9:]
        version = _field(block, "Version")
        if not valid_name(name) or not valid_version(version):
            dropped += 1
            continue
        provides = [p.split("(")[0].strip() for p in _field(block, "Provides").split(",") if p.strip()]
        if name.startswith(_INTERESTING_PREFIXES) or name.startswith("gcc-"):
            size, filename, sha256 = _field(block, "Size"), _field(block, "Filename"), _field(block, "SHA256")
            if not re.fullmatch(r"pool/[A-Za-z0-9._+~/-]+\.deb", filename) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
                dropped += 1
                continue
            records.append([name, version, provides, _field(block, "Depends"), int(size) if size.isdigit() else 0,
                            filename, sha256])
        else:
            records.append([name, version, provides, "", 0, "", ""])
    if dropped:
        logger.warning("%s: dropped %d stanza(s) whose name or version is not valid Debian grammar", suite, dropped)
    return records


def _index_paths(suite: Suite) -> tuple[Path, Path]:
    """(the packages stapmatrix resolves, the catalogue of every other package) of a suite:
    two cache entries, so planning reads the small one and only dependency checks the big one."""
    directory = cache_dir() / "indexes"
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{suite.name}-{hashlib.sha256(suite.url().encode()).hexdigest()[:12]}"
    return directory / f"{stem}.json", directory / f"{stem}.catalogue.json"


def _refresh(suite: Suite, max_age_s: float = _INDEX_MAX_AGE_S) -> None:
    """Fetch, verify and parse the suite's index into its two cache entries, unless fresh
    (fetched less than `max_age_s` ago)."""
    main_path, catalogue_path = _index_paths(suite)
    entry = cache.read_entry(main_path)
    if entry is not None and entry.get("format") != INDEX_FORMAT:
        entry = None
    fresh = entry is not None and time.time() - float(entry["fetched"]) < max_age_s \
        and catalogue_path.exists()
    if fresh or os.environ.get("STAPMATRIX_OFFLINE"):
        if entry is None:
            raise InfraError(f"no cached package index for {suite.name} and STAPMATRIX_OFFLINE is set")
        return
    logger.info("reading the %s package index from %s", suite.name, suite.url())
    records = parse_index(_download_index(suite).decode("utf-8", "replace"), suite.name)
    interesting = [r for r in records if r[5]]
    catalogue: dict[str, list[list[object]]] = {}
    for name, version, provides, *_ in records:
        catalogue.setdefault(str(name), []).append([version, provides])
    # The catalogue first: a reader that finds a fresh main entry may rely on it.
    cache.write_entry(catalogue_path, {"format": INDEX_FORMAT, "packages": catalogue})
    cache.write_entry(main_path, {"format": INDEX_FORMAT, "url": suite.url(), "fetched": time.time(),
                                  "packages": interesting})


def _read_index(suite: Suite, max_age_s: float = _INDEX_MAX_AGE_S) -> dict[str, Any]:
    """The suite's index entry (fetched first if stale): its packages, URL and fetch time."""
    main_path, _ = _index_paths(suite)
    with FileLock(str(main_path) + ".lock", timeout=900):
        _refresh(suite, max_age_s)
        entry = cache.read_entry(main_path)
    if entry is None:
        raise InfraError(f"the package index of {suite.name} could not be read back from {main_path}")
    return dict(entry)


def _packages_of(entry: dict[str, Any], suite: Suite) -> list[Package]:
    return [Package(str(n), str(v), suite.name, str(d), tuple(p), int(s), str(f), str(h))
            for n, v, p, d, s, f, h in entry["packages"]]


def _load_suite(suite: Suite) -> list[Package]:
    return _packages_of(_read_index(suite), suite)


def _load_catalogue(suite: Suite) -> dict[str, list[list[object]]]:
    main_path, catalogue_path = _index_paths(suite)
    with FileLock(str(main_path) + ".lock", timeout=900):
        entry = cache.read_entry(catalogue_path)
        if entry is None:  # damaged or missing: fetch both again
            cache.write_entry(main_path, {"format": -1})
            _refresh(suite)
            entry = cache.read_entry(catalogue_path)
    if entry is None:
        raise InfraError(f"the package catalogue of {suite.name} could not be read back from {catalogue_path}")
    return dict(entry["packages"])


def series(abi: str) -> tuple[str, str, str]:
    """A kernel ABI name's series: (major.minor, Debian release tag, flavour).
    `6.1.0-50-amd64` -> ("6.1", "", "amd64"); `6.12.117+deb13-amd64` -> ("6.12", "+deb13", "amd64");
    `7.3-amd64` (experimental's release candidate) -> ("7.3", "", "amd64")."""
    match = re.match(r"^(\d+\.\d+)[0-9.]*(?:-\d+)?(\+deb\d+)?-(.*)$", abi)
    if not match:
        return (abi, "", "")
    return (match.group(1), match.group(2) or "", match.group(3))


@dataclass(frozen=True)
class KernelAbi:
    abi: str
    version: str  # the -dbg package's version
    suite: str


def recorded_index(directory: Path, suite: Suite) -> tuple[dict[str, Any], dict[str, list[list[object]]]]:
    """(index entry, catalogue) of a recorded index: DIRECTORY/SUITE.Packages, stanzas as the
    archive's Packages file has them, parsed exactly as a download is (a suite without a file
    has no packages). The selftests plan from these, so that a test about planning does not
    depend on what the archive carries this month."""
    path = directory / f"{suite.name}.Packages"
    text = path.read_text() if path.exists() else ""
    records = parse_index(text, suite.name)
    catalogue: dict[str, list[list[object]]] = {}
    for name, version, provides, *_ in records:
        catalogue.setdefault(str(name), []).append([version, provides])
    entry = {"format": INDEX_FORMAT, "url": f"recorded:{path}", "fetched": path.stat().st_mtime if text else 0,
             "packages": [r for r in records if r[5]]}
    return entry, catalogue


class Archive:
    """The packages of every suite, loaded lazily and once per process; from the mirror, or
    (`recorded`) from recorded index files (recorded_index)."""

    def __init__(self, suites: tuple[Suite, ...] = SUITES, recorded: Path | None = None) -> None:
        self.suites = suites
        self.recorded = recorded
        self._by_suite: dict[str, list[Package]] = {}
        self._by_name: dict[str, dict[str, list[Package]]] = {}
        self._catalogue: dict[str, dict[str, list[list[object]]]] = {}
        self._provided: dict[str, set[str]] = {}
        self._stamps: dict[str, str] = {}  # suite -> where and when its index was fetched
        self._fetched: dict[str, float] = {}  # suite -> when its index was fetched

    def _entry(self, suite: str, max_age_s: float = _INDEX_MAX_AGE_S) -> dict[str, Any]:
        if self.recorded is not None:
            entry, self._catalogue[suite] = recorded_index(self.recorded, SUITE_BY_NAME[suite])
            self._provided[suite] = {str(n) for versions in self._catalogue[suite].values()
                                     for _, provides in versions for n in provides}  # type: ignore[attr-defined]
            return entry
        return _read_index(SUITE_BY_NAME[suite], max_age_s)

    def packages(self, suite: str) -> list[Package]:
        """The packages stapmatrix resolves (kernels, systemtap, compilers) of a suite."""
        if suite not in self._by_suite:
            self._load(suite, self._entry(suite))
        return self._by_suite[suite]

    def _load(self, suite: str, entry: dict[str, Any]) -> None:
        self._stamps[suite] = f"{suite}:{entry.get('url', '')}:{entry.get('fetched', '')}"
        self._fetched[suite] = float(entry.get("fetched") or 0)
        self._by_suite[suite] = _packages_of(entry, SUITE_BY_NAME[suite])
        by_name: dict[str, list[Package]] = {}
        for package in self._by_suite[suite]:
            by_name.setdefault(package.name, []).append(package)
        self._by_name[suite] = by_name

    def refetch(self, max_age_s: float) -> list[str]:
        """Fetch again the indexes read so far that are older than `max_age_s` (a kernel
        published since the cached index was fetched is otherwise refused for up to six
        hours: a new security update, say). The suites fetched again; none when offline or
        recorded."""
        if self.recorded is not None or os.environ.get("STAPMATRIX_OFFLINE"):
            return []
        now = time.time()
        stale = [s for s in list(self._by_suite) if now - self._fetched.get(s, 0) >= max_age_s]
        for suite in stale:
            logger.info("fetching the %s package index again (it was %.0f min old)", suite,
                        (now - self._fetched.get(suite, 0)) / 60)
            self._catalogue.pop(suite, None)
            self._load(suite, _read_index(SUITE_BY_NAME[suite], max_age_s))
        return stale

    def index_age_s(self) -> float:
        """How long ago the oldest index read so far was fetched."""
        return time.time() - min(self._fetched.values()) if self._fetched else 0.0

    def in_suite(self, suite: str, name: str) -> list[Package]:
        self.packages(suite)
        return self._by_name[suite].get(name, [])

    def index_stamps(self, bases: tuple[str, ...]) -> list[str]:
        """When each suite's index was fetched (and from where): what a conclusion drawn from
        the indexes depends on."""
        stamps = []
        for base in bases:
            for suite in BASE_SUITE_SOURCES[base]:
                self.packages(suite)  # loaded (and fetched if stale) once per process
                stamps.append(self._stamps[suite])
        return stamps

    def catalogue(self, suite: str) -> dict[str, list[list[object]]]:
        """name -> [[version, provides]] of every package of a suite (dependency checks)."""
        if self.recorded is not None and suite not in self._catalogue:
            self._entry(suite)
        if suite not in self._catalogue:
            self._catalogue[suite] = _load_catalogue(SUITE_BY_NAME[suite])
            self._provided[suite] = {str(n) for versions in self._catalogue[suite].values()
                                     for _, provides in versions for n in provides}  # type: ignore[attr-defined]
        return self._catalogue[suite]

    def find(self, name: str, version: str | None = None) -> Package | None:
        """The package in the first suite (in preference order) that has it, at that version if given."""
        for suite in self.suites:
            for package in self.in_suite(suite.name, name):
                if version is None or package.version == version:
                    return package
        return None

    def kernel_abis(self) -> list[KernelAbi]:
        """Every amd64 kernel ABI name whose debuginfo package the archive carries. Names of
        metapackages (`linux-image-amd64-dbg`, `linux-image-rt-amd64-dbg`) are not ABIs: an
        ABI starts with its kernel version."""
        found: dict[str, KernelAbi] = {}
        for suite in self.suites:
            for package in self.packages(suite.name):
                name = package.name
                if name.startswith("linux-image-") and name.endswith("-amd64-dbg"):
                    abi = name[len("linux-image-") : -len("-dbg")]
                    if abi[:1].isdigit() and abi not in found:
                        found[abi] = KernelAbi(abi, package.version, suite.name)
        return list(found.values())

    def systemtap_versions(self) -> list[tuple[str, str]]:
        """(version, suite) of every systemtap package in the archive."""
        return [(p.version, p.suite) for s in self.suites for p in self.in_suite(s.name, "systemtap")]

    def unmet(self, package: Package, suites: tuple[str, ...], installed_with: tuple[Package, ...] = ()) -> list[str]:
        """The dependency clauses of `package` that no package of `suites` (or of the set it is
        installed with) satisfies, by name and version or by a Provides of the name."""
        unmet = []
        for clause in package.relations():
            if any(str(a["name"]) == p.name and (a.get("version") is None or _meets(p.version, a["version"]))  # type: ignore[arg-type]
                   for a in clause for p in installed_with):
                continue
            if not any(self._satisfied(alternative, suites) for alternative in clause):
                unmet.append(" | ".join(str(a["name"]) for a in clause))
        return unmet

    def _satisfied(self, relation: dict[str, object], suites: tuple[str, ...]) -> bool:
        name = str(relation["name"])
        constraint = relation.get("version")
        for suite in suites:
            for version, _ in self.catalogue(suite).get(name, []):
                if constraint is None or _meets(str(version), constraint):  # type: ignore[arg-type]
                    return True
            if name in self._provided[suite]:
                return True
        return False


def _meets(version: str, constraint: tuple[str, str]) -> bool:
    op, wanted = constraint
    have, want = Version(version), Version(wanted)
    return {"<<": have < want, "<=": have <= want, "=": have == want, ">=": have >= want,
            ">>": have > want}.get(op, False)


def download(package: Package, directory: Path, progress: Progress) -> Path:
    """Download a .deb from the pool of the suite that lists it, checking the size and SHA256
    the signed index gives (no byte more is read, within the time that size allows); reports
    size and rate every few seconds (a -dbg package is about 1 GB)."""
    if not package.filename:
        raise InfraError(f"{package.pinned}: the index gave no file for it")
    url = f"{SUITE_BY_NAME[package.suite].url()}/{package.filename}"
    target = directory / Path(package.filename).name
    digest = hashlib.sha256()
    started = time.monotonic()
    last = [started]
    done = [0]
    mib = 1024 * 1024
    limit = package.size or UNLISTED_LIMIT

    def sink(chunk: bytes) -> None:
        out.write(chunk)
        digest.update(chunk)
        done[0] += len(chunk)
        now = time.monotonic()
        if now - last[0] >= 10:
            progress(Download(package.name, done[0], package.size, now - started))
            last[0] = now

    try:
        with target.open("wb") as out:
            _stream(url, f"{package.pinned} (its signed index lists the size)", limit, sink)
    except _Bounded:
        target.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        target.unlink(missing_ok=True)
        if isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError):
            raise InfraError(f"downloading {url} failed: the mirror sent nothing for {STALL_S:.0f} s") from None
        raise InfraError(f"downloading {url} failed: {error}") from None
    if digest.hexdigest() != package.sha256:
        target.unlink(missing_ok=True)
        raise InfraError(f"{url}: SHA256 does not match the signed index (a broken download or a changed mirror)")
    seconds = time.monotonic() - started
    if package.size > 50 * mib:
        progress(Download(package.name, done[0], package.size, seconds, finished=True))
    return target
