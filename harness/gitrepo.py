"""git, as both source kinds use it (systemtap in harness/stap_git.py, kernels in
harness/kernel_git.py): a repository URL or directory, a ref resolved to a full commit id.

Every call has a time limit and reports git's own error; credentials in a URL never appear in
a message or a log; only the file, git, http, https and ssh transports are allowed (git's
`ext::` runs arbitrary commands); remote repositories are mirrored in the cache, and a mirror
that git finds broken is removed and cloned again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

from harness.errors import InfraError, MatrixError
from harness.settings import cache_dir

logger = logging.getLogger(__name__)

GIT_LIMIT_S = 900  # a first clone of a big repository over a slow link
ALLOWED_TRANSPORTS = "file:git:http:https:ssh"
SCP_LIKE_RE = re.compile(r"^[\w.-]+@[\w.-]+:")
# git's remote helpers (`ext::CMD` runs CMD, `fd::N`): git takes `NAME::` at the start of a
# URL as one, with no `://` for is_local to see.
REMOTE_HELPER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::")
CREDENTIALS_RE = re.compile(r"(?<=://)[^/@\s]+@")


def mask(text: str) -> str:
    """`https://user:token@host/x` -> `https://***@host/x`, anywhere in `text`."""
    return CREDENTIALS_RE.sub("***@", text)


def is_local(url: str) -> bool:
    return "://" not in url and not SCP_LIKE_RE.match(url)


def environment() -> dict[str, str]:
    """git's environment for every call: allowed transports, no prompts, any owner."""
    env = dict(os.environ)
    env.update(GIT_ALLOW_PROTOCOL=ALLOWED_TRANSPORTS, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false",
                       LC_ALL="C")
    # A repository owned by another user (a checkout mounted from elsewhere, or root running
    # on a user's tree) is refused by git as "dubious ownership"; reading it is what we want.
    env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
    return env


def run(*args: str, cwd: str | None = None, what: str, timeout_s: float = GIT_LIMIT_S,
        input_text: str | None = None) -> str:
    """git ARGS; its stdout, or an InfraError naming `what` with git's own message."""
    try:
        completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                                   timeout=timeout_s, env=environment(), input=input_text)
    except subprocess.TimeoutExpired:
        raise InfraError(f"{mask(what)}: git {args[0]} did not finish within {timeout_s:.0f} s") from None
    except FileNotFoundError:
        raise InfraError("git is not installed: `apt-get install git`") from None
    if completed.returncode != 0:
        raise InfraError(f"{mask(what)}: {mask(git_said(completed.stderr, completed.returncode))}")
    return completed.stdout


def git_said(stderr: str, code: int) -> str:
    """git's own reason: its `fatal:`/`error:` lines (the last line is often advice, such as
    "and the repository exists.")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return "; ".join(reasons[:2]) if reasons else lines[-1] if lines else f"exit {code}"


def check_transport(url: str, where: str) -> None:
    helper = REMOTE_HELPER_RE.match(url)
    if helper:
        raise MatrixError(f"{where}: git transport {helper.group(1) + '::'!r} in {mask(url)} is not allowed "
                          f"(allowed: {ALLOWED_TRANSPORTS.replace(':', ', ')}, or a local directory)")
    if url.startswith("-"):  # git would read it as an option (`-oProxyCommand=...`)
        raise MatrixError(f"{where}: git URL {mask(url)!r} starts with '-'; give a URL or a directory path")
    if is_local(url):
        return
    scheme = url.split("://", 1)[0] if "://" in url else "ssh"
    if scheme not in ALLOWED_TRANSPORTS.split(":"):
        raise MatrixError(f"{where}: git transport {scheme!r} in {mask(url)} is not allowed "
                          f"(allowed: {ALLOWED_TRANSPORTS.replace(':', ', ')})")


def _mirror_dir(url: str) -> Path:
    """A bare mirror of a remote repository in the cache, made or brought up to date."""
    directory = cache_dir() / "git" / hashlib.sha256(url.encode()).hexdigest()[:16]
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if directory.exists():
            try:
                run("fetch", "--quiet", "--tags", "--prune", "origin", "+refs/heads/*:refs/heads/*",
                    cwd=str(directory), what=f"updating the mirror of {url}")
                return directory
            except InfraError as error:
                # Broken (not a repository, corrupt) or incomplete (a ref to objects it lacks:
                # "did not send all necessary objects"): git's messages vary, so any failure
                # gets a fresh clone. If the server is out of reach the clone fails too, with
                # git's own reason, and the old mirror is left as it was.
                logger.warning("%s: updating the mirror failed (%s); cloning it again", mask(url), error)
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run("clone", "--bare", "--quiet", "--", url, str(partial), what=f"cloning {url}")
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)  # a clone killed half-way never looks like a mirror
    return directory


def repository(url: str, where: str) -> str:
    """A directory git can read the repository from: the directory itself, or our mirror."""
    check_transport(url, where)
    if is_local(url):
        if not Path(url).exists():
            raise MatrixError(f"{where}: git repository {url} does not exist")
        return url
    return str(_mirror_dir(url))


def resolve_ref(url: str, ref: str, where: str, hint_tags: str = "") -> str:
    """The full commit id `ref` names in the repository at `url`. A ref that does not exist
    is the user's error (with recent tags as a hint); any other git failure is reported as
    git said it."""
    repo = repository(url, where)
    try:
        run("rev-parse", "--git-dir", cwd=repo, what=url, timeout_s=60)
    except InfraError as error:
        raise MatrixError(f"{where}: {mask(url)} is not a git repository git can read: {error}") from None
    try:
        return run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", cwd=repo,
                   what=f"{where}: {url}", timeout_s=60).strip()
    except InfraError:
        tags: list[str] = []
        if hint_tags:
            try:
                tags = run("tag", "--list", "--sort=-creatordate", hint_tags, cwd=repo, what="listing tags",
                           timeout_s=60).split()[:6]
            except InfraError:
                pass
        hint = f"; recent tags: {', '.join(tags)}" if tags else ""
        raise MatrixError(f"{where}: {mask(url)} has no commit named {ref!r}{hint}") from None


def show(repo: str, commit: str, path: str) -> str:
    return run("show", f"{commit}:{path}", cwd=repo, what=f"reading {path} at {commit[:12]}", timeout_s=60)
