"""One rule for every cache entry (harness/cache.py), on real files in a cache of the test's
own (STAPMATRIX_CACHE): keyed by all its content depends on, written atomically, checked when
read; a damaged entry is discarded with a warning and rebuilt, never trusted and never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from debian.debian_support import Version

from harness import archive, cache, debian_names, guest, kernel_store, kernels, logs, modules, settings, suites
from harness.errors import DockerUnavailableError, InfraError
from harness.kernel_store import KernelTree
from harness.outcomes import Outcome
from harness.scripts import load_script
from harness.specs import parse_kernel_spec

ROOT = Path(__file__).resolve().parent.parent
USER_CACHE = settings.cache_dir()  # the developer's cache, read before any test points elsewhere


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STAPMATRIX_CACHE", str(root))
    return root


def warned(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)


# --- the rule itself --------------------------------------------------------------------------

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "flipped byte": lambda data: data.replace(b'"v": 1', b'"v": 7'),
    "not UTF-8": lambda data: b"\xff\xfe" + data,
    "plain JSON of another version": lambda data: json.dumps({"v": 1}).encode(),
    "garbage": lambda data: os.urandom(64),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_entry_is_discarded_with_a_warning(tmp_path: Path, damage: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "entry.json"
    cache.write_entry(path, {"v": 1, "text": "x" * 100})
    assert cache.read_entry(path) == {"v": 1, "text": "x" * 100}
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    assert cache.read_entry(path) is None
    assert not path.exists() and warned(caplog, "discarding it and rebuilding")
    cache.write_entry(path, {"v": 2})  # and it is rebuilt
    assert cache.read_entry(path) == {"v": 2}


def test_a_directory_where_an_entry_belongs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Our own case: once, a directory there made every later write fail."""
    path = tmp_path / "entry.json"
    (path / "inside").mkdir(parents=True)
    assert cache.read_entry(path) is None and warned(caplog, "unreadable")
    (path / "inside").mkdir(parents=True)
    cache.write_entry(path, {"v": 3})
    assert cache.read_entry(path) == {"v": 3}


# A disk as slow as a loaded CI machine's: each fsync also waits 0.3 s, so that a kill at a
# random moment lands inside a write most of the time (on a fast disk, 30 kills could all
# land between writes and the test said nothing about a torn one).
WRITER = """
import os, sys, time
from pathlib import Path
from harness import cache
real_fsync = os.fsync
def slow_fsync(fd):
    real_fsync(fd)
    time.sleep(0.3)
os.fsync = slow_fsync
path = Path(sys.argv[1])
n = 0
while True:
    n += 1
    cache.write_entry(path, {"n": n, "blob": str(n) * 400_000})
"""


def test_a_writer_killed_mid_write_never_leaves_half_an_entry(tmp_path: Path) -> None:
    """A real process writing ~0.5 MB entries in a loop, killed with SIGKILL at random
    moments: the entry is always a whole one. (Its temporary file stays behind, named so
    that nothing takes it for an entry.)"""
    path = tmp_path / "entry.json"
    for attempt in range(30):  # until one kill lands mid-write, leaving a temporary file
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT)
        started = time.monotonic()
        while not path.exists() and time.monotonic() < started + 30:  # its first whole entry
            time.sleep(0.01)
        time.sleep(0.05 + 0.037 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        entry = cache.read_entry(path)
        assert entry is not None and entry["blob"] == str(entry["n"]) * 400_000
        if attempt >= 3 and list(tmp_path.glob(".entry.json.*.tmp")):
            break
    assert {p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")} == {"entry.json"}
    # The killed writers' temporary files: kept while a writer could still be alive, removed by
    # the next write once they are an hour old.
    leftovers = list(tmp_path.glob(".entry.json.*.tmp"))
    assert leftovers
    cache.write_entry(path, {"n": 0, "blob": ""})
    assert all(p.exists() for p in leftovers)
    for leftover in leftovers:
        os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    cache.write_entry(path, {"n": 0, "blob": ""})
    assert not list(tmp_path.glob(".entry.json.*.tmp"))


# --- compile results ----------------------------------------------------------------------------

def _kernel(tmp_path: Path) -> KernelTree:
    return KernelTree(key="k1", root=tmp_path, release="6.12.117+deb13-amd64", cc="gcc-14", cc_version="14",
                      vmlinuz="boot/vmlinuz", vmlinux="vmlinux", build_id="", mount_points=(), identity="test")


def _stored_compile(tmp_path: Path, name: str, text: str) -> tuple[Path, str, Path]:
    """A script compiled (a real module file stands in for stap's output) and stored."""
    script_path = tmp_path / f"{name}.stp"
    script_path.write_text(text)
    script = load_script(script_path)
    module = modules.module_name(script.name)
    entry = settings.cache_dir() / "modules" / modules._cache_key("image-1", _kernel(tmp_path), script)
    work = tmp_path / f"work-{name}"
    work.mkdir()
    (work / "compile.log").write_text("$ stap -p4 ...\n")
    (work / f"{module}.ko").write_bytes(b"\x7fELF" + os.urandom(4096))
    modules._store(entry, module, work / "compile.log", work / f"{module}.ko",
                   {"ok": True, "outcome": None, "detail": "", "seconds": 1.0})
    return entry, module, work / f"{module}.ko"


def test_same_text_under_another_name_is_another_entry(tmp_path: Path, cache_root: Path) -> None:
    """The crash of issue 12: a copy or rename of a script found the entry of the old name,
    whose module file is sm_OLDNAME.ko. The key now holds the module name."""
    text = "probe begin { println(\"hi\"); exit() }\n"
    entry_a, module_a, _ = _stored_compile(tmp_path, "first", text)
    (tmp_path / "second.stp").write_text(text)
    script_b = load_script(tmp_path / "second.stp")
    entry_b = cache_root / "modules" / modules._cache_key("image-1", _kernel(tmp_path), script_b)
    assert entry_a != entry_b and entry_a.is_dir()
    out = tmp_path / "out"
    out.mkdir()
    assert modules._cached(entry_b, modules.module_name("second"), out / "log", out / "sm_second.ko", "second") is None
    found = modules._cached(entry_a, module_a, out / "log", out / f"{module_a}.ko", "first")
    assert found is not None and found.ok and found.cached and (out / f"{module_a}.ko").exists()


@pytest.mark.parametrize("damage", ["module changed", "result truncated", "module missing", "log missing",
                                    "module a FIFO", "log a FIFO"])
def test_damaged_compile_entry_is_compiled_again(tmp_path: Path, cache_root: Path, damage: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    entry, module, _ = _stored_compile(tmp_path, "probe_one", "probe begin { exit() }\n")
    if damage == "module changed":
        with (entry / f"{module}.ko").open("r+b") as handle:
            handle.seek(100)
            handle.write(b"\0\0\0\0")
    elif damage == "result truncated":
        os.truncate(entry / "result.json", 20)
    elif damage == "module missing":
        (entry / f"{module}.ko").unlink()
    elif damage.endswith("a FIFO"):  # reading it would wait for a writer forever
        name = f"{module}.ko" if damage.startswith("module") else "compile.log"
        (entry / name).unlink()
        os.mkfifo(entry / name)
    else:
        (entry / "compile.log").unlink()
    out = tmp_path / "out"
    out.mkdir()
    assert modules._cached(entry, module, out / "log", out / f"{module}.ko", "probe_one") is None
    assert not entry.exists() and warned(caplog, "discarding" if damage == "result truncated" else "compiling again")


def test_a_failed_compile_of_the_script_is_cached_but_not_an_infrastructure_failure() -> None:
    """Only a verdict about the script is cached: the classifier tells the two apart."""
    assert logs.INFRA_FAILURE_RE.search("cc1: out of memory allocating 65536 bytes")
    assert logs.INFRA_FAILURE_RE.search("/tmp/stapXYZ/x.o: No space left on device")
    assert logs.INFRA_FAILURE_RE.search("gcc: fatal error: Killed signal terminated program cc1")
    assert not logs.INFRA_FAILURE_RE.search("semantic error: no match (similar functions: vfs_read)")
    assert logs.classify_compile_failure("Pass 4: compilation failed.  [man error::pass4]") is Outcome.FAIL_PASS4


# --- package indexes ---------------------------------------------------------------------------

SUITE = suites.SUITE_BY_NAME["trixie-security"]  # a small real index


def _index_path() -> Path:
    settings.reset_mirrors()
    return archive._index_paths(SUITE)[0]


@pytest.fixture
def real_index(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real cached index in the test's cache: the developer's copy, else fetched now."""
    path = _index_path()
    mine = USER_CACHE / "indexes" / path.name
    if cache.read_entry(mine) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mine, path)
    else:
        archive._load_suite(SUITE)
    assert cache.read_entry(path) is not None
    return path


def test_truncated_index_is_fetched_again(real_index: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """A real index cut in half (a full disk or a kill, before writes were atomic): discarded,
    and fetched again even though it was younger than the refresh age."""
    os.truncate(real_index, real_index.stat().st_size // 2)
    monkeypatch.setenv("STAPMATRIX_OFFLINE", "1")
    with pytest.raises(InfraError, match="no cached package index for trixie-security and STAPMATRIX_OFFLINE is set"):
        archive._load_suite(SUITE)
    assert warned(caplog, "discarding it and rebuilding") and not real_index.exists()
    monkeypatch.delenv("STAPMATRIX_OFFLINE")
    packages = archive._load_suite(SUITE)
    assert packages and all(debian_names.valid_name(p.name) for p in packages)
    assert cache.read_entry(real_index) is not None


def test_index_of_another_format_is_not_trusted(real_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = cache.read_entry(real_index)
    cache.write_entry(real_index, dict(entry, format=archive.INDEX_FORMAT - 1))
    monkeypatch.setenv("STAPMATRIX_OFFLINE", "1")
    with pytest.raises(InfraError, match="no cached package index"):
        archive._load_suite(SUITE)


# --- the KVM verdict ---------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="choose_accel reads no verdict without /dev/kvm")
def test_damaged_kvm_verdict_is_probed_again(tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A verdict for this boot is used as it is; a damaged one is discarded and the probe runs
    again (here it needs Docker, which is pointed at nothing: a clean error, not a traceback)."""
    from harness import docker_env

    monkeypatch.delenv("STAPMATRIX_ACCEL", raising=False)
    verdict = cache_root / "kvm-probe.json"
    cache.write_entry(verdict, {"boot_id": docker_env.boot_id(), "accel": "tcg", "why": "probed"})
    assert guest.choose_accel("no-such-image", tmp_path) == ("tcg", "probed (probed earlier since this host booted)")
    verdict.write_bytes(verdict.read_bytes()[:-7])
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    docker_env.client.cache_clear()
    try:
        with pytest.raises(DockerUnavailableError):
            guest.choose_accel("no-such-image", tmp_path)
    finally:
        docker_env.client.cache_clear()
    assert warned(caplog, "discarding it and rebuilding") and not verdict.exists()


# --- kernel store manifests --------------------------------------------------------------------

def _make_tree(root: Path) -> dict[str, object]:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.12.0").write_bytes(b"MZ" + b"\0" * 64)
    (root / "usr/lib/debug/boot").mkdir(parents=True)
    (root / "usr/lib/debug/boot/vmlinux-6.12.0").write_bytes(b"\x7fELF")
    return {"release": "6.12.0", "cc": "gcc-14", "cc_version": "14", "vmlinuz": "boot/vmlinuz-6.12.0",
            "vmlinux": "usr/lib/debug/boot/vmlinux-6.12.0", "build_id": "ab" * 20, "identity": "test tree"}


def test_damaged_kernel_manifest_rebuilds_the_tree(cache_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    made: list[Path] = []

    def make(root: Path) -> dict[str, object]:
        made.append(root)
        return _make_tree(root)

    tree = kernel_store.ensure("test-key", "a test tree", make, lambda message: None)
    assert tree.release == "6.12.0" and tree.mount_points == ("boot/vmlinuz-6.12.0", "usr/lib/debug")
    assert kernel_store.ensure("test-key", "a test tree", make, lambda message: None) == tree and len(made) == 1
    manifest = kernel_store.store_dir() / "test-key" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("6.12.0", "6.12.9", 1))
    assert kernel_store.find("test-key") is None and warned(caplog, "digest does not match")
    assert kernel_store.ensure("test-key", "a test tree", make, lambda message: None).release == "6.12.0"
    assert len(made) == 2
    assert not list(kernel_store.store_dir().glob(".test-key.partial-*"))


def test_a_kernel_newer_than_the_cached_index_is_looked_up_again(cache_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An index cached an hour ago, before the newest 6.12 security update of bookworm was
    published (its packages taken out of a real cached index): planning that kernel fetches
    bookworm-security's index again before refusing it, instead of calling it "not in the
    archive" for up to six hours. The other suites' copies are fresh and stay as they are."""
    settings.reset_mirrors()
    (cache_root / "indexes").mkdir(parents=True)
    for suite in suites.SUITES:
        for path in archive._index_paths(suite):
            mine = USER_CACHE / "indexes" / path.name
            if cache.read_entry(mine) is not None:
                shutil.copy(mine, path)
        entry = archive._read_index(suite)  # the developer's copy, or fetched now
        cache.write_entry(archive._index_paths(suite)[0], dict(entry, fetched=time.time()))
    stale_suite = suites.SUITE_BY_NAME["bookworm-security"]
    entry = archive._read_index(stale_suite)
    newest = max((p for p in entry["packages"] if re.fullmatch(r"linux-image-6\.12\.\d+\+deb12-amd64-dbg", p[0])),
                 key=lambda p: Version(p[1]))
    abi = newest[0].removeprefix("linux-image-").removesuffix("-dbg")
    before = [p for p in entry["packages"] if abi not in p[0]]
    cache.write_entry(archive._index_paths(stale_suite)[0], dict(entry, packages=before, fetched=time.time() - 3600))
    caplog.set_level(logging.INFO)
    kernel = kernels.resolve(parse_kernel_spec(abi, "test"), "test", archive.Archive())
    assert kernel.origin == "bookworm-security" and kernel.release == abi
    fetched_again = [r.getMessage() for r in caplog.records if "package index again" in r.getMessage()]
    assert fetched_again == ["fetching the bookworm-security package index again (it was 60 min old)"]
