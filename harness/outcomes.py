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

A results file is input from outside (a CI job for a pull request uploads one, the merged
report is published): it is read only as a regular file of bounded size, every record's
fields are checked for their types before anything uses them, and each record remembers the
directory it was read from (`root`): the reports read an artifact only inside it
(harness/report/html.py).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path

from harness.bounded import MIB, UnreadableFile, read_bounded
from harness.cache import atomic_write_bytes
from harness.errors import MatrixError

RESULTS_LIMIT = 256 * MIB  # 2,000 cells of 5 tests with long details take about 20 MiB


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


def over_tries(tries: list[tuple[Outcome, str]], fresh: str) -> tuple[Outcome, str]:
    """One outcome from a test's tries: the first's, or `flaky` with every try in the detail
    when they differ (`fresh`: what each try ran in, "boots" or "runs")."""
    outcome, detail = tries[0]
    if len({o for o, _ in tries}) > 1:
        outcome = Outcome.FLAKY
        detail = f"different outcomes in fresh {fresh}: " + "; ".join(
            f"try {n}: {o.value}" + (f" ({d.splitlines()[0]})" if d else "") for n, (o, d) in enumerate(tries, 1))
    return outcome, detail


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
    # Where the record was read from (not written to files): artifacts are read only inside
    # it. "" for a record this process made, whose paths it made itself.
    root: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        self.kernel_name = self.kernel_name or self.kernel
        self.stap_name = self.stap_name or self.stap

    def as_json(self, base: Path | None = None) -> dict[str, object]:
        record = asdict(self)
        del record["root"]
        record["outcome"] = self.outcome.value
        if base is not None:
            record["artifacts"] = {k: _relative(v, base) for k, v in self.artifacts.items()}
        return record

    @classmethod
    def from_json(cls, record: object, base: Path | None = None, where: str = "a record") -> Result:
        """A record checked field by field; MatrixError names `where` and the field."""
        if not isinstance(record, dict):
            raise MatrixError(f"{where} is {_type_name(record)}, not an object")
        test = record.get("test")
        if isinstance(test, str):
            where += f" (test {test[:80]!r})"
        data: dict[str, object] = {}
        for name, value in record.items():
            if name not in _FIELDS:
                continue  # a field of a later version: ignored, as before
            data[name] = _checked(name, value, where)
        for name in ("kernel", "stap", "test", "outcome"):
            if name not in data:
                raise MatrixError(f"{where} has no {name!r}")
        data["outcome"] = Outcome(data["outcome"])
        artifacts = data.get("artifacts") or {}
        assert isinstance(artifacts, dict)
        if base is not None:
            artifacts = {k: v if os.path.isabs(v) else str(base / v) for k, v in artifacts.items()}
            data["root"] = str(base)
        data["artifacts"] = artifacts
        return cls(**data)  # type: ignore[arg-type]


_FIELDS = {f.name for f in fields(Result)} - {"root"}
_OUTCOMES = {o.value for o in Outcome}


def _type_name(value: object) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _string(value: object, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise MatrixError(f"{where}: {name!r} is {_type_name(value)}, not a string")
    return value


def _checked(name: str, value: object, where: str) -> object:
    """One field of a record, of the type the record has it: strings, the outcome, stages
    (name -> seconds and cached), artifacts (name -> path), tries (outcome and detail)."""
    if name == "outcome":
        text = _string(value, where, name)
        if text not in _OUTCOMES:
            raise MatrixError(f"{where}: outcome {text[:40]!r} is none of {', '.join(sorted(_OUTCOMES))}")
        return text
    if name == "stages":
        if not isinstance(value, dict):
            raise MatrixError(f"{where}: 'stages' is {_type_name(value)}, not an object")
        stages = {}
        for stage, entry in value.items():
            seconds = entry.get("seconds", 0.0) if isinstance(entry, dict) else None
            cached = entry.get("cached", False) if isinstance(entry, dict) else None
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not isinstance(cached, bool) \
                    or not math.isfinite(seconds) or seconds < 0:
                raise MatrixError(f"{where}: stage {stage[:40]!r} is not {{\"seconds\": N, \"cached\": true|false}}")
            stages[stage] = Stage(float(seconds), cached)
        return stages
    if name == "artifacts":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise MatrixError(f"{where}: 'artifacts' is not an object of paths (strings)")
        return dict(value)
    if name == "tries":
        if not isinstance(value, list):
            raise MatrixError(f"{where}: 'tries' is {_type_name(value)}, not a list")
        tries = []
        for entry in value:
            if not isinstance(entry, dict) or not isinstance(entry.get("outcome"), str) \
                    or not isinstance(entry.get("detail", ""), str):
                raise MatrixError(f"{where}: a try is not {{\"outcome\": TEXT, \"detail\": TEXT}}")
            tries.append(Try(entry["outcome"], entry.get("detail", "")))
        return tries
    return _string(value, where, name)


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


def read_results(path: Path, root: Path | None = None) -> list[Result]:
    """A results.json, or the results.json of a run directory; artifact paths made absolute.
    `root`: the directory its artifacts must lie in (default: the file's own)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        text = read_bounded(path, RESULTS_LIMIT, "a results file").decode("utf-8")
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such results file (give a results.json or a run directory)") from None
    except UnreadableFile as error:
        if not os.path.lexists(path):
            raise MatrixError(f"{path}: no such results file (give a results.json or a run directory)") from None
        raise MatrixError(f"{path}: {error}; give a results.json or a run directory") from None
    except UnicodeDecodeError as error:
        raise MatrixError(f"{path}: not a stapmatrix results file ({error})") from None
    try:
        records = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise MatrixError(f"{path}: not a stapmatrix results file ({error})") from None
    if not isinstance(records, list):
        raise MatrixError(f"{path}: not a stapmatrix results file (not a list of records)")
    base = path.parent.resolve()
    results = [Result.from_json(record, base, f"{path}: record {index}")
               for index, record in enumerate(records, 1)]
    if root is not None:
        for result in results:
            result.root = str(root.resolve())
    return results
