"""The fixed vocabulary of outcomes and the record each (cell, test) produces.

    pass         compiled, loaded, ran, exited 0, output as expected, kernel clean
    fail-pass2   the translator gave up before code generation (passes 1-3: a probe point
                 that no longer resolves, a $variable that is gone, a parse error)
    fail-pass4   the generated module did not compile against the kernel's headers
    fail-load    staprun could not insert or run the module, or exited non-zero
    fail-output  ran, but the output lacked an expected line
    crash        the guest kernel oopsed or panicked (detail: the oops excerpt)
    timeout      the test outlived its limit, or the guest stopped answering
    error        infrastructure: an image build, Docker, QEMU; says nothing about stap
    xfail        a known failure listed in the matrix, with its reason (or a DejaGnu XFAIL/KFAIL)
    skip         systemtap testsuite lines only: DejaGnu UNTESTED or UNSUPPORTED

results.json is a list of Result.as_json() records; see README "results.json".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path


class Outcome(str, Enum):
    PASS = "pass"
    FAIL_PASS2 = "fail-pass2"
    FAIL_PASS4 = "fail-pass4"
    FAIL_LOAD = "fail-load"
    FAIL_OUTPUT = "fail-output"
    CRASH = "crash"
    TIMEOUT = "timeout"
    ERROR = "error"
    XFAIL = "xfail"
    SKIP = "skip"


@dataclass
class Stage:
    seconds: float = 0.0
    cached: bool = False


@dataclass
class Result:
    kernel: str
    stap: str
    test: str
    outcome: Outcome
    detail: str = ""
    stages: dict[str, Stage] = field(default_factory=dict)  # images, compile, run
    artifacts: dict[str, str] = field(default_factory=dict)
    accel: str = ""
    reproduce: str = ""
    xfail_reason: str = ""
    actual: str = ""  # for xfail: the outcome that was expected to fail

    def as_json(self) -> dict[str, object]:
        record = asdict(self)
        record["outcome"] = self.outcome.value
        return record

    @classmethod
    def from_json(cls, record: dict[str, object]) -> Result:
        data = dict(record)
        data["outcome"] = Outcome(str(data["outcome"]))
        data["stages"] = {k: Stage(**v) for k, v in dict(data.get("stages") or {}).items()}  # type: ignore[call-overload]
        return cls(**data)  # type: ignore[arg-type]


def write_results(path: Path, results: list[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    tmp.replace(path)


def read_results(path: Path) -> list[Result]:
    return [Result.from_json(r) for r in json.loads(path.read_text())]
