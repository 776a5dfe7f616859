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
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.outcomes import Outcome, read_results
from harness.report.load import key, load_runs
from selftests.archive_choice import systemtap_of

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
    assert list(jobs) == ["plan", "cell", "report"]
    assert all(job["timeout-minutes"] and job["runs-on"] == "ubuntu-24.04" for job in jobs.values())

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
    upload = steps[step_index(steps, lambda s: "upload-artifact" in s.get("uses", ""))]
    assert upload["if"] == "always()" and "matrix.cell" in upload["with"]["name"]
    assert all(not line.startswith("-") for line in upload["with"]["path"].split())

    report = jobs["report"]
    assert report["if"] == "${{ !cancelled() && needs.plan.result == 'success' }}"
    assert report["needs"] == ["plan", "cell"]
    runs = [s["run"] for s in report["steps"] if "run" in s]
    assert any("GITHUB_STEP_SUMMARY" in r and "sm report" in r for r in runs)
    assert any("sm diff" in r for r in runs)


def test_every_run_line_calls_the_project() -> None:
    """A thin workflow: every `run:` calls ./sm, except the udev rule GitHub's runners need."""
    for job in load_workflow()["jobs"].values():
        for step in job["steps"]:
            if "run" in step and "udevadm" not in step["run"]:
                assert step["run"].lstrip().startswith("stapmatrix/sm "), step["run"]


# ----------------------------------------------------------------------------------------
# The run: lines, for real


class Runner:
    """Runs a job's steps as GitHub would, as far as this machine allows."""

    def __init__(self, workspace: Path, table: dict[str, str]) -> None:
        self.workspace = workspace
        self.table = table  # expression text -> value
        self.store = workspace.parent / "artifact-store"  # what upload-artifact would keep
        self.summaries: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.ran: list[str] = []

    def expand(self, text: str, env: dict[str, str]) -> str:
        def value(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("env.") and expression[4:] in env:
                return env[expression[4:]]
            if expression not in self.table:
                pytest.fail(f"the workflow has an expression this test does not know: {expression!r}; "
                            "add it to the table in selftests/test_workflow.py")
            return self.table[expression]

        return EXPRESSION.sub(value, text)

    def condition(self, text: str, env: dict[str, str]) -> bool:
        wrapped = EXPRESSION.fullmatch(text.strip())
        expression = wrapped.group(1) if wrapped else text.strip()
        if expression == "always()":
            return True
        match = re.fullmatch(r"env\.(\w+) != ''", expression)
        if match:
            return env.get(match.group(1), "") != ""
        pytest.fail(f"the workflow has a step condition this test does not know: {text!r}")

    def job(self, name: str, job: dict[str, Any], workflow_env: dict[str, str]) -> None:
        env = {k: self.expand(str(v), {}) for k, v in workflow_env.items()}
        env.update({k: self.expand(str(v), env) for k, v in job.get("env", {}).items()})
        for number, step in enumerate(job["steps"]):
            step_env = dict(env, **{k: self.expand(str(v), env) for k, v in step.get("env", {}).items()})
            if "if" in step and not self.condition(step["if"], step_env):
                continue
            if "uses" in step:
                self.action(step, step_env)
                continue
            if "udevadm" in step["run"]:
                continue  # GitHub's runners only: /dev/kvm here is as the host made it
            self.run(f"{name}-{number}", self.expand(step["run"], step_env), step_env)

    def run(self, label: str, script: str, env: dict[str, str]) -> None:
        output = self.workspace.parent / f"output-{label}"
        summary = self.workspace.parent / f"summary-{label}.md"
        output.touch()
        summary.touch()
        environment = dict(os.environ, **env, GITHUB_WORKSPACE=str(self.workspace), GITHUB_OUTPUT=str(output),
                           GITHUB_STEP_SUMMARY=str(summary), CI="true")
        completed = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=self.workspace, env=environment,
                                   capture_output=True, text=True, timeout=3600, check=False)
        print(f"--- {label}: {script}\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
        assert completed.returncode == 0, f"step {label} failed: {script}"
        self.ran.append(script)
        self.summaries[label] = summary.read_text()
        for line in output.read_text().splitlines():
            name, _, value = line.partition("=")
            self.outputs[name] = value

    def action(self, step: dict[str, Any], env: dict[str, str]) -> None:
        uses = step["uses"]
        if not uses.startswith(("actions/upload-artifact@", "actions/download-artifact@")):
            return  # checkout, setup-python, cache: this machine has what they would bring
        given = {k: self.expand(str(v), env) for k, v in step.get("with", {}).items()}
        if uses.startswith("actions/upload-artifact@"):
            self.upload(given["name"], given["path"].split())
        elif uses.startswith("actions/download-artifact@"):
            destination = self.workspace / given["path"]
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
def test_run_lines_plan_a_cell_and_report(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    repo = workspace / "repo"  # the repository the workflow runs for: the caller's
    (repo / "ci" / "stap").mkdir(parents=True)
    shutil.copy(BEGIN_END, repo / "ci" / "stap" / "begin_end.stp")
    (repo / "ci" / "one-cell.yaml").write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [stap/begin_end.stp]\n")
    # A baseline from an earlier run: begin_end passed on this cell there too.
    shutil.copy(ROOT / "selftests" / "data" / "run-6.12-deb5.6-deb5.1" / "results.json", repo / "ci" / "baseline.json")
    (workspace / "stapmatrix").symlink_to(ROOT)  # the checkout of stapmatrix: this one
    cell = f"{deb_kernel}-stap{deb_stap.removeprefix('deb:')}"
    table = {
        "inputs.matrix || 'matrix.yaml'": "ci/one-cell.yaml",
        "inputs.name || 'stapmatrix'": "stapmatrix",
        "inputs.python-version || '3.12'": "3.12",
        "github.workspace": str(workspace),
        "matrix.cell": cell,
        "inputs.baseline-run-id": "",
        ("inputs.baseline-run-id && 'baseline/merged/results.json' || inputs.baseline && "
         "format('repo/{0}', inputs.baseline) || ''"): "repo/ci/baseline.json",
    }
    workflow = load_workflow()
    runner = Runner(workspace, table)
    env = dict(workflow["env"])

    runner.job("plan", workflow["jobs"]["plan"], env)
    include = json.loads(runner.outputs["matrix"])["include"]
    assert include == [{"cell": cell, "kernel": deb_kernel, "stap": deb_stap}]
    assert runner.outputs["cells"] == "1"

    runner.job("cell", workflow["jobs"]["cell"], env)
    shard = runner.store / f"stapmatrix-cell-{cell}"
    kept = [p.relative_to(shard).as_posix() for p in shard.rglob("*") if p.is_file()]
    assert "junit.xml" in kept and any(k.endswith("/results.json") for k in kept)
    assert any(k.endswith("console-1.log") for k in kept)
    assert not [k for k in kept if k.endswith(".ko") or "vmlinuz" in k or "initramfs" in k], "images uploaded"

    runner.job("report", workflow["jobs"]["report"], env)
    merged = workspace / "merged"
    (result,) = read_results(merged / "results.json")
    assert (result.test, result.outcome, result.cell) == ("begin_end", Outcome.PASS, cell)
    assert Path(result.artifacts["console"]).is_file(), "merged results must still point at the shard's logs"
    assert json.loads((merged / "results.json").read_text())[0]["artifacts"]["console"].startswith("../shards/")
    page = Links()
    page.feed((merged / "report.html").read_text())
    assert page.hrefs and all((merged / href).exists() for href in page.hrefs), page.hrefs
    assert ET.parse(merged / "junit.xml").getroot().find(".//testcase") is not None
    summary = next(text for text in runner.summaries.values() if text.startswith("## stapmatrix\n"))
    assert cell in summary and len(summary.encode()) < 1024 * 1024
    assert any("no regressions" in text for text in runner.summaries.values())

    # A regression fails the comparison step (its exit code survives the pipe into the summary).
    diff_step = next(s for s in workflow["jobs"]["report"]["steps"] if "sm diff" in s.get("run", ""))
    before = repo / "ci" / "before.json"
    shutil.copy(merged / "results.json", before)
    records = json.loads((merged / "results.json").read_text())
    records[0].update(outcome="fail-load", detail="staprun exited 1")
    (merged / "results.json").write_text(json.dumps(records))
    with pytest.raises(AssertionError, match="failed"):
        runner.run("regressed", runner.expand(diff_step["run"], {}), {"BASELINE": str(before)})


@pytest.mark.real
@pytest.mark.xdist_group("real-cell")
def test_sharded_run_equals_the_whole_run(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    """The same 1 kernel x 2 systemtap matrix run at once and as one --cell run per cell,
    merged: the same outcome for every (kernel, systemtap, test)."""
    matrix = tmp_path / "two.yaml"
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}', '{systemtap_of('trixie')}']\ntests: [{BEGIN_END}]\n")

    def pytest_run(artifacts: Path, *args: str) -> None:
        env = dict(os.environ, STAPMATRIX_ARTIFACTS=str(artifacts))
        completed = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", f"--matrix={matrix}", "--reruns=0",
                                    *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
                                   check=False)
        print(completed.stdout[-3000:], completed.stderr[-2000:])
        assert completed.returncode in (0, 1), "pytest did not run the matrix"  # 1: 5.1 fails on 6.12

    pytest_run(tmp_path / "whole")
    (whole_file,) = (tmp_path / "whole").glob("run-*/results.json")
    whole = {key(r): r.outcome for r in read_results(whole_file)}
    cells = sorted({r.cell for r in read_results(whole_file)})
    assert len(cells) == 2 and len(whole) == 2

    for cell in cells:
        pytest_run(tmp_path / f"shard-{cell}", f"--cell={cell}")
    shards = sorted(tmp_path.glob("shard-*/run-*/results.json"))
    assert len(shards) == 2
    merged_file = tmp_path / "merged" / "results.json"
    completed = subprocess.run([str(Path(sys.executable).parent / "stapmatrix"), "report", *map(str, shards),
                                "--json", str(merged_file)], capture_output=True, text=True, timeout=300,
                               check=False)
    assert completed.returncode == 0, completed.stderr
    merged = {key(r): r.outcome for r in load_runs([merged_file])}
    print(json.dumps({" / ".join(k): v.value for k, v in merged.items()}, indent=1))
    assert merged == whole
