"""The GitHub Actions workflow without GitHub.

- It validates against GitHub's published workflow schema (check-jsonschema's copy, offline).
- Its shape: the properties a reader of the issue would check by eye.
- Its own `run:` lines run here in order, job after job (plan, the first cell, report), with
  GITHUB_OUTPUT and GITHUB_STEP_SUMMARY pointing at files and every `${{ ... }}` taken from a
  table this test keeps: an option renamed in stapmatrix, or a new expression in the
  workflow, breaks this test instead of the first real run. Steps that only make sense on
  GitHub are not run: `uses:` steps (checkout, setup-python, cache) and the udev rule for
  /dev/kvm. upload-artifact and download-artifact are emulated by copying the upload paths
  into the layout download-artifact gives (one directory per artifact).
- A sharded run (every cell alone, then merged by `stapmatrix report`) gives the same
  outcomes as the same matrix run at once.

The real tests reuse the cell of selftests/test_real.py (6.12 x systemtap 5.6), so CI builds
no other image for them; the sharded test adds systemtap 5.1.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from harness.cli import main
from harness.outcomes import Outcome, read_results
from harness.report.load import key, load_runs
from selftests.archive_choice import systemtap_of
from selftests.registry_server import loopback_registry

__all__ = ["loopback_registry"]  # a fixture, used by name
ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "stapmatrix.yml"
BEGIN_END = ROOT / "tests" / "stap" / "begin_end.stp"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
KVM_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"'


def load_workflow() -> dict[Any, Any]:
    document = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(document, dict)
    document["on"] = document.pop(True)  # YAML 1.1 reads the key `on` as true
    return document


# ----------------------------------------------------------------------------------------
# Without a cell


def test_workflow_matches_githubs_schema() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    completed = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def step_index(steps: list[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]) -> int:
    return next(i for i, step in enumerate(steps) if predicate(step))


def test_workflow_shape() -> None:
    workflow = load_workflow()
    assert set(workflow["on"]) == {"push", "pull_request", "schedule", "workflow_dispatch", "workflow_call"}
    assert {"matrix", "python-version", "stapmatrix-ref", "baseline"} <= set(workflow["on"]["workflow_call"]["inputs"])
    assert workflow["permissions"] == {"contents": "read"}
    assert "group" in workflow["concurrency"]
    jobs = workflow["jobs"]
    assert list(jobs) == ["plan", "images", "cell", "report"]
    assert all(job["timeout-minutes"] for job in jobs.values())
    assert jobs["plan"]["runs-on"] == jobs["report"]["runs-on"] == "ubuntu-24.04"
    # The jobs that need KVM and Docker go where the caller says (self-hosted runners).
    assert jobs["images"]["runs-on"] == jobs["cell"]["runs-on"] == "${{ inputs.runs-on || 'ubuntu-24.04' }}"
    assert workflow["on"]["workflow_call"]["inputs"]["runs-on"]["default"] == "ubuntu-24.04"

    # Only the images job may write packages, and it runs only for trusted code: pushes to
    # the default branch and the nightly (never a pull request, from a fork or not).
    writers = [name for name, job in jobs.items() if job.get("permissions", {}).get("packages") == "write"]
    assert writers == ["images"] and "packages" not in workflow["permissions"]
    condition = " ".join(jobs["images"]["if"].split())
    assert "github.event_name == 'schedule'" in condition and "pull_request" not in condition
    assert "github.ref_name == github.event.repository.default_branch" in condition
    assert jobs["images"]["env"]["STAPMATRIX_REGISTRY_PUSH"] == "1"
    assert jobs["cell"]["permissions"]["packages"] == "read" and "STAPMATRIX_REGISTRY_PUSH" not in jobs["cell"]["env"]
    assert jobs["cell"]["needs"] == ["plan", "images"] and "!cancelled()" in jobs["cell"]["if"]
    assert jobs["cell"]["env"]["STAPMATRIX_REGISTRY"] == jobs["images"]["env"]["STAPMATRIX_REGISTRY"] \
        == "${{ needs.plan.outputs.registry }}"
    plan_step = next(s for s in jobs["plan"]["steps"] if "sm plan" in s.get("run", ""))
    assert "--registry" in plan_step["run"] and "ghcr.io/{0}/stapmatrix" in plan_step["env"]["REGISTRY"]

    cell = jobs["cell"]
    assert cell["strategy"]["fail-fast"] is False
    assert cell["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    steps = cell["steps"]
    setup = step_index(steps, lambda s: "sm setup" in s.get("run", ""))
    kvm = step_index(steps, lambda s: "udevadm" in s.get("run", ""))
    run = step_index(steps, lambda s: "sm matrix" in s.get("run", ""))
    assert setup < kvm < run, "the udev rule must come after every package install and before the run"
    assert KVM_RULE in steps[kvm]["run"] and "udevadm trigger --name-match=kvm" in steps[kvm]["run"]
    assert "--cell=" in steps[run]["run"] and "--junitxml=" in steps[run]["run"]
    kernel_cache = steps[step_index(steps, lambda s: s.get("id") == "kernel-cache")]
    assert kernel_cache["with"]["key"] == "${{ env.PREFIX }}/kernel/${{ matrix.kernel_key }}"
    unpack = step_index(steps, lambda s: "kernel-store unpack" in s.get("run", ""))
    pack = step_index(steps, lambda s: "kernel-store pack" in s.get("run", ""))
    assert setup < unpack < run < pack and "cache-hit != 'true'" in steps[pack]["if"]
    upload = steps[step_index(steps, lambda s: "upload-artifact" in s.get("uses", ""))]
    assert upload["if"] == "always()" and "matrix.cell" in upload["with"]["name"]
    assert all(not line.startswith("-") for line in upload["with"]["path"].split())

    report = jobs["report"]
    assert report["if"] == "${{ !cancelled() && needs.plan.result == 'success' }}"
    assert report["needs"] == ["plan", "cell"]
    runs = [s["run"] for s in report["steps"] if "run" in s]
    assert any("GITHUB_STEP_SUMMARY" in r and "sm report" in r for r in runs)
    merge = next(s for s in report["steps"] if "--expect-cells" in s.get("run", ""))
    assert merge["env"]["PLANNED"] == "${{ needs.plan.outputs.matrix }}", "a cell that brought nothing must fail"
    assert any("sm diff" in r and "--fail-on-vanished" in r for r in runs)
    names = [s.get("id", s.get("name", "")) for s in report["steps"]]
    assert names.index("nightly") < names.index("compare") < names.index("Upload the merged report"), \
        "the history is written before the report is uploaded"
    assert "github.event_name == 'schedule'" in report["steps"][names.index("nightly")]["if"]


ACTION_LINE = re.compile(r"^\s*(?:- )?uses: (actions/[a-z-]+(?:/[a-z-]+)?)@(\S+)(.*)$")


def test_actions_are_pinned_by_commit() -> None:
    """A tag can be moved to other code: every action is a 40-hex commit, its release in a comment."""
    lines = [m for line in WORKFLOW.read_text().splitlines() if (m := ACTION_LINE.match(line))]
    assert len(lines) >= 10
    for match in lines:
        action, ref, comment = match.groups()
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action}@{ref} is not pinned by commit"
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), f"{action}@{ref} lacks its release as a comment"
    by_action: dict[str, set[str]] = {}
    for match in lines:
        by_action.setdefault(match.group(1).split("/")[1], set()).add(match.group(2))
    assert all(len(refs) == 1 for refs in by_action.values()), by_action  # one commit per action, everywhere


def test_cache_keys_and_artifact_names_cannot_match_anothers_by_prefix() -> None:
    """Keys and patterns carry the call's name, and cells end in a separator no cell id or
    name holds: cell `x` must not restore or download `x-stap5.6-1`'s, nor call `a` call `a-b`'s."""
    workflow = load_workflow()
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            given = step.get("with", {})
            if "restore-keys" in given:
                assert given["restore-keys"].startswith("${{ env.PREFIX }}/") and given["restore-keys"].endswith("/")
                assert given["key"].startswith(given["restore-keys"])
            if "upload-artifact" in step.get("uses", "") or "download-artifact" in step.get("uses", ""):
                named = given.get("name", given.get("pattern", ""))
                assert named.startswith("${{ env.PREFIX }}="), named
    assert "--artifact-prefix \"$PREFIX\"" in next(s["run"] for s in workflow["jobs"]["plan"]["steps"]
                                                  if "sm plan" in s.get("run", ""))


def test_every_run_line_calls_the_project() -> None:
    """A thin workflow: every `run:` calls ./sm, except the udev rule GitHub's runners need."""
    for job in load_workflow()["jobs"].values():
        for step in job["steps"]:
            if "run" in step and "udevadm" not in step["run"]:
                assert step["run"].lstrip().startswith("stapmatrix/sm "), step["run"]


# ----------------------------------------------------------------------------------------
# The run: lines, for real


TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||==|!=|!|'[^']*'|[A-Za-z_][A-Za-z0-9_.-]*(?:\(\))?)")


class Expression:
    """GitHub's expression language as far as the workflow's step conditions and values use
    it: 'strings', names (env.X, steps.ID.outputs.X, anything else from the test's table),
    ==, !=, !, && and || with GitHub's truthiness ('' is false; && and || give an operand),
    parentheses, and always()/cancelled() (nothing is cancelled here)."""

    def __init__(self, text: str, lookup: Callable[[str], str]) -> None:
        self.tokens = []
        position = 0
        while position < len(text.rstrip()):
            match = TOKEN.match(text, position)
            if not match:
                pytest.fail(f"this test cannot read the expression {text!r} at {text[position:]!r}")
            self.tokens.append(match.group(1))
            position = match.end()
        self.lookup = lookup
        self.status_checked = False

    def value(self) -> str:
        result = self._or()
        if self.tokens:
            pytest.fail(f"unread rest of an expression: {self.tokens}")
        return result

    def _take(self) -> str:
        return self.tokens.pop(0)

    def _or(self) -> str:
        left = self._and()
        while self.tokens and self.tokens[0] == "||":
            self._take()
            right = self._and()
            left = left or right
        return left

    def _and(self) -> str:
        left = self._compare()
        while self.tokens and self.tokens[0] == "&&":
            self._take()
            right = self._compare()
            left = right if left else left
        return left

    def _compare(self) -> str:
        left = self._unary()
        while self.tokens and self.tokens[0] in ("==", "!="):
            equal = self._take() == "=="
            right = self._unary()
            left = "true" if (left == right) == equal else ""
        return left

    def _unary(self) -> str:
        token = self._take()
        if token == "!":
            return "" if self._unary() else "true"
        if token == "(":
            inner = self._or()
            assert self._take() == ")"
            return inner
        if token.startswith("'"):
            return token[1:-1]
        if token in ("always()", "cancelled()"):
            self.status_checked = True
            return "true" if token == "always()" else ""
        return self.lookup(token)


class Runner:
    """Runs a job's steps as GitHub would, as far as this machine allows."""

    def __init__(self, workspace: Path, table: dict[str, str]) -> None:
        self.workspace = workspace
        self.table = table  # expression text -> value
        self.store = workspace.parent / "artifact-store"  # what upload-artifact would keep
        self.earlier_runs: dict[str, Path] = {}  # run id -> the artifact store of that run
        self.summaries: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.step_outputs: dict[str, dict[str, str]] = {}  # step id -> its outputs (this job)
        self.errors: dict[str, str] = {}  # step label -> its stderr
        self.ran: list[str] = []

    def lookup(self, name: str, env: dict[str, str]) -> str:
        if name.startswith("env.") and name[4:] in env:
            return env[name[4:]]
        if name.startswith("env."):
            return ""
        match = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", name)
        if match:  # a step that ran gave it; an action this test does not run, the table
            given = self.step_outputs.get(match.group(1), {})
            return given[match.group(2)] if match.group(2) in given else self.table.get(name, "")
        if name not in self.table:
            pytest.fail(f"the workflow has an expression this test does not know: {name!r}; "
                        "add it to the table in selftests/test_workflow.py")
        return self.table[name]

    def evaluate(self, expression: str, env: dict[str, str]) -> tuple[str, bool]:
        """(its value, whether it called a status function)."""
        parsed = Expression(expression, lambda name: self.lookup(name, env))
        return parsed.value(), parsed.status_checked

    def expand(self, text: str, env: dict[str, str]) -> str:
        def value(match: re.Match[str]) -> str:
            expression = " ".join(match.group(1).split())
            if expression in self.table:
                return self.table[expression]
            return self.evaluate(expression, env)[0]

        return EXPRESSION.sub(value, text)

    def condition(self, text: str, env: dict[str, str], failed: bool) -> bool:
        """A step's `if:`. Without a status function a step runs only while nothing failed
        (`success()`); `always()` and `!cancelled()` run after a failure too."""
        wrapped = EXPRESSION.fullmatch(" ".join(text.split()))
        result, status_checked = self.evaluate(wrapped.group(1) if wrapped else " ".join(text.split()), env)
        return bool(result) and (status_checked or not failed)

    def job(self, name: str, job: dict[str, Any], workflow_env: dict[str, str]) -> None:
        """The job's steps in order; a failing step fails the job (AssertionError naming it)
        after the steps that run after a failure have run."""
        env = {k: self.expand(str(v), {}) for k, v in workflow_env.items()}
        env.update({k: self.expand(str(v), env) for k, v in job.get("env", {}).items()})
        self.step_outputs = {}
        failed: list[str] = []
        for number, step in enumerate(job["steps"]):
            step_env = dict(env, **{k: self.expand(str(v), env) for k, v in step.get("env", {}).items()})
            runs = self.condition(step["if"], step_env, bool(failed)) if "if" in step else not failed
            if not runs:
                continue
            if "uses" in step:
                self.action(step, step_env)
                continue
            if "udevadm" in step["run"]:
                continue  # GitHub's runners only: /dev/kvm here is as the host made it
            try:
                self.run(f"{name}-{number}", self.expand(step["run"], step_env), step_env, step.get("id"))
            except AssertionError as error:
                failed.append(f"{step.get('name', number)}: {error}")
        assert not failed, f"job {name} failed: {failed}"

    def run(self, label: str, script: str, env: dict[str, str], step_id: str | None = None) -> None:
        output = self.workspace.parent / f"output-{label}"
        summary = self.workspace.parent / f"summary-{label}.md"
        output.touch()
        summary.touch()
        environment = dict(os.environ, **env, GITHUB_WORKSPACE=str(self.workspace), GITHUB_OUTPUT=str(output),
                           GITHUB_STEP_SUMMARY=str(summary), CI="true")
        completed = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=self.workspace, env=environment,
                                   capture_output=True, text=True, timeout=3600, check=False)
        print(f"--- {label}: {script}\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
        self.errors[label] = completed.stderr
        assert completed.returncode == 0, f"step {label} failed: {script}"
        self.ran.append(script)
        self.summaries[label] = summary.read_text()
        for line in output.read_text().splitlines():
            name, _, value = line.partition("=")
            self.outputs[name] = value
            if step_id:
                self.step_outputs.setdefault(step_id, {})[name] = value

    def action(self, step: dict[str, Any], env: dict[str, str]) -> None:
        uses = step["uses"]
        if not uses.startswith(("actions/upload-artifact@", "actions/download-artifact@")):
            return  # checkout, setup-python, cache: this machine has what they would bring
        given = {k: self.expand(str(v), env) for k, v in step.get("with", {}).items()}
        if uses.startswith("actions/upload-artifact@"):
            self.upload(given["name"], given["path"].split())
        elif uses.startswith("actions/download-artifact@"):
            destination = self.workspace / given["path"]
            if "name" in given:  # one artifact, of another run, into the path itself
                store = self.earlier_runs[given["run-id"]] if given.get("run-id") else self.store
                shutil.copytree(store / given["name"], destination, dirs_exist_ok=True)
                return
            for artifact in sorted(self.store.iterdir()):
                if fnmatch.fnmatchcase(artifact.name, given["pattern"]):
                    shutil.copytree(artifact, destination / artifact.name)

    def upload(self, name: str, paths: list[str]) -> None:
        """upload-artifact: the included paths under their least common ancestor, without
        the excluded patterns (`**` any depth)."""
        includes = [self.workspace / p for p in paths if not p.startswith("!")]
        excludes = [p[1:].replace("**/", "*") for p in paths if p.startswith("!")]
        root = Path(os.path.commonpath(includes)) if len(includes) > 1 else includes[0]
        target = self.store / name
        assert not target.exists(), f"two uploads named {name}"
        for include in includes:
            files = [include] if include.is_file() else sorted(p for p in include.rglob("*") if p.is_file())
            for path in files:
                relative = path.relative_to(self.workspace).as_posix()
                if any(fnmatch.fnmatchcase(relative, pattern) for pattern in excludes):
                    continue
                copy = target / path.relative_to(root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)


class FakeGitHub:
    """GitHub's REST API as far as `stapmatrix nightly-baseline` asks it, on a loopback port:
    three scheduled runs of stapmatrix.yml on main (999 tonight's own, 112 cancelled, 111 last
    night's, which regressed), and 111's report artifact."""

    RUNS: ClassVar[dict[str, object]] = {"total_count": 3, "workflow_runs": [
        {"id": 999, "conclusion": None, "created_at": "2026-12-02T02:23:00Z"},
        {"id": 112, "conclusion": "cancelled", "created_at": "2026-12-01T14:00:00Z"},
        {"id": 111, "conclusion": "failure", "created_at": "2026-12-01T02:23:00Z"},
        {"id": "not-a-number", "conclusion": "success", "created_at": "2026-12-02T03:00:00Z"}]}

    def __init__(self) -> None:
        self.asked: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                path, _, query = self.path.partition("?")
                answer: object = None
                if path == "/repos/owner/stapmatrix/actions/workflows/stapmatrix.yml/runs" and \
                        "event=schedule" in query and "branch=main" in query:
                    fake.asked.append("runs")
                    answer = fake.RUNS
                elif path == "/repos/owner/stapmatrix/actions/runs/111/artifacts":
                    fake.asked.append("artifacts/111")
                    answer = {"artifacts": [{"name": "stapmatrix=report", "expired": False}]}
                body = json.dumps(answer).encode()
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_nightly_baseline_is_last_nights_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeGitHub()
    monkeypatch.setenv("GITHUB_API_URL", api.url)
    output = tmp_path / "output"
    args = ["nightly-baseline", "--repository", "owner/stapmatrix", "--workflow-ref",
            "owner/stapmatrix/.github/workflows/stapmatrix.yml@refs/heads/main", "--branch", "main",
            "--artifact", "stapmatrix=report", "--current-run", "999", "--github-output", str(output)]
    assert main(args) == 0
    assert output.read_text() == "run-id=111\ndate=2026-12-01\n"
    api.RUNS = {"workflow_runs": [{"id": 999, "conclusion": "success", "created_at": "2026-12-02T02:23:00Z"}]}
    output.unlink()
    assert main(args) == 0 and not output.exists()
    assert "no earlier scheduled run of main with a report" in capsys.readouterr().err
    monkeypatch.setenv("GITHUB_API_URL", f"{api.url}/nothing-here")
    assert main(args) == 0 and not output.exists(), "an API that fails means no baseline, in one line"
    assert "no baseline tonight: GitHub's API answered 404" in capsys.readouterr().err
    assert main([*args[:4], "../../etc/passwd@x", *args[5:]]) == 2
    monkeypatch.setenv("GITHUB_API_URL", "file:///etc")
    assert main(args) == 2


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and not href.startswith("#"):
            self.hrefs.append(href)


@pytest.mark.real
@pytest.mark.xdist_group("real-cell")
def test_run_lines_plan_a_cell_and_report(deb_kernel: str, deb_stap: str, tmp_path: Path, loopback_registry: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every job in order on a real cell, its registry a real loopback one, GitHub's API a
    local server that answers what GitHub would for last night's run."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # docker login writes here, not ~/.docker
    api = FakeGitHub()
    monkeypatch.setenv("GITHUB_API_URL", api.url)
    for name, value in (("GITHUB_REPOSITORY", "owner/stapmatrix"), ("GITHUB_REF_NAME", "main"),
                        ("GITHUB_RUN_ID", "999")):
        monkeypatch.setenv(name, value)  # what Actions sets in every job
    workspace = tmp_path / "ws"
    repo = workspace / "repo"  # the repository the workflow runs for: the caller's
    (repo / "ci" / "stap").mkdir(parents=True)
    shutil.copy(BEGIN_END, repo / "ci" / "stap" / "begin_end.stp")
    (repo / "ci" / "one-cell.yaml").write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [stap/begin_end.stp]\n")
    # A baseline from an earlier run: begin_end passed on this cell there too (a real record,
    # named as today's cell: --fail-on-vanished fails on a cell or test the new run lacks).
    recorded = json.loads((ROOT / "selftests" / "data" / "run-6.12-deb5.6-deb5.1" / "results.json").read_text())
    baseline = next(r for r in recorded if r["stap"] == "deb:5.6-1" and r["test"] == "begin_end")
    baseline.update(kernel=deb_kernel, kernel_name=deb_kernel, stap=deb_stap, stap_name=deb_stap, artifacts={},
                    cell=f"{deb_kernel}-stap{deb_stap.removeprefix('deb:')}")
    (repo / "ci" / "baseline.json").write_text(json.dumps([baseline]))
    (workspace / "stapmatrix").symlink_to(ROOT)  # the checkout of stapmatrix: this one
    cell = f"{deb_kernel}-stap{deb_stap.removeprefix('deb:')}"
    planned = json.dumps({"include": [{"cell": cell, "kernel": deb_kernel, "stap": deb_stap}]}, separators=(",", ":"))
    table = {
        "inputs.matrix || 'matrix.yaml'": "ci/one-cell.yaml",
        "inputs.name || 'stapmatrix'": "stapmatrix",
        "inputs.python-version || '3.12'": "3.12",
        "github.workspace": str(workspace),
        "matrix.cell": cell,
        "needs.plan.outputs.matrix": planned,
        "inputs.baseline-run-id": "",
        ("inputs.baseline-run-id && 'baseline/results.json' || inputs.baseline && "
         "format('repo/{0}', inputs.baseline) || ''"): "repo/ci/baseline.json",
        "inputs.registry || format('ghcr.io/{0}/stapmatrix', github.repository_owner)": loopback_registry.upper(),
        "github.actor": "stapmatrix-selftest",
        "github.token": "not-a-token",  # the loopback registry asks for none
        "github.event_name": "push",
        "github.workflow_ref": "owner/stapmatrix/.github/workflows/stapmatrix.yml@refs/heads/main",
        "steps.kernel-cache.outputs.cache-hit": "",  # a first job of this kernel: the cache missed
    }
    workflow = load_workflow()
    runner = Runner(workspace, table)
    env = dict(workflow["env"])

    runner.job("plan", workflow["jobs"]["plan"], env)
    include = json.loads(runner.outputs["matrix"])["include"]
    kernel_key = include[0].pop("kernel_key")
    assert re.fullmatch(r"deb-[0-9a-f]{24}", kernel_key)
    assert include == [{"cell": cell, "kernel": deb_kernel, "stap": deb_stap}]
    assert runner.outputs["cells"] == "1"
    assert runner.outputs["registry"] == loopback_registry, "the reference is lower-cased"
    table.update({"needs.plan.outputs.matrix": runner.outputs["matrix"], "matrix.kernel_key": kernel_key,
                  "needs.plan.outputs.registry": runner.outputs["registry"]})

    # The images job: logs in to the registry and makes and pushes every image of the plan.
    runner.job("images", workflow["jobs"]["images"], env)
    said = "".join(runner.errors.values())
    assert "logged in to 127.0.0.1:" in said and "image(s) of 1 cell(s) ready" in said
    assert re.search(r"pushed stapmatrix/runner:\S+ to " + re.escape(loopback_registry), said) or \
        "not fit to share" in said, "every image is pushed, or refused in one line (built by an older harness)"

    runner.job("cell", workflow["jobs"]["cell"], env)
    shard = runner.store / f"stapmatrix=cell={cell}"
    kept = [p.relative_to(shard).as_posix() for p in shard.rglob("*") if p.is_file()]
    assert "junit.xml" in kept and any(k.endswith("/results.json") for k in kept)
    assert any(k.endswith("console-1.log") for k in kept)
    assert not [k for k in kept if k.endswith(".ko") or "vmlinuz" in k or "initramfs" in k], "images uploaded"
    packed = workspace / "kernel-pack" / f"{kernel_key}.tar.zst"
    assert packed.is_file() or packed.with_suffix(".xz").is_file(), "the kernel's tree packed for the cache"
    # The next job of this kernel: the cache restored the pack, and it is unpacked (here the
    # store has the entry already, so it is left as it is).
    table["steps.kernel-cache.outputs.cache-hit"] = "true"
    unpack = next(s for s in workflow["jobs"]["cell"]["steps"] if "kernel-store unpack" in s.get("run", ""))
    assert runner.condition(unpack["if"], {}, failed=False)
    runner.run("unpack", runner.expand(unpack["run"], {}), {})
    assert "already in the kernel store" in runner.errors["unpack"]

    runner.job("report", workflow["jobs"]["report"], env)
    merged = workspace / "report"
    (result,) = read_results(merged / "results.json")
    assert (result.test, result.outcome, result.cell) == ("begin_end", Outcome.PASS, cell)
    assert Path(result.artifacts["console"]).is_file(), "merged results must still point at the shard's logs"
    written = json.loads((merged / "results.json").read_text())[0]["artifacts"]
    assert all(p.startswith(f"shards/stapmatrix=cell={cell}/") for p in written.values()), written
    page = Links()
    page.feed((merged / "report.html").read_text())
    files = [urllib.parse.unquote(href) for href in page.hrefs]
    assert files and all(f.startswith("./shards/") and (merged / f).is_file() for f in files), page.hrefs
    assert ET.parse(merged / "junit.xml").getroot().find(".//testcase") is not None
    summary = next(text for text in runner.summaries.values() if text.startswith("## stapmatrix\n"))
    assert cell in summary and len(summary.encode()) < 1024 * 1024
    assert any("no regressions" in text for text in runner.summaries.values())
    assert (runner.store / "stapmatrix=report" / "results.json").is_file()
    assert (runner.store / "stapmatrix=report" / "history.json").is_file(), "the history goes with the report"

    # The nightly: no baseline given; last night's run (111: it regressed begin_end, which
    # has failed since 2026-11-28) is found through the API and downloaded; tonight fixes it.
    night_store = tmp_path / "run-111"
    shutil.copytree(runner.store / "stapmatrix=report", night_store / "stapmatrix=report")
    last_night = json.loads((merged / "results.json").read_text())
    last_night[0].update(outcome="fail-load", detail="staprun exited 1")
    (night_store / "stapmatrix=report" / "results.json").write_text(json.dumps(last_night))
    (night_store / "stapmatrix=report" / "history.json").write_text(json.dumps({
        "format": "stapmatrix-history-v1", "date": "2026-12-01", "failing": [
            {"kernel_name": deb_kernel, "stap_name": deb_stap, "test": "begin_end", "outcome": "fail-load",
             "since": "2026-11-28"}]}))
    runner.earlier_runs["111"] = night_store
    shutil.rmtree(workspace / "report")
    shutil.rmtree(runner.store / "stapmatrix=report")
    table["github.event_name"] = "schedule"
    table[("inputs.baseline-run-id && 'baseline/results.json' || inputs.baseline && "
           "format('repo/{0}', inputs.baseline) || ''")] = ""
    runner.job("report", workflow["jobs"]["report"], env)
    assert "baseline: run 111 of 2026-12-01T02:23:00Z (failure)" in "".join(runner.errors.values())
    nightly = next(text for text in runner.summaries.values() if "## stapmatrix diff" in text)
    assert "### fixes (did not pass before, pass now) (1)" in nightly and "no regressions" in nightly
    assert json.loads((workspace / "report" / "history.json").read_text())["failing"] == []
    assert api.asked == ["runs", "artifacts/111"], "cancelled and later nights are passed over"
    table["github.event_name"] = "push"
    table[("inputs.baseline-run-id && 'baseline/results.json' || inputs.baseline && "
           "format('repo/{0}', inputs.baseline) || ''")] = "repo/ci/baseline.json"

    # A regression fails the comparison step (its exit code survives the pipe into the summary).
    diff_step = next(s for s in workflow["jobs"]["report"]["steps"] if "sm diff" in s.get("run", ""))
    before = repo / "ci" / "before.json"
    shutil.copy(merged / "results.json", before)
    records = json.loads((merged / "results.json").read_text())
    records[0].update(outcome="fail-load", detail="staprun exited 1")
    (merged / "results.json").write_text(json.dumps(records))
    with pytest.raises(AssertionError, match="failed"):
        runner.run("regressed", runner.expand(diff_step["run"], {}), {"BASELINE": str(before)})

    # A planned cell whose job brought nothing fails the report job, naming it; the summary
    # and the upload still run.
    missing = f"{deb_kernel}-stap9.9-1"
    shutil.rmtree(workspace / "report")
    shutil.rmtree(runner.store / "stapmatrix=report")
    table["needs.plan.outputs.matrix"] = json.dumps({"include": [{"cell": cell}, {"cell": missing}]})
    with pytest.raises(AssertionError, match="job report failed: .'Merge the cells"):
        runner.job("report", workflow["jobs"]["report"], env)
    said = next(text for label, text in runner.errors.items() if "planned cell(s)" in text)
    assert f"1 of 2 planned cell(s) brought no results: {missing}" in said
    assert (runner.store / "stapmatrix=report" / "results.json").is_file()


@pytest.mark.real
@pytest.mark.xdist_group("real-cell")
def test_sharded_run_equals_the_whole_run(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    """The same 1 kernel x 2 systemtap matrix run at once and as one --cell run per cell,
    merged: the same outcome for every (kernel, systemtap, test), and those outcomes the real
    ones (a run where every cell is `error` would compare equal too): systemtap 5.6 passes on
    6.12; trixie's 5.1-5 fails to load there ("Can't resolve uprobe_unregister": 6.12 split
    uprobe_unregister(), selftests/data/results-stap5.1-on-6.12.log)."""
    other = systemtap_of("trixie")
    matrix = tmp_path / "two.yaml"
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}', '{other}']\ntests: [{BEGIN_END}]\n")

    def pytest_run(artifacts: Path, *args: str) -> int:
        env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(artifacts))
        completed = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", f"--matrix={matrix}", "--reruns=0",
                                    *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
                                   check=False)
        print(completed.stdout[-3000:], completed.stderr[-2000:])
        return completed.returncode

    code = pytest_run(tmp_path / "whole")
    (whole_file,) = (tmp_path / "whole").glob("run-*/results.json")
    records = {key(r): r for r in read_results(whole_file)}
    whole = {k: r.outcome for k, r in records.items()}
    cells = sorted({r.cell for r in records.values()})
    assert len(cells) == 2 and len(whole) == 2
    assert whole[(deb_kernel, deb_stap, "begin_end")] is Outcome.PASS, records
    assert whole[(deb_kernel, other, "begin_end")] is not Outcome.ERROR, records
    if other == "deb:5.1-5":  # measured: every 5.1-5 module fails to load on 6.12
        assert whole[(deb_kernel, other, "begin_end")] is Outcome.FAIL_LOAD
        assert "Can't resolve uprobe_unregister" in records[(deb_kernel, other, "begin_end")].detail
    assert code == (0 if all(o is Outcome.PASS for o in whole.values()) else 1)

    for cell in cells:
        shard_code = pytest_run(tmp_path / f"shard-{cell}", f"--cell={cell}")
        assert shard_code in (0, 1), "pytest did not run the cell"
    shards = sorted(tmp_path.glob("shard-*/run-*/results.json"))
    assert len(shards) == 2
    merged_file = tmp_path / "merged" / "results.json"
    completed = subprocess.run([str(Path(sys.executable).parent / "stapmatrix"), "report", *map(str, shards),
                                "--json", str(merged_file), "--expect-cells", ",".join(cells)],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    merged = {key(r): r.outcome for r in load_runs([merged_file])}
    print(json.dumps({" / ".join(k): v.value for k, v in merged.items()}, indent=1))
    assert merged == whole
