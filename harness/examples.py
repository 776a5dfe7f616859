"""systemtap's examples as tests: every example's `.meta` file carries the commands systemtap's
own testsuite (testsuite/systemtap.examples/check.exp) runs for it:

    test_support: stap -l 'process("php").mark("*")'    run first; non-zero: the example is untested
    test_check: stap -p4 iotop.stp                       compile only
    test_installcheck: stap iotop.stp -T 1               compile and run

Each command is one test, `examples/CATEGORY/NAME: check` and `examples/CATEGORY/NAME:
installcheck`, run as written by `sh -c` from the example's directory, as check.exp does
(its commands use `$$`, backticks, quotes and `||`).

Where the examples come from, for the column's own systemtap:
- a Debian package version: `systemtap-doc` of the same version (it ships
  /usr/share/systemtap/examples), downloaded and checked against the signed index like
  every other package, its examples extracted into the cache;
- a source build (`git:`, `path:`): the tree's `testsuite/systemtap.examples`;
- a test set's `path:`: a directory of examples of the user's own, laid out the same way.

The corpus is read at planning time, so every test is known (and a pytest item) before
anything runs. Everything read is bounded and checked: a .meta file or a command that breaks
the rules below is refused by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from debian import debfile
from filelock import FileLock

from harness import gitrepo
from harness.archive import Archive, download
from harness.errors import InfraError, MatrixError
from harness.progress import discard
from harness.settings import cache_dir
from harness.stap_build import StapBuild
from harness.testsets import TestSet

DOC_PACKAGE = "systemtap-doc"
DOC_EXAMPLES = "usr/share/systemtap/examples"
SOURCE_EXAMPLES = "testsuite/systemtap.examples"
IMAGE_SOURCE_TREE = "/usr/local/src/systemtap"  # where a source build's image keeps its tree (stap-source.Dockerfile)
KINDS = ("check", "installcheck")
EXTRACTION = 2  # how the package's examples are extracted (2: with their modes)
MAX_METAS = 2000
MAX_META_BYTES = 64 * 1024
MAX_COMMAND_CHARS = 4096
MAX_TREE_BYTES = 256 * 1024 * 1024
PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,80}$")
FIELD_RE = re.compile(r"^(test_support|test_check|test_installcheck): ?(.*)$")


@dataclass(frozen=True)
class ExampleTest:
    name: str  # examples/io/iotop: check
    example: str  # io/iotop: the .meta file's path below the examples directory, without .meta
    kind: str  # check | installcheck
    command: str  # as the .meta writes it
    support: str = ""  # the .meta's test_support command, run before it

    @property
    def directory(self) -> str:
        """The example's directory below the examples root, where its commands run."""
        return str(PurePosixPath(self.example).parent)


@dataclass(frozen=True)
class ExampleCorpus:
    origin: str  # for people: "systemtap-doc 5.6-1 (sid)", "testsuite/systemtap.examples of commit ...", a directory
    key: str  # a digest of the whole examples tree: what a cached verdict depends on
    tests: tuple[ExampleTest, ...]
    host_dir: str = ""  # the tree on this machine (a package's, or the user's own); "" for a source build
    image_dir: str = ""  # the tree inside the systemtap image (source builds)


SHELL_OPERATOR_RE = re.compile(r"\|\||&&|[|;&]")
PROGRAM_RE = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")


def target_programs(command: str) -> set[str]:
    """The programs a command's `stap ... -c CMD` starts in the guest: the first word of each
    simple command of CMD (`-c "cat /proc/sys/vm/* || true"` -> cat, true)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return set()
    programs = set()
    for index, word in enumerate(words[:-1]):
        if word != "-c":
            continue
        for part in SHELL_OPERATOR_RE.split(words[index + 1]):
            try:
                simple = [w for w in shlex.split(part) if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
            except ValueError:
                continue
            if simple and PROGRAM_RE.match(simple[0]) and not simple[0].startswith("-"):
                programs.add(simple[0])
    return programs


def example_test_name(example: str, kind: str) -> str:
    return f"examples/{example}: {kind}"


def parse_meta(text: str, where: str) -> dict[str, str]:
    """The test fields of a .meta file: one `key: value` a line, as check.exp reads them
    (`regexp -line "^$TAG: [^\\r\\n]*"`); other keys are the example's description."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = FIELD_RE.match(line)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) > MAX_COMMAND_CHARS:
            raise MatrixError(f"{where}: {key} is {len(value)} characters long (at most {MAX_COMMAND_CHARS})")
        if "\0" in value:
            raise MatrixError(f"{where}: {key} holds a NUL byte")
        fields[key] = value  # check.exp takes the last of a repeated key, so does this
    return fields


def tests_of(metas: dict[str, str], origin: str) -> list[ExampleTest]:
    """The tests of a set of .meta files ({"io/iotop.meta": TEXT}), in path order."""
    if len(metas) > MAX_METAS:
        raise MatrixError(f"{origin}: {len(metas)} .meta files; at most {MAX_METAS} are read")
    tests = []
    for relative in sorted(metas):
        parts = PurePosixPath(relative).with_suffix("").parts
        if not parts or not all(PART_RE.match(part) for part in parts):
            raise MatrixError(f"{origin}: example {relative!r} has a name stapmatrix does not take "
                              "(letters, digits and `_.+-` in each part)")
        example = "/".join(parts)
        fields = parse_meta(metas[relative], f"{origin}/{relative}")
        for kind in KINDS:
            command = fields.get(f"test_{kind}", "")
            if command:
                tests.append(ExampleTest(example_test_name(example, kind), example, kind, command,
                                         fields.get("test_support", "")))
    return tests


def _metas_in(directory: Path, origin: str) -> dict[str, str]:
    """{relative path: text} of the .meta files below `directory` (regular files only)."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not (Path(root) / d).is_symlink())
        for name in sorted(files):
            path = Path(root) / name
            if not name.endswith(".meta") or path.is_symlink() or not path.is_file():
                continue
            if path.stat().st_size > MAX_META_BYTES:
                raise MatrixError(f"{path}: {path.stat().st_size} bytes; a .meta file is at most {MAX_META_BYTES}")
            found[str(path.relative_to(directory))] = path.read_text(errors="replace")
            if len(found) > MAX_METAS:
                raise MatrixError(f"{origin}: more than {MAX_METAS} .meta files")
    return found


def tree_key(directory: Path) -> str:
    """A digest of every regular file below `directory`: names and contents."""
    digest = hashlib.sha256()
    total = 0
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            total += path.stat().st_size
            if total > MAX_TREE_BYTES:
                raise MatrixError(f"{directory}: the examples tree is over {MAX_TREE_BYTES // (1024 * 1024)} MiB")
            digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def _from_directory(directory: Path, origin: str) -> ExampleCorpus:
    if not directory.is_dir():
        raise MatrixError(f"{origin}: {directory} is not a directory of examples")
    tests = tests_of(_metas_in(directory, origin), origin)
    return ExampleCorpus(origin, tree_key(directory), tuple(tests), host_dir=str(directory))


# --- a Debian package's examples -----------------------------------------------------------------

def _safe_member(member: tarfile.TarInfo) -> str | None:
    """The path below the examples directory of a regular file or directory of the package,
    or None for anything else (links, devices) and anything outside it."""
    name = PurePosixPath(member.name.removeprefix("./"))
    if ".." in name.parts or name.is_absolute() or not (member.isfile() or member.isdir()):
        return None
    try:
        relative = name.relative_to(DOC_EXAMPLES)
    except ValueError:
        return None
    return str(relative) if str(relative) != "." else None


def _extract_examples(deb: Path, target: Path) -> None:
    """The package's examples directory, and nothing else, into `target`."""
    total = 0
    with debfile.DebFile(str(deb)) as package, package.data.tgz() as tar:
        for member in tar:
            relative = _safe_member(member)
            if relative is None:
                continue
            destination = target / relative
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            total += member.size
            if total > MAX_TREE_BYTES:
                raise InfraError(f"{deb.name}: its examples are over {MAX_TREE_BYTES // (1024 * 1024)} MiB")
            source = tar.extractfile(member)
            if source is None:
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with destination.open("wb") as out:
                shutil.copyfileobj(source, out)
            # The mode as packaged: some examples are scripts their commands run (./kmalloc-top).
            destination.chmod(member.mode & 0o755)


def _package_examples(build: StapBuild, archive: Archive, where: str) -> Path:
    """The examples of systemtap-doc at the build's version, extracted into the cache once."""
    package = archive.find(DOC_PACKAGE, build.version)
    if package is None:
        raise MatrixError(f"{where}: {DOC_PACKAGE} {build.version} is in none of the archive's suites, so "
                          f"systemtap {build.version} has no examples to run here")
    directory = cache_dir() / "examples" / f"{DOC_PACKAGE}_{package.version}_{package.sha256[:16]}_v{EXTRACTION}"
    done = directory / ".complete"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if done.exists():
            return directory / "tree"
        shutil.rmtree(directory, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="stapmatrix-doc-", dir=directory.parent) as tmp:
            deb = download(package, Path(tmp), discard)
            partial = Path(tmp) / "tree"
            partial.mkdir()
            _extract_examples(deb, partial)
            directory.mkdir()
            os.rename(partial, directory / "tree")
        done.write_text(package.pinned + "\n")
    return directory / "tree"


# --- a source tree's examples --------------------------------------------------------------------

def _git_metas(url: str, commit: str) -> dict[str, str]:
    repository = gitrepo.repository(url, url)
    listing = gitrepo.run("ls-tree", "-r", "-z", "--long", commit, "--", SOURCE_EXAMPLES, cwd=repository,
                          what=f"listing the examples of {commit[:12]}")
    entries = []
    for line in listing.split("\0"):
        if not line:
            continue
        meta, _, path = line.partition("\t")
        mode, kind, blob, size = meta.split()
        if kind == "blob" and mode != "120000" and path.endswith(".meta"):
            if not size.isdigit() or int(size) > MAX_META_BYTES:
                raise MatrixError(f"{url} at {commit[:12]}: {path} is {size} bytes; a .meta file is at most "
                                  f"{MAX_META_BYTES}")
            entries.append((blob, path))
    if len(entries) > MAX_METAS:
        raise MatrixError(f"{url} at {commit[:12]}: more than {MAX_METAS} .meta files")
    metas = {}
    for blob, path in entries:
        text = gitrepo.run("cat-file", "blob", blob, cwd=repository, what=f"reading {path}", timeout_s=60)
        metas[str(PurePosixPath(path).relative_to(SOURCE_EXAMPLES))] = text
    return metas


def _source_corpus(build: StapBuild) -> ExampleCorpus:
    image_dir = f"{IMAGE_SOURCE_TREE}/{SOURCE_EXAMPLES}"
    if build.spec.kind == "git":
        origin = f"{SOURCE_EXAMPLES} of {gitrepo.mask(build.spec.value)} commit {build.version[:12]}"
        tests = tests_of(_git_metas(build.spec.value, build.version), origin)
        return ExampleCorpus(origin, f"git-{build.version}", tuple(tests), image_dir=image_dir)
    directory = Path(build.spec.value) / SOURCE_EXAMPLES
    origin = str(directory)
    tests = tests_of(_metas_in(directory, origin), origin) if directory.is_dir() else []
    return ExampleCorpus(origin, f"path-{build.version}", tuple(tests), image_dir=image_dir)


def corpus(build: StapBuild, test_set: TestSet, archive: Archive, where: str) -> ExampleCorpus:
    """The examples the test set names for this systemtap build, filtered."""
    if test_set.path:
        found = _from_directory(Path(test_set.path), test_set.path)
    elif build.spec.kind == "deb":
        tree = _package_examples(build, archive, where)
        found = ExampleCorpus(f"{DOC_PACKAGE} {build.version} ({build.suite})", tree_key(tree),
                              tuple(tests_of(_metas_in(tree, DOC_PACKAGE), f"{DOC_PACKAGE} {build.version}")),
                              host_dir=str(tree))
    else:
        found = _source_corpus(build)
    tests = tuple(t for t in found.tests if test_set.selects(t.name))
    return ExampleCorpus(found.origin, found.key, tests, found.host_dir, found.image_dir)
