"""Content-addressed tags: the same inputs give the same tag, any change a new one."""

from __future__ import annotations

from harness.recipes import recipe

ARGS = {"BASE": "stapmatrix/base:trixie-x", "PACKAGES": "systemtap=5.1-5"}


def test_tag_is_stable_and_content_addressed() -> None:
    first = recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), ARGS).tag
    assert first == recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), dict(ARGS)).tag
    changed = recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), dict(ARGS, PACKAGES="systemtap=5.6-1")).tag
    assert changed != first and first.startswith("stapmatrix/stap:")
