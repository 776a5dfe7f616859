"""The fixed vocabulary of outcomes and the record each (cell, test) produces.

    pass         compiled, loaded, ran, exited 0, output as expected, kernel clean
    fail-pass2   the translator gave up before code generation (passes 1-3: a probe point
                 that no longer resolves, a $variable that is gone, a parse error)
    fail-pass4   the generated module did not compile against the kernel's headers
    fail-load    staprun could not insert or run the module, or exited non-zero
    fail-output  ran, but the output lacked an expected line
    crash        the guest kernel oopsed or panicked (detail: the oops excerpt)
    timeout      the test outlived its limit, or the guest stopped answering
    flaky        tried more than once in fresh boots with different outcomes (detail: each try)
    error        infrastructure: an image build, Docker, QEMU; says nothing about stap
    xfail        a known failure listed in the matrix, with its reason (or a DejaGnu XFAIL/KFAIL)
    skip         systemtap testsuite lines only: DejaGnu UNTESTED or UNSUPPORTED

results.json is a list of Result records (see README "results.json"). Artifact paths in the
file are relative to the directory that holds it, so a run directory can be copied to
another machine, or merged with runs from other machines, and still point at its logs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path

from harness.cache import atomic_write_bytes
from harness.errors import MatrixError


class Outcome(str, Enum):
    PASS = "pass"
    FAIL_PASS2 = "fail-pass2"
    FAIL_PASS4 = "fail-pass4"
    FAIL_LOAD = "fail-load"
    FAIL_OUTPUT = "fail-output"
    CRASH = "crash"
    TIMEOUT = "timeout"
    FLAKY = "flaky"
    ERROR = "error"
    XFAIL = "xfail"
    SKIP = "skip"

    @property
    def is_failure(self) -> bool:
        """A real failure of stap on the kernel (not pass, xfail, skip, flaky or error)."""
        return self in FAILURES


FAILURES = frozenset({Outcome.FAIL_PASS2, Outcome.FAIL_PASS4, Outcome.FAIL_LOAD, Outcome.FAIL_OUTPUT,
                      Outcome.CRASH, Outcome.TIMEOUT})


@dataclass
class Stage:
    seconds: float = 0.0
    cached: bool = False


@dataclass
class Try:
    """One try of a test that was run again in a fresh boot after a non-pass."""

    outcome: str
    detail: str = ""


@dataclass
class Result:
    kernel: str  # the kernel as the matrix names it: an ABI name, git:URL@REF or path:DIR
    stap: str  # the systemtap build: deb:VERSION, git:URL@REF or path:DIR
    test: str
    outcome: Outcome
    detail: str = ""
    stages: dict[str, Stage] = field(default_factory=dict)  # images, kernel, compile, run, testsuite
    artifacts: dict[str, str] = field(default_factory=dict)  # absolute in memory, relative in the file
    accel: str = ""
    reproduce: str = ""
    xfail_reason: str = ""
    actual: str = ""  # for xfail: the outcome that was expected to fail
    cell: str = ""  # the cell id: KERNEL-LABEL-STAP-LABEL
    kernel_name: str = ""  # the row's name (matrix `name:`, default the spec): what `diff` matches
    stap_name: str = ""  # the column's name, likewise
    kernel_identity: str = ""  # exactly what ran: "6.12.117-1 (trixie)", "commit 3f2c...", "tree sha256 ..."
    stap_identity: str = ""
    kernel_release: str = ""  # uname -r of the guest kernel
    kernel_origin: str = ""  # the archive suite a Debian kernel came from, or git / path
    tries: list[Try] = field(default_factory=list)  # each try, when a non-pass was tried again
    image: str = ""  # the cell image (Docker tag) the test compiled in
    guest_build_id: str = ""  # the GNU build-id the booted guest kernel reported

    def __post_init__(self) -> None:
        self.kernel_name = self.kernel_name or self.kernel
        self.stap_name = self.stap_name or self.stap

    def as_json(self, base: Path | None = None) -> dict[str, object]:
        record = asdict(self)
        record["outcome"] = self.outcome.value
        if base is not None:
            record["artifacts"] = {k: _relative(v, base) for k, v in self.artifacts.items()}
        return record

    @classmethod
    def from_json(cls, record: dict[str, object], base: Path | None = None) -> Result:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in record.items() if k in known}
        data["outcome"] = Outcome(str(data["outcome"]))
        data["stages"] = {k: Stage(**v) for k, v in dict(data.get("stages") or {}).items()}  # type: ignore[call-overload]
        data["tries"] = [Try(**t) for t in list(data.get("tries") or [])]  # type: ignore[call-overload]
        artifacts = {str(k): str(v) for k, v in dict(data.get("artifacts") or {}).items()}  # type: ignore[call-overload]
        if base is not None:
            artifacts = {k: v if os.path.isabs(v) else str(base / v) for k, v in artifacts.items()}
        data["artifacts"] = artifacts
        return cls(**data)  # type: ignore[arg-type]


def _relative(path: str, base: Path) -> str:
    """Artifact paths under `base` become relative; anything else (an image tag) stays."""
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path, base)
    return path if relative.startswith("..") else relative


def write_records(path: Path, records: list[dict[str, object]]) -> None:
    """A results file, written atomically (harness/cache.py): a reader never sees half a file."""
    atomic_write_bytes(path, (json.dumps(records, indent=2) + "\n").encode())


def write_results(path: Path, results: list[Result]) -> None:
    """results.json with artifact paths relative to its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    write_records(path, [r.as_json(base) for r in results])


def read_results(path: Path) -> list[Result]:
    """A results.json, or the results.json of a run directory; artifact paths made absolute."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            raise TypeError("not a list of records")
        return [Result.from_json(r, path.parent.resolve()) for r in records]
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such results file (give a results.json or a run directory)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise MatrixError(f"{path}: not a stapmatrix results file ({error})") from None
