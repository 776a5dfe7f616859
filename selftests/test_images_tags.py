"""Content-addressed tags: the same inputs give the same tag, any change a new one."""

from __future__ import annotations

from harness.images import dockerfile_tag


def test_tag_is_stable_and_content_addressed() -> None:
    args = {"BASE": "stapmatrix/base:trixie-x", "PACKAGES": "systemtap=5.1-5"}
    first = dockerfile_tag("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), args)
    assert first == dockerfile_tag("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), dict(args))
    changed = dockerfile_tag("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), dict(args, PACKAGES="systemtap=5.6-1"))
    assert changed != first and first.startswith("stapmatrix/stap:")
