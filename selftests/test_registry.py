"""Images from a registry, and kernel trees as tarballs.

On a REAL registry: Debian's `docker-registry` (distribution 2.8), started by the fixture on a
free loopback port with its storage in a temporary directory (Docker pushes to and pulls from
127.0.0.0/8 over plain HTTP without configuration). The images of one real cell (the cell of
selftests/test_real.py) are pushed, removed from the local daemon, and the cell runs again
with no image built: counted from the typed events in the run's events.jsonl, never from
text. Then the registry holds another image under the runner's tag: it is refused, the runner
is built here, and the cell still passes.

Without Docker: the values STAPMATRIX_REGISTRY takes, and kernel store tarballs as an
attacker writes them (kernel_pack.unpack refuses each, and leaves no trace in the store).
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

from harness import cache, docker_env, kernel_pack, kernel_store, registry
from harness.cli import main
from harness.errors import InfraError, MatrixError
from harness.outcomes import Outcome
from harness.progress import read_events
from selftests.cells import CellRun
from selftests.registry_server import free_port, loopback_registry

__all__ = ["loopback_registry"]  # a fixture, used by name
ROOT = Path(__file__).resolve().parent.parent
BEGIN_END = ROOT / "tests" / "stap" / "begin_end.stp"

# ----------------------------------------------------------------------------------------
# STAPMATRIX_REGISTRY values


@pytest.mark.parametrize("value", ["ghcr.io/owner/stapmatrix", "127.0.0.1:5000/stapmatrix", "localhost:5000/a/b",
                                   "registry.example:443/team-x/stap_matrix", "[::1]:5000/stapmatrix"])
def test_registry_references_accepted(value: str) -> None:
    found = registry.from_environment({"STAPMATRIX_REGISTRY": value})
    assert found is not None and found.reference == value and not found.push
    assert found.remote("stapmatrix/stap:0123456789abcdef") == f"{value}/stap:0123456789abcdef"


@pytest.mark.parametrize("value", ["owner/stapmatrix", "https://ghcr.io/owner/x", "ghcr.io/Owner/x", "ghcr.io",
                                   "ghcr.io/owner/x:latest", "ghcr.io/owner/x@sha256:00", "ghcr.io/owner x",
                                   "ghcr.io/owner/x;rm -rf /", "ghcr.io//x", "ghcr.io/x/", "ghcr.io/" + "a" * 300,
                                   "ghcr.io/owner/x\n"])
def test_registry_references_refused_in_one_line_naming_the_value(value: str) -> None:
    with pytest.raises(MatrixError) as error:
        registry.from_environment({"STAPMATRIX_REGISTRY": value})
    text = str(error.value)
    assert "\n" not in text and "STAPMATRIX_REGISTRY=" in text and "e.g. ghcr.io/OWNER/stapmatrix" in text
    assert repr(value[:registry.REFERENCE_LIMIT]) in text


def test_registry_push_values() -> None:
    assert registry.from_environment({}) is None, "without the variable nothing changes"
    pushing = registry.from_environment({"STAPMATRIX_REGISTRY": "127.0.0.1:1/s", "STAPMATRIX_REGISTRY_PUSH": "1"})
    assert pushing is not None and pushing.push
    with pytest.raises(MatrixError, match="STAPMATRIX_REGISTRY_PUSH='yes': give 1"):
        registry.from_environment({"STAPMATRIX_REGISTRY": "127.0.0.1:1/s", "STAPMATRIX_REGISTRY_PUSH": "yes"})
    with pytest.raises(MatrixError, match="STAPMATRIX_REGISTRY is not set"):
        registry.from_environment({"STAPMATRIX_REGISTRY_PUSH": "1"})


def test_a_bad_registry_is_bad_input_before_anything_runs(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STAPMATRIX_REGISTRY", "https://ghcr.io/x")
    registry.reset()
    try:
        assert main(["check", "--matrix", str(ROOT / "no-such.yaml")]) == 2
        assert main(["run", "--kernel", "6.12.1-amd64", "--stap", "deb:5.6-1", str(BEGIN_END)]) == 2
    finally:
        registry.reset()
    assert capsys.readouterr().err.count("STAPMATRIX_REGISTRY='https://ghcr.io/x' is not a registry reference") == 2


# ----------------------------------------------------------------------------------------
# Kernel store tarballs

KEY = "deb-0123456789abcdef01234567"


def make_entry(store_cache: Path, key: str = KEY) -> Path:
    """A small but complete store entry: vmlinuz, a vmlinux, the links a Debian tree has
    (relative, and absolute ones that name container paths)."""
    entry = store_cache / "kernels" / key
    root = entry / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot/vmlinuz-6.12.1-amd64").write_bytes(b"bzImage" * 100)
    (root / "usr/lib/debug/boot").mkdir(parents=True)
    (root / "usr/lib/debug/boot/vmlinux-6.12.1-amd64").write_bytes(b"\x7fELF" + os.urandom(4096))
    (root / "usr/lib/debug/vmlinux-6.12.1-amd64").symlink_to("/usr/lib/debug/boot/vmlinux-6.12.1-amd64")
    (root / "usr/lib/modules/6.12.1-amd64").mkdir(parents=True)
    (root / "usr/src/linux-headers-6.12.1-amd64").mkdir(parents=True)
    (root / "usr/lib/modules/6.12.1-amd64/build").symlink_to("../../../src/linux-headers-6.12.1-amd64")
    manifest = {"release": "6.12.1-amd64", "cc": "gcc-14", "cc_version": "14", "vmlinuz": "boot/vmlinuz-6.12.1-amd64",
                "vmlinux": "usr/lib/debug/boot/vmlinux-6.12.1-amd64", "build_id": "ab" * 20, "identity": "test",
                "version": kernel_store.MANIFEST_VERSION, "mount_points": list(kernel_store.mount_points(root))}
    cache.write_entry(entry / "manifest.json", manifest)
    return entry


@pytest.fixture
def two_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(where an entry is packed, where it is unpacked): STAPMATRIX_CACHE switched between them."""
    return tmp_path / "packed-here", tmp_path / "unpacked-here"


def use_cache(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("STAPMATRIX_CACHE", str(path))


@pytest.mark.parametrize("kind", ["zst", "xz"])
def test_pack_and_unpack_round_trip(two_caches: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    kind: str) -> None:
    source, target = two_caches
    use_cache(monkeypatch, source)
    make_entry(source)
    if kind == "zst" and not shutil.which("zstd"):
        pytest.skip("zstd is not installed")
    monkeypatch.setattr(kernel_pack, "compressor", lambda: kind)
    packed = kernel_pack.pack(KEY, tmp_path / "out")
    assert packed.name == f"{KEY}.tar.{kind}" and not list((tmp_path / "out").glob(".*"))
    use_cache(monkeypatch, target)
    assert kernel_pack.archives([tmp_path / "out"]) == [packed]
    assert kernel_pack.unpack(packed) == (KEY, True)
    tree = kernel_store.find(KEY)
    assert tree is not None and tree.release == "6.12.1-amd64"
    assert os.readlink(tree.root / "usr/lib/debug/vmlinux-6.12.1-amd64") == "/usr/lib/debug/boot/vmlinux-6.12.1-amd64"
    assert (tree.root / tree.vmlinux).read_bytes() == (source / "kernels" / KEY / "root" / tree.vmlinux).read_bytes()
    assert kernel_pack.unpack(packed) == (KEY, False), "an entry the store has is left as it is"
    assert main(["kernel-store", "unpack", str(tmp_path / "out")]) == 0


def hostile(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], key: str = KEY,
            manifest: dict[str, object] | None = None) -> Path:
    """KEY.tar.xz holding a valid manifest and vmlinuz/vmlinux, then `members`."""
    source = tmp_path / "honest"
    entry = make_entry(source, key) if not (source / "kernels" / key).exists() else source / "kernels" / key
    if manifest is not None:
        cache.write_entry(entry / "manifest.json", manifest)
    path = tmp_path / f"{key}.tar.xz"
    with lzma.open(path, "wb") as xz, tarfile.open(fileobj=xz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(entry / "manifest.json", arcname="manifest.json")
        tar.add(entry / "root", arcname="root")
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o644
    return info, data


HOSTILE = {
    "dot-dot name": [member("root/../../escaped")],
    "absolute name": [member("/tmp/stapmatrix-escaped")],
    "outside root/": [member("elsewhere/file")],
    "link out by ..": [member("root/out", tarfile.SYMTYPE, link="../../../../etc")],
    "absolute link with ..": [member("root/out", tarfile.SYMTYPE, link="/usr/../../etc/shadow")],
    "hard link out": [member("root/passwd", tarfile.LNKTYPE, link="/etc/passwd")],
    "device": [member("root/dev-sda", tarfile.BLKTYPE)],
    "fifo": [member("root/fifo", tarfile.FIFOTYPE)],
    "a file through an absolute link": [member("root/x", tarfile.SYMTYPE, link="/tmp"),
                                        member("root/x/stapmatrix-escaped")],
    "a file through a relative link": [member("root/y", tarfile.SYMTYPE, link="boot"),
                                       member("root/y/../../../tmp/stapmatrix-escaped")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_unpack_refuses_hostile_tarballs(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = hostile(tmp_path, HOSTILE[case])
    use_cache(monkeypatch, tmp_path / "target")
    with pytest.raises(InfraError, match="kernel-store unpack") as error:
        kernel_pack.unpack(archive)
    assert "\n" not in str(error.value)
    assert list((tmp_path / "target" / "kernels").iterdir()) == [tmp_path / "target" / "kernels" / f".{KEY}.lock"], \
        "a refused tarball leaves nothing in the store"
    assert not Path("/tmp/stapmatrix-escaped").exists()


def test_unpack_bounds_size_and_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = hostile(tmp_path, [member("root/big", data=b"\0" * 100_000)])
    use_cache(monkeypatch, tmp_path / "target")
    monkeypatch.setattr(kernel_pack, "UNPACKED_LIMIT", 50_000)
    with pytest.raises(InfraError, match="past"):
        kernel_pack.unpack(archive)
    monkeypatch.setattr(kernel_pack, "UNPACKED_LIMIT", 10**9)
    monkeypatch.setattr(kernel_pack, "MEMBER_LIMIT", 5)
    with pytest.raises(InfraError, match="past 5 members"):
        kernel_pack.unpack(archive)


def test_unpack_checks_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest must be an intact entry, and name regular files and mount points inside the tree."""
    use_cache(monkeypatch, tmp_path / "target")
    make_entry(tmp_path / "honest")
    entry = tmp_path / "honest" / "kernels" / KEY
    good = cache.read_entry(entry / "manifest.json")
    for change, expected in (({"vmlinux": "usr/lib/debug/vmlinux-6.12.1-amd64"}, "vmlinux .* not a regular file"),
                             ({"vmlinuz": "../../etc/passwd"}, "vmlinuz .* not a regular file"),
                             ({"mount_points": ["boot", "/etc"]}, "mount point '/etc'"),
                             ({"version": 99}, "no intact manifest")):
        archive = hostile(tmp_path, [], manifest=dict(good, **change))
        with pytest.raises(InfraError, match=expected):
            kernel_pack.unpack(archive)
    (entry / "root/usr/lib/outside").symlink_to("/etc")
    archive = hostile(tmp_path, [], manifest=dict(good, mount_points=["usr/lib/outside"]))
    with pytest.raises(InfraError, match="kernel-store unpack"):
        kernel_pack.unpack(archive)
    (entry / "root/usr/lib/outside").unlink()
    archive = hostile(tmp_path, [])
    text = archive.read_bytes()
    archive.write_bytes(text.replace(b'"release": "6.12.1-amd64"', b'"release": "6.12.2-amd64"'))
    with pytest.raises(InfraError):
        kernel_pack.unpack(archive)  # a changed byte: xz's check or the manifest's digest
    for name, error in (("not-a-key.tar.xz", MatrixError), (f"{KEY}.tar.gz", MatrixError)):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(error, match="not a KEY.tar.zst"):
            kernel_pack.unpack(tmp_path / name)
    (tmp_path / "junk" / f"{KEY}.tar.zst").parent.mkdir()
    (tmp_path / "junk" / f"{KEY}.tar.zst").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(InfraError, match="neither a zstd nor an xz"):
        kernel_pack.unpack(tmp_path / "junk" / f"{KEY}.tar.zst")
    assert kernel_store.find(KEY) is None


def test_pack_names_a_missing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    use_cache(monkeypatch, tmp_path)
    assert main(["kernel-store", "pack", KEY, "--output", str(tmp_path / "o")]) == 2
    assert "the kernel store has no such entry" in capsys.readouterr().err
    assert main(["kernel-store", "pack", KEY, "--output", str(tmp_path / "o"), "--missing-ok"]) == 0
    assert main(["kernel-store", "pack", "deb-nothex", "--output", str(tmp_path / "o")]) == 2


# ----------------------------------------------------------------------------------------
# A real registry


def counted(run_dir: Path) -> Counter[str]:
    return Counter(str(record["event"]) for record in read_events(run_dir))


def run_dir_of(result_dir: str) -> Path:
    """The run directory of a cell (artifacts.dir is RUN/CELL, absolute here)."""
    return Path(result_dir).parent


def remove_local(tags: list[str]) -> None:
    client = docker_env.client()
    for tag in tags:
        client.images.remove(tag, force=True, noprune=False)


@pytest.mark.real
@pytest.mark.removes_local_images
@pytest.mark.xdist_group("real-cell")
def test_a_cell_from_the_registry_builds_no_image(loopback_registry: str, run_cell: CellRun, deb_kernel: str,
                                                  deb_stap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAPMATRIX_REGISTRY", loopback_registry)
    monkeypatch.setenv("STAPMATRIX_REGISTRY_PUSH", "1")
    registry.reset()
    try:
        matrix = tmp_path / "one.yaml"
        matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [{BEGIN_END}]\n")
        from harness.archive import Archive
        from harness.images import cell_tags
        from harness.session import plan_matrix

        (cell,) = plan_matrix(matrix, Archive())[1].cells
        tags = cell_tags(cell)
        # Images built before images carried their tag label cannot be shared: built again.
        remove_local([t for t in tags if docker_env.image_exists(t)
                      and docker_env.client().images.get(t).labels.get(registry.TAG_LABEL) != t])
        started = time.monotonic()
        assert main(["images", "--matrix", str(matrix)]) == 0  # builds what is missing, pushes all
        print(f"images made and pushed in {time.monotonic() - started:.0f} s: {tags}")
        remove_local(tags)
        assert not [t for t in tags if docker_env.image_exists(t)]

        code, results, seconds = run_cell("pulled", BEGIN_END)
        events = counted(run_dir_of(results["begin_end"].artifacts["dir"]))
        print(f"cell with every image pulled: {seconds:.0f} s, images stage "
              f"{results['begin_end'].stages['images'].seconds:.0f} s; events {dict(events)}")
        assert code == 0 and results["begin_end"].outcome is Outcome.PASS
        assert events["ImageBuilt"] == 0 and events["ImageBuildStarted"] == 0, "an image was built"
        assert events["ImagePulled"] == len(tags) and events["ImagePullRefused"] == 0

        # The registry holds another image under the runner's tag (the base image, pushed
        # as the runner): refused, removed, the runner built here and pushed.
        runner = tags[-1]
        wrong = registry.Registry(loopback_registry, True).remote(runner)
        client = docker_env.client()
        client.images.get(tags[0]).tag(*wrong.rsplit(":", 1))
        for chunk in client.api.push(*wrong.rsplit(":", 1), stream=True, decode=True):
            assert "error" not in chunk, chunk
        client.images.remove(wrong)
        remove_local([runner])
        code, results, seconds = run_cell("refused", BEGIN_END)
        run_dir = run_dir_of(results["begin_end"].artifacts["dir"])
        events = counted(run_dir)
        print(f"cell with a wrong runner in the registry: {seconds:.0f} s; events {dict(events)}")
        assert code == 0 and results["begin_end"].outcome is Outcome.PASS
        refused = [r for r in read_events(run_dir) if r["event"] == "ImagePullRefused"]
        assert [r["tag"] for r in refused] == [runner]
        assert f"says {tags[0]!r}: it was built from another recipe" in str(refused[0]["reason"])
        assert events["ImageBuilt"] == 1 and events["ImagePushed"] == 1
        assert not docker_env.image_exists(wrong), "the refused image's name is gone from the daemon"
        assert json.loads(json.dumps(client.images.get(runner).labels))[registry.TAG_LABEL] == runner
    finally:
        registry.reset()


def test_an_unreachable_or_empty_registry_means_building(loopback_registry: str) -> None:
    """No registry at the address, or the image not in it: False and one event saying why
    (the caller builds). Needs the Docker daemon only."""
    if not docker_env.daemon_answers():
        pytest.skip("no Docker daemon answers")
    events: list[object] = []
    tag = "stapmatrix/runner:0000000000000000"
    nobody = registry.Registry(f"127.0.0.1:{free_port()}/stapmatrix", True)
    assert registry.pull(tag, events.append, nobody) is False
    assert registry.pull(tag, events.append, registry.Registry(loopback_registry, True)) is False
    assert [type(e).__name__ for e in events] == ["ImagePullFailed", "ImagePullFailed"]
    for event in events:
        assert "\n" not in event.text() and "building it" in event.text()  # type: ignore[attr-defined]
    assert registry.push(tag, events.append, nobody) is False  # no such local image: one line, no exception
    assert type(events[-1]).__name__ == "ImagePushFailed"
