"""Where the harness keeps things on the host, and the few knobs set from the environment.

The Debian mirror is configuration, never a host name in this code. In order:
1. `STAPMATRIX_MIRROR` (and `STAPMATRIX_SECURITY_MIRROR`): an explicit choice for this run
   wins, so a test or a user can point one run at a local or broken mirror;
2. the host's apt sources, where they name a Debian suite (a Debian host is already
   configured for the mirror it can reach);
3. debootstrap's own default, read from its suite script or the program itself.
The security archive is the host's `*-security` source, else the main mirror's sibling
`debian-security` tree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from debian import deb822

from harness.errors import MatrixError

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental")
URL_RE = re.compile(r"^(https?|file)://[A-Za-z0-9._~:/@%+-]+$")


def cache_dir() -> Path:
    """Package indexes, compiled modules, kernel trees and the KVM verdict live here across runs."""
    base = os.environ.get("STAPMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stapmatrix"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifacts_root() -> Path:
    return Path(os.environ.get("STAPMATRIX_ARTIFACTS", "artifacts")).resolve()


@dataclass(frozen=True)
class Mirror:
    url: str
    origin: str  # where the URL came from, for messages and `stapmatrix check`


def _source_entries(sources: Path = APT_SOURCES, sources_dir: Path = APT_SOURCES_DIR) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every deb source the host's apt configuration lists."""
    entries: list[tuple[str, list[str]]] = []
    one_line = [sources] + sorted(sources_dir.glob("*.list")) if sources_dir.is_dir() else [sources]
    for path in one_line:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        try:
            with path.open(errors="replace") as stream:
                for paragraph in deb822.Deb822.iter_paragraphs(stream):
                    if "deb" in paragraph.get("Types", "").split() and paragraph.get("Enabled", "yes") != "no":
                        for uri in paragraph.get("URIs", "").split():
                            entries.append((uri, paragraph.get("Suites", "").split()))
        except OSError:
            continue
    return entries


def _host_mirror(security: bool) -> str | None:
    for uri, suites in _source_entries():
        for suite in suites:
            codename, _, pocket = suite.partition("-")
            if codename in DEBIAN_CODENAMES and (pocket == "security") == security and URL_RE.match(uri):
                return uri.rstrip("/")
    return None


def _debootstrap_default() -> str | None:
    """debootstrap's default mirror: `default_mirror URL` in the suite script, else DEF_MIRROR."""
    script = DEBOOTSTRAP_SCRIPTS / "sid"
    for path, pattern in ((script, r"^\s*default_mirror\s+(\S+)"), (DEBOOTSTRAP, r'^DEF_MIRROR="([^"]+)"')):
        try:
            match = re.search(pattern, path.read_text(errors="replace"), re.MULTILINE)
        except OSError:
            continue
        if match:
            return match.group(1).rstrip("/")
    return None


def _checked(url: str, origin: str) -> Mirror:
    if not URL_RE.match(url):
        raise MatrixError(f"{origin}: mirror {url!r} is not an http://, https:// or file:// URL")
    return Mirror(url.rstrip("/"), origin)


@cache
def mirror() -> Mirror:
    """The Debian archive used for indexes, debootstrap and apt inside images."""
    if os.environ.get("STAPMATRIX_MIRROR"):
        return _checked(os.environ["STAPMATRIX_MIRROR"], "STAPMATRIX_MIRROR")
    host = _host_mirror(security=False)
    if host:
        return _checked(host, "the host's apt sources")
    default = _debootstrap_default()
    if default:
        return _checked(default, "debootstrap's default")
    raise MatrixError(
        "no Debian mirror configured: set STAPMATRIX_MIRROR=URL (a Debian archive), or install "
        "debootstrap, whose default mirror is used"
    )


@cache
def security_mirror() -> Mirror:
    """The archive of the security suites (bookworm-security, trixie-security)."""
    if os.environ.get("STAPMATRIX_SECURITY_MIRROR"):
        return _checked(os.environ["STAPMATRIX_SECURITY_MIRROR"], "STAPMATRIX_SECURITY_MIRROR")
    main = mirror()
    if main.origin == "the host's apt sources":
        host = _host_mirror(security=True)
        if host:
            return _checked(host, "the host's apt sources")
    sibling = re.sub(r"/debian$", "/debian-security", main.url)
    if sibling == main.url:
        sibling = main.url + "-security"
    return Mirror(sibling, f"the debian-security tree beside {main.url} ({main.origin})")


def mirror_url() -> str:
    return mirror().url


def reset_mirrors() -> None:
    """Forget the cached choice (tests change the environment)."""
    mirror.cache_clear()
    security_mirror.cache_clear()
