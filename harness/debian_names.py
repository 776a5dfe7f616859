"""Debian's grammar for package names and versions (policy 5.6.1 and 5.6.12): every name and
version stapmatrix takes from a matrix file or a package index is checked against it, because
they become arguments of image builds."""

from __future__ import annotations

import re

PACKAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
VERSION_RE = re.compile(r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")  # [epoch:]upstream[-revision]


def valid_name(name: str) -> bool:
    return bool(PACKAGE_NAME_RE.match(name))


def valid_version(version: str) -> bool:
    return bool(VERSION_RE.match(version))
