"""A developer's kernel tree is checked before anything runs (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.archive import Archive
from harness.errors import MatrixError
from harness.kernel_tree import resolve
from harness.specs import parse_kernel_spec

DATA = Path(__file__).parent / "data"


def _refusal(tree: Path) -> str:
    with pytest.raises(MatrixError) as caught:
        resolve(parse_kernel_spec(f"path:{tree}", "--kernel"), "--kernel", Archive())
    return str(caught.value)


def test_a_tree_without_kprobes_is_refused_naming_the_option(tmp_path: Path) -> None:
    """A real .config of a kernel stapmatrix built, with CONFIG_KPROBES switched off: the
    tree is refused before anything runs, naming the option and the commands that fix it."""
    tree = tmp_path / "linux"
    tree.mkdir()
    config = (DATA / "config-6.12-tinyconfig-stapmatrix").read_text()
    (tree / ".config").write_text(config.replace("CONFIG_KPROBES=y", "# CONFIG_KPROBES is not set"))
    message = _refusal(tree)
    print(message)
    assert "CONFIG_KPROBES=y" in message and "is not set" in message
    assert f"scripts/config --file {tree}/.config --enable KPROBES" in message
    assert "olddefconfig" in message


def test_an_unbuilt_tree_is_refused_with_the_make_command(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / ".config").write_text((DATA / "config-6.12-tinyconfig-stapmatrix").read_text())
    message = _refusal(tree)
    assert "is not built" in message and "vmlinux" in message and f"make -C {tree} -j$(nproc)" in message


def test_an_unconfigured_tree_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path)
    assert "no .config" in message and "defconfig" in message
