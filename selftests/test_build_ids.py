"""Build-ids that are real (issue 18, item 9), on ELF files made here by the real assembler and
linker in the layout a kernel with Xen guest support has: Xen's notes first in the PT_NOTE
segment, the linker's GNU build-id after them. Xen's note type 3 is XEN_ELFNOTE_VIRT_BASE,
0xffffffff80000000 in every x86_64 kernel: taken for the build-id, it made every Debian kernel
look like every other one. The real kernels (a Debian kernel, a `path:` tree built with
CONFIG_XEN_PV) are in selftests/test_real.py and selftests/test_kernel_source.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness import cache, kernel_store
from harness.cell import kernel_mismatch
from harness.elf import build_id
from harness.guest import GuestRun, build_id_from_notes
from harness.kernel_store import KernelTree

# What arch/x86/xen/xen-head.S emits (ELFNOTE(Xen, XEN_ELFNOTE_VIRT_BASE, _ASM_PTR __START_KERNEL_map)
# and friends), shortened to two notes; the linker adds .note.gnu.build-id.
XEN_NOTES = """
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 8, 3
    .asciz "Xen"
    .quad 0xffffffff80000000
    .balign 4
    .long 4, 8, 2
    .asciz "Xen"
    .quad 0xffffffff81000000
    .text
    .globl _start
_start:
    ret
"""
# Like include/asm-generic/vmlinux.lds.h NOTES: every .note.* in one .notes section and one
# PT_NOTE segment, the object files' notes before the linker-made build-id.
LINKER_SCRIPT = """
PHDRS { text PT_LOAD FILEHDR PHDRS; note PT_NOTE; }
SECTIONS {
    . = 0x400000 + SIZEOF_HEADERS;
    .text : { *(.text) } :text
    .notes : { *(.note.Xen) *(.note.gnu.build-id) } :text :note
}
"""


def xen_like_elf(directory: Path, name: str, body: str = "") -> Path:
    """An executable with Xen's notes before its GNU build-id; `body` changes its code."""
    source, obj, script, elf = (directory / f"{name}{suffix}" for suffix in (".s", ".o", ".ld", ""))
    source.write_text(XEN_NOTES + body)
    script.write_text(LINKER_SCRIPT)
    subprocess.run(["as", "--64", "-o", str(obj), str(source)], check=True)
    subprocess.run(["ld", "--build-id=sha1", "-T", str(script), "-o", str(elf), str(obj)], check=True)
    return elf


def readelf_build_id(path: Path) -> str:
    notes = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Build ID: ([0-9a-f]+)", notes)
    assert match, notes
    return match.group(1)


def first_type_3_owner(path: Path) -> str:
    """The owner of the first note of type 3: the trap the old code fell into."""
    notes = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    owners = re.findall(r"^\s+(\S+)\s+0x[0-9a-f]+\s+(?:NT_GNU_BUILD_ID|Unknown note type: \(0x00000003\))",
                        notes, re.MULTILINE)
    assert owners, notes
    return owners[0]


def test_the_gnu_note_is_the_build_id_not_xens(tmp_path: Path) -> None:
    elf = xen_like_elf(tmp_path, "kernel")
    assert first_type_3_owner(elf) == "Xen"  # the layout is the trap's
    assert build_id(elf) == readelf_build_id(elf)
    assert len(build_id(elf)) == 40


def test_two_builds_have_two_build_ids(tmp_path: Path) -> None:
    """One instruction more, as a rebuilt function would: another build-id (the old reader gave
    both Xen's constant VIRT_BASE)."""
    before, after = xen_like_elf(tmp_path, "before"), xen_like_elf(tmp_path, "after", "    nop\n")
    assert build_id(before) != build_id(after)
    assert {build_id(before), build_id(after)} == {readelf_build_id(before), readelf_build_id(after)}


def test_the_guests_notes_give_the_same_build_id(tmp_path: Path) -> None:
    """/sys/kernel/notes is the kernel's .notes section, byte for byte: the guest's parser
    must find what harness/elf.py finds in the vmlinux."""
    elf = xen_like_elf(tmp_path, "kernel")
    notes = tmp_path / "notes.bin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.notes", str(elf), str(notes)], check=True)
    assert build_id_from_notes(notes.read_bytes().hex()) == build_id(elf)


def test_a_manifest_with_xens_note_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel trees stored before the fix recorded the bytes of Xen's note; the store reads the
    real build-id from the tree's vmlinux and keeps it."""
    monkeypatch.setenv("STAPMATRIX_CACHE", str(tmp_path / "cache"))
    directory = kernel_store.store_dir() / "deb-old"
    (directory / "root/boot").mkdir(parents=True)
    (directory / "root/boot/vmlinuz-6.12.0").write_bytes(b"MZ" + bytes(64))
    (directory / "root/usr/lib/debug/boot").mkdir(parents=True)
    vmlinux = directory / "root/usr/lib/debug/boot/vmlinux-6.12.0"
    vmlinux.write_bytes(xen_like_elf(tmp_path, "kernel").read_bytes())
    old = "b'\\x00\\x00\\x00\\x80\\xff\\xff\\xff\\xff'"  # what every Debian kernel's manifest held
    cache.write_entry(directory / "manifest.json", {
        "version": kernel_store.MANIFEST_VERSION, "release": "6.12.0", "cc": "gcc-14", "cc_version": "14",
        "vmlinuz": "boot/vmlinuz-6.12.0", "vmlinux": "usr/lib/debug/boot/vmlinux-6.12.0", "build_id": old,
        "mount_points": ["boot/vmlinuz-6.12.0", "usr/lib/debug"], "identity": "test"})
    tree = kernel_store.find("deb-old")
    assert tree is not None and tree.build_id == readelf_build_id(vmlinux)
    assert json.loads((directory / "manifest.json").read_text())["payload"]["build_id"] == tree.build_id


def test_a_guest_that_booted_another_build_is_an_error_naming_both(tmp_path: Path) -> None:
    compiled_against = build_id(xen_like_elf(tmp_path, "new", "    nop\n"))
    booted = build_id(xen_like_elf(tmp_path, "old"))
    tree = KernelTree(key="path-x", root=tmp_path, release="6.12.0", cc="gcc-14", cc_version="14",
                      vmlinuz="boot/vmlinuz-6.12.0", vmlinux="usr/lib/debug/boot/vmlinux-6.12.0",
                      build_id=compiled_against, mount_points=(), identity="tree")
    message = kernel_mismatch(GuestRun("tcg", boots=1, build_id=booted), tree)
    assert f"booted a kernel with build-id {booted}" in message and f"build-id {compiled_against}" in message
    assert "`make vmlinux` alone" in message
    assert kernel_mismatch(GuestRun("tcg", boots=1, build_id=compiled_against), tree) == ""
    assert "no build-id" in kernel_mismatch(GuestRun("tcg", boots=1), tree)
    assert kernel_mismatch(GuestRun("tcg", boots=1, boot_failure="did not boot"), tree) == ""  # its tests say so
