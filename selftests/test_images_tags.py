"""Content-addressed tags: the same inputs give the same tag, any change a new one, and the tag
of a recipe is what it was when the Dockerfiles lived outside the package (moving them into
harness/dockerfiles changed no image)."""

from __future__ import annotations

from harness.recipes import recipe

ARGS = {"BASE": "stapmatrix/base:trixie-x", "PACKAGES": "systemtap=5.1-5"}


def test_tag_is_stable_and_content_addressed() -> None:
    first = recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), ARGS).tag
    assert first == recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), dict(ARGS)).tag
    changed = recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), dict(ARGS, PACKAGES="systemtap=5.6-1")).tag
    assert changed != first and first.startswith("stapmatrix/stap:")


def test_tag_is_the_one_images_had_before_they_moved() -> None:
    # Computed by the tag function of commit 75f98fd (harness/images.py dockerfile_tag, the
    # Dockerfiles in images/): an image built before the move is found after it.
    assert recipe("stap", "stap-deb.Dockerfile", ("stapmatrix-target.c",), ARGS).tag == "stapmatrix/stap:936b2db549fe0983"
