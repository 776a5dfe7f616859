"""A container registry for images: look an image up there by its content tag before building
it, push it after building it when pushing is allowed.

    STAPMATRIX_REGISTRY=ghcr.io/OWNER/stapmatrix    where images are looked up (any OCI registry)
    STAPMATRIX_REGISTRY_PUSH=1                      also push what this machine builds

Without STAPMATRIX_REGISTRY nothing changes. The local tag `stapmatrix/KIND:HASH` is
`REGISTRY/KIND:HASH` there. The registry is input from outside: a pulled image is used only
when its labels say it is what its tag says (it carries `org.stapmatrix.tag` = the tag the
harness computed from the recipe, it is a linux/amd64 image, it is not absurdly large);
anything else is removed again and the image is built here, with one line saying why. A
pull or push that fails (the registry unreachable, no permission, a time limit) is one line
too, and the run goes on by building: a registry only ever saves time.

The local daemon keeps only the local tag: the registry's name is added for a push and
removed after it, so `stapmatrix clean --images` (which removes local tags) never touches
the registry, and the registry's contents never change what a local lookup finds.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import docker
import docker.errors
import requests.exceptions

from harness import docker_env
from harness.errors import MatrixError
from harness.progress import ImagePulled, ImagePullFailed, ImagePullRefused, ImagePushed, ImagePushFailed, Progress

logger = logging.getLogger(__name__)

TAG_LABEL = "org.stapmatrix.tag"  # the local tag an image was built as (images.py sets it)
REFERENCE_LIMIT = 200  # characters: Docker's own limit for a whole name is 255, the tag comes on top
# HOST[:PORT]/PATH, lower case, as Docker's reference grammar has it. A host is required (a
# dot, a port or `localhost`), so that a bare `owner/name` never goes to Docker Hub unasked.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+)(?::[0-9]{1,5})?"
REFERENCE_RE = re.compile(rf"(?P<host>{_HOST})(?:/{_COMPONENT})+")
PULL_LIMIT_S = 1800.0  # a whole pull or push; the client's read timeout catches a silent registry
SILENCE_LIMIT_S = 300
SIZE_LIMIT = 16 * 1024**3  # bytes of one image: the kernel build toolchain, the largest, is ~2 GB
PUSH_VALUES = {"1": True, "0": False, "": False}


@dataclass(frozen=True)
class Registry:
    reference: str  # HOST[:PORT]/PATH, no tag
    push: bool

    @property
    def host(self) -> str:
        return self.reference.split("/", 1)[0]

    def remote(self, tag: str) -> str:
        """`stapmatrix/stap:HASH` -> `REGISTRY/stap:HASH`."""
        name, _, version = tag.partition(":")
        return f"{self.reference}/{name.rsplit('/', 1)[-1]}:{version}"


def parse_reference(text: str, origin: str = "STAPMATRIX_REGISTRY") -> str:
    """A registry reference as Docker takes it, or an error naming the value and the fix."""
    match = REFERENCE_RE.fullmatch(text)
    host_like = match is not None and ("." in match["host"] or ":" in match["host"] or match["host"] == "localhost")
    if len(text) > REFERENCE_LIMIT or not host_like:
        raise MatrixError(f"{origin}={text[:REFERENCE_LIMIT]!r} is not a registry reference: give HOST[:PORT]/PATH in "
                          "lower case, without a scheme or tag (e.g. ghcr.io/OWNER/stapmatrix, 127.0.0.1:5000/stapmatrix)")
    return text


def parse_push(text: str) -> bool:
    if text not in PUSH_VALUES:
        raise MatrixError(f"STAPMATRIX_REGISTRY_PUSH={text[:40]!r}: give 1 (push what is built here) or 0")
    return PUSH_VALUES[text]


def from_environment(environ: dict[str, str] | None = None) -> Registry | None:
    """The registry the environment names, checked; None when it names none."""
    values = os.environ if environ is None else environ
    reference = values.get("STAPMATRIX_REGISTRY", "")
    push = parse_push(values.get("STAPMATRIX_REGISTRY_PUSH", ""))
    if not reference:
        if push:
            raise MatrixError("STAPMATRIX_REGISTRY_PUSH=1 but STAPMATRIX_REGISTRY is not set: name the registry "
                              "(e.g. STAPMATRIX_REGISTRY=ghcr.io/OWNER/stapmatrix)")
        return None
    return Registry(parse_reference(reference), push)


@cache
def configured() -> Registry | None:
    return from_environment()


@cache
def _api() -> docker.APIClient:
    """A client of the same daemon whose reads time out sooner: a registry that stops
    answering must not hold a run for the default client's 15 minutes per read."""
    return docker.from_env(timeout=SILENCE_LIMIT_S).api


def _stream(chunks: Iterator[dict[str, object]], what: str) -> None:
    """Follow a pull or push stream to its end. Its error, or running out of time, is a
    RuntimeError whose text is the one line the caller reports."""
    deadline = time.monotonic() + PULL_LIMIT_S
    for chunk in chunks:
        if "error" in chunk:
            raise RuntimeError(str(chunk["error"]).strip().splitlines()[0][:300])
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} took longer than {PULL_LIMIT_S:.0f} s")


def _failure(error: BaseException) -> str:
    if isinstance(error, docker.errors.NotFound) or "manifest unknown" in str(error):
        return "not in the registry"
    if isinstance(error, docker.errors.APIError):
        return str(error.explanation or error).splitlines()[0][:300]
    if isinstance(error, requests.exceptions.RequestException):
        return f"the registry or the daemon stopped answering ({error.__class__.__name__})"
    return str(error)[:300]


def _refusal(attributes: dict[str, object], tag: str) -> str:
    """Why a pulled image is not the image `tag` names, or "" when it is."""
    config = attributes.get("Config") or {}
    labels = (config.get("Labels") if isinstance(config, dict) else None) or {}
    if not isinstance(labels, dict) or labels.get(docker_env.LABEL) != "1":
        return "it is not a stapmatrix image (no org.stapmatrix label)"
    if labels.get(TAG_LABEL) != tag:
        found = str(labels.get(TAG_LABEL, "none"))[:100]
        return f"its label {TAG_LABEL} says {found!r}: it was built from another recipe"
    if (attributes.get("Os"), attributes.get("Architecture")) != ("linux", "amd64"):
        return f"it is a {attributes.get('Os')}/{attributes.get('Architecture')} image, not linux/amd64"
    size = attributes.get("Size")
    if not isinstance(size, int) or size > SIZE_LIMIT:
        return f"its size {size!r} is not a number of bytes up to {SIZE_LIMIT}"
    return ""


def pull(tag: str, progress: Progress, registry: Registry | None = None) -> bool:
    """Bring `tag` from the registry into the local daemon, checked; False (and one event
    saying why) when it is not there, cannot be fetched, or is not what the tag says."""
    registry = registry or configured()
    if registry is None:
        return False
    remote = registry.remote(tag)
    started = time.monotonic()
    repository, _, version = remote.rpartition(":")
    try:
        _stream(_api().pull(repository, version, stream=True, decode=True), f"pulling {remote}")
        attributes = _api().inspect_image(remote)
    except (docker.errors.DockerException, requests.exceptions.RequestException, RuntimeError) as error:
        _untag(remote)
        progress(ImagePullFailed(tag, remote, _failure(error)))
        return False
    refusal = _refusal(attributes, tag)
    if refusal:
        _untag(remote)
        progress(ImagePullRefused(tag, remote, refusal))
        return False
    local_repository, _, local_version = tag.partition(":")
    _api().tag(attributes["Id"], local_repository, local_version)
    _untag(remote)
    progress(ImagePulled(tag, remote, round(time.monotonic() - started, 1)))
    return True


def push(tag: str, progress: Progress, registry: Registry | None = None) -> bool:
    """Push the local `tag` to the registry when pushing is allowed; a failure is one event
    and False (the image is still here, the run goes on)."""
    registry = registry or configured()
    if registry is None or not registry.push:
        return False
    remote = registry.remote(tag)
    repository, _, version = remote.rpartition(":")
    started = time.monotonic()
    try:
        _api().tag(tag, repository, version)
        _stream(_api().push(repository, version, stream=True, decode=True), f"pushing {remote}")
    except (docker.errors.DockerException, requests.exceptions.RequestException, RuntimeError) as error:
        progress(ImagePushFailed(tag, remote, _failure(error)))
        return False
    finally:
        _untag(remote)
    progress(ImagePushed(tag, remote, round(time.monotonic() - started, 1)))
    return True


def publish(tag: str, progress: Progress, registry: Registry | None = None) -> bool:
    """Push a local image that was not built just now (the images job of a workflow whose
    runner already had it), after the same check a pull makes: an image built before images
    carried their tag label would be refused by every puller, so it is not pushed."""
    registry = registry or configured()
    if registry is None or not registry.push:
        return False
    try:
        refusal = _refusal(_api().inspect_image(tag), tag)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        refusal = _failure(error)
    if refusal:
        progress(ImagePushFailed(tag, registry.remote(tag), f"the local image is not fit to share: {refusal}; "
                                 "`stapmatrix clean --images` and build it again"))
        return False
    return push(tag, progress, registry)


def _untag(remote: str) -> None:
    """Remove the registry's name from the local daemon (the image stays under its local tag)."""
    try:
        _api().remove_image(remote, noprune=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        pass  # not there (a pull that failed), or the daemon is gone: the caller reports that


def reset() -> None:
    """Forget the configuration read from the environment (tests change it)."""
    configured.cache_clear()
