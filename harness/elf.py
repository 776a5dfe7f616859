"""What the harness reads from ELF files: a kernel's GNU build-id (the guest reports the booted
kernel's from /sys/kernel/notes; the vmlinux with DWARF must carry the same).

A note is the build-id only when its owner is "GNU" and its type is 3 (NT_GNU_BUILD_ID). Type
numbers are per owner: a kernel with Xen guest support (Debian's config, CONFIG_XEN) carries
Xen's notes in the same PT_NOTE segment, before the linker's build-id, and Xen's type 3 is
XEN_ELFNOTE_VIRT_BASE (0xffffffff80000000 on x86_64), the same value in every such kernel.
Taking the first type-3 note gave every Debian kernel one and the same "build-id".
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import InfraError

# The linker writes 20 bytes (sha1, the kernel's `--build-id=sha1`) or 16 (md5, uuid); never empty.
BUILD_ID_RE = re.compile(r"^[0-9a-f]{8,128}$")


def is_build_id(text: str) -> bool:
    """Whether `text` looks like a GNU build-id in hex (a manifest written before the owner
    was checked holds Xen's note as a Python bytes literal instead)."""
    return bool(BUILD_ID_RE.match(text))


def build_id(path: Path) -> str:
    """The GNU build-id of an ELF file in hex, or "" when it has none."""
    # pyelftools is imported here: planning and warm cells never read an ELF file.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as stream:
            elf = ELFFile(stream)
            for segment in elf.iter_segments():
                if segment["p_type"] != "PT_NOTE":
                    continue
                for note in segment.iter_notes():
                    # pyelftools names type 3 NT_GNU_BUILD_ID whatever the owner; only a GNU
                    # note's desc is the build-id (and only then is n_desc hex text).
                    if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                        found = str(note["n_desc"])
                        return found if is_build_id(found) else ""
    except (OSError, ELFError) as error:
        raise InfraError(f"cannot read {path} as ELF: {error}") from None
    return ""


def has_dwarf(path: Path) -> bool:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as stream:
            return ELFFile(stream).get_section_by_name(".debug_info") is not None
    except (OSError, ELFError):
        return False
