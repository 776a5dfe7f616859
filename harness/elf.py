"""What the harness reads from ELF files: a kernel's GNU build-id (the guest reports the booted
kernel's from /sys/kernel/notes; the vmlinux with DWARF must carry the same)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import InfraError


def build_id(path: Path) -> str:
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
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
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
