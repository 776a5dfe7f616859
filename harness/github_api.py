"""The one question stapmatrix asks GitHub's REST API: which earlier scheduled run of this
workflow, on this branch, is last night's, the baseline of tonight's nightly?

    stapmatrix nightly-baseline --repository OWNER/REPO --workflow-ref REF --branch B --artifact NAME

The answer is the newest completed scheduled run, other than this one, that finished its report:
its conclusion success or failure (a night that failed because something regressed is still
last night: otherwise a regression would count as new every night until it is fixed, and
"still failing since" could never be said), and its merged results (the artifact NAME) not
expired. Cancelled or timed-out nights are skipped.

The API is `GITHUB_API_URL` (Actions sets it; GitHub Enterprise Server has its own) with the
job's token. Its answers are input from outside: bounded in size and time, checked field by
field; a failure is one line, and the nightly then runs without a baseline.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from harness.errors import InfraError, MatrixError

ANSWER_LIMIT = 8 * 1024 * 1024
TIMEOUT_S = 30
RUNS_PER_PAGE = 30  # nights looked back at most
REPOSITORY_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
WORKFLOW_REF_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/\.github/workflows/(?P<file>[A-Za-z0-9_.-]+\.ya?ml)@\S+")
BRANCH_RE = re.compile(r"[A-Za-z0-9_./+-]{1,250}")
ARTIFACT_RE = re.compile(r"[A-Za-z0-9._=+-]{1,200}")
FINISHED = ("success", "failure")


@dataclass(frozen=True)
class Night:
    run_id: int
    created_at: str  # ISO 8601, as GitHub gives it
    conclusion: str

    @property
    def date(self) -> str:
        return self.created_at[:10]


def _checked(value: str, pattern: re.Pattern[str], option: str, example: str) -> str:
    if not pattern.fullmatch(value):
        raise MatrixError(f"{option} {value[:200]!r} is not valid: give e.g. {example}")
    return value


def workflow_file(workflow_ref: str) -> str:
    """`owner/repo/.github/workflows/stapmatrix.yml@refs/heads/main` -> `stapmatrix.yml`
    (github.workflow_ref: the caller's workflow when this one is called)."""
    match = WORKFLOW_REF_RE.fullmatch(workflow_ref)
    if not match:
        raise MatrixError(f"--workflow-ref {workflow_ref[:200]!r} is not OWNER/REPO/.github/workflows/FILE.yml@REF "
                          "(give ${{ github.workflow_ref }})")
    return match["file"]


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.github+json",
                                                   "X-GitHub-Api-Version": "2022-11-28",
                                                   **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            body = answer.read(ANSWER_LIMIT + 1)
    except urllib.error.HTTPError as error:
        raise InfraError(f"GitHub's API answered {error.code} for {url.split('?')[0]} (is `actions: read` granted?)") \
            from None
    except (urllib.error.URLError, OSError) as error:
        raise InfraError(f"GitHub's API at {url.split('?')[0]} did not answer ({error.__class__.__name__})") from None
    if len(body) > ANSWER_LIMIT:
        raise InfraError(f"GitHub's API answered more than {ANSWER_LIMIT} bytes for {url.split('?')[0]}")
    try:
        return json.loads(body)
    except ValueError:
        raise InfraError(f"GitHub's API answered something that is not JSON for {url.split('?')[0]}") from None


def api_url() -> str:
    url = os.environ.get("GITHUB_API_URL", "").rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?", url):
        raise MatrixError(f"GITHUB_API_URL={url[:200]!r} is not an http(s) URL: run this in GitHub Actions, which sets "
                          "it, or set it to your GitHub's API")
    return url


def _nights(document: Any) -> list[Night]:
    runs = document.get("workflow_runs") if isinstance(document, dict) else None
    if not isinstance(runs, list):
        raise InfraError("GitHub's API answered without workflow_runs")
    nights = []
    for run in runs[:RUNS_PER_PAGE]:
        if isinstance(run, dict) and isinstance(run.get("id"), int) and isinstance(run.get("created_at"), str) \
                and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z", run["created_at"]):
            nights.append(Night(run["id"], run["created_at"], str(run.get("conclusion"))))
    return nights


def _has_artifact(base: str, repository: str, run_id: int, artifact: str, token: str) -> bool:
    query = urllib.parse.urlencode({"name": artifact, "per_page": 10})
    document = _get(f"{base}/repos/{repository}/actions/runs/{run_id}/artifacts?{query}", token)
    found = document.get("artifacts") if isinstance(document, dict) else None
    return isinstance(found, list) and any(isinstance(a, dict) and a.get("name") == artifact and a.get("expired") is False
                                           for a in found)


def last_night(repository: str, workflow_ref: str, branch: str, artifact: str, current_run: int,
               token: str) -> Night | None:
    """The run tonight's nightly compares with, or None (the first night, or every earlier
    night's report expired)."""
    _checked(repository, REPOSITORY_RE, "--repository", "owner/stapmatrix")
    _checked(branch, BRANCH_RE, "--branch", "main")
    _checked(artifact, ARTIFACT_RE, "--artifact", "stapmatrix=report")
    base = api_url()
    query = urllib.parse.urlencode({"branch": branch, "event": "schedule", "status": "completed",
                                    "per_page": RUNS_PER_PAGE, "exclude_pull_requests": "true"})
    document = _get(f"{base}/repos/{repository}/actions/workflows/{workflow_file(workflow_ref)}/runs?{query}", token)
    for night in sorted(_nights(document), key=lambda n: n.created_at, reverse=True):
        if night.run_id != current_run and night.conclusion in FINISHED and \
                _has_artifact(base, repository, night.run_id, artifact, token):
            return night
    return None
