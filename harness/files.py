"""Where the files shipped inside the package are: they travel in the wheel, so an installed
stapmatrix finds its Dockerfiles, guest init and config fragments wherever it is installed."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DOCKERFILES_DIR = PACKAGE_DIR / "dockerfiles"  # Dockerfiles and the scripts images copy or run
GUEST_DIR = PACKAGE_DIR / "guest"  # the guest's init, the initramfs packer, the testsuite's wrappers
KERNEL_CONFIG_DIR = PACKAGE_DIR / "kernel-config"  # what systemtap and the guest need of a kernel config
TEMPLATES_DIR = PACKAGE_DIR / "templates"  # the HTML report
