"""The `stapmatrix` command: run one cell, check a matrix, clean up.

    stapmatrix run --kernel KVER --stap SPEC [--json FILE] [--timeout S] [--stap-arg ARG]... SCRIPT...
    stapmatrix check [--matrix FILE]      validate a matrix and print its plan
    stapmatrix plan [--matrix FILE] [--github [--github-output FILE]]   the cell ids (a GitHub job matrix)
    stapmatrix clean [--images]           remove containers (and images) of ours
    stapmatrix report RUN... [--html F] [--markdown F] [--json F] [--junit F]   the grid of merged runs
    stapmatrix diff BASE NEW [--format text|markdown|json]   what regressed; exit 1 if anything did
    stapmatrix bisect --kernel git:REPO --good REF --bad REF --stap SPEC SCRIPT   the commit that changed it
    stapmatrix bisect --stap git:REPO --good REF --bad REF --kernel KERNEL SCRIPT

`run` uses the same machinery as the pytest items and is the reproducer they print.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.status import Status
from rich.text import Text

from harness import bisect, docker_env, github_api, images, kernel_pack, kernel_store, kernels, registry, staps
from harness.archive import Archive
from harness.cell import CellContext, check_reruns
from harness.errors import InfraError, MatrixError, StapmatrixError
from harness.kconfig import parse_config_items
from harness.outcomes import Outcome, Result
from harness.plan import Cell, Plan, make_cell, stap_tests
from harness.progress import Event, ImagePulled, ImagePushed, ImagePushFailed, ProgressLog
from harness.report import diff as report_diff
from harness.report import history
from harness.report.escape import terminal, terminal_line
from harness.report.grid import cell_id
from harness.report.html import render_html, write_run_reports
from harness.report.junit import write_junit
from harness.report.load import load_runs, write_merged
from harness.report.markdown import render_markdown
from harness.report.terminal import render_terminal
from harness.scripts import load_script
from harness.session import Session, new_run_dir, plan_matrix, prepare_process
from harness.settings import mirror, security_mirror
from harness.specs import CELL_ID_RE, check_value, expand_path, parse_kernel_spec, parse_stap_spec
from harness.testsets import EXAMPLES, make_test_set

console = Console(stderr=True, soft_wrap=True)


def progress(message: str) -> None:
    """What `stapmatrix run` shows of each event: a timestamped line and the spinner's text."""
    console.print(time.strftime("%H:%M:%S"), message, markup=False, highlight=False)
    if STATUS:
        STATUS[0].update(f"{time.strftime('%H:%M:%S')} {message[:100]}")


STATUS: list[Status] = []  # the live spinner of `stapmatrix run` on a terminal
STYLE = {Outcome.PASS: "green", Outcome.XFAIL: "yellow", Outcome.ERROR: "magenta"}


def command_run(args: argparse.Namespace) -> int:
    config = parse_config_items([(item, "--kernel-config") for item in args.kernel_config], Path.cwd()) \
        if args.kernel_config else ()
    kernel_spec = parse_kernel_spec(args.kernel, "--kernel", config=config)
    spec = parse_stap_spec(args.stap, "--stap")
    registry.configured()  # a bad STAPMATRIX_REGISTRY is bad input, before anything runs
    if args.timeout is not None and not 1 <= args.timeout <= 3600:
        raise MatrixError(f"--timeout {args.timeout}: give whole seconds between 1 and 3600")
    check_reruns(args.reruns)
    scripts = tuple(load_script(Path(s), tuple(args.stap_arg), args.timeout, where=s) for s in args.scripts)
    names = [s.name for s in scripts]
    if len(set(names)) != len(names):
        raise MatrixError(f"two scripts share a name: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    archive = Archive()
    kernel = kernels.resolve(kernel_spec, "--kernel", archive)
    stap = staps.resolve(spec, "--stap", archive)
    path = expand_path(args.testsuite_path, Path.cwd(), "--testsuite-path") if args.testsuite_path else None
    test_sets = tuple(make_test_set(selector, "--testsuite", args.testsuite_include, args.testsuite_exclude,
                                    path if selector == EXAMPLES else None) for selector in args.testsuite)
    if path is not None and EXAMPLES not in args.testsuite:
        raise MatrixError("--testsuite-path names a directory of examples: give it with --testsuite examples")
    if stap.spec.kind == "deb" and any(not s.is_examples for s in test_sets):
        raise MatrixError("DejaGnu test sets (smoke, all, .exp files) need a git: or path: systemtap build: Debian "
                          "packages ship no testsuite; `--testsuite examples` runs on every build")
    work = stap_tests(stap, test_sets, archive, "--testsuite")
    if not scripts and not work:
        raise MatrixError("nothing to run: give scripts, --testsuite sets (examples, smoke, .exp files), or both"
                          + (" (the --testsuite filters leave no test)" if test_sets else ""))
    cell = make_cell(kernel, stap, scripts, work)
    prepare_process(docker_required=True)
    run_dir = new_run_dir()
    console.print(f"cell {cell.id}: {kernel.spec.spec} ({kernel.identity}) x {stap.spec.spec} ({stap.identity}); "
                  f"base {cell.base_suite}: {cell.base_reason}; artifacts in {run_dir}", markup=False, highlight=False)
    started = time.monotonic()
    session = Session(Plan((kernel,), (stap,), (cell,)), run_dir, CellContext(reruns=args.reruns), archive, progress)
    try:
        with console.status("starting", spinner="dots") as status:
            if console.is_terminal:
                STATUS.append(status)
            session.run(cell)
    finally:
        STATUS.clear()
        docker_env.remove_own_containers()
    json_path = Path(args.json) if args.json else run_dir / "results.json"
    results = session.merge(json_path)
    for result in results:
        style = STYLE.get(result.outcome, "red")
        console.print(Text(f"{result.outcome.value:12}", style=style) + Text(f" {cell.id} {terminal_line(result.test)}"))
        if result.detail:
            console.print("    " + terminal(result.detail).replace("\n", "\n    "), markup=False, highlight=False)
    render_terminal(results, console)
    write_run_reports(run_dir, results)
    console.print(f"{len(results)} test(s) in {time.monotonic() - started:.0f} s; results: {json_path}; "
                  f"report: {run_dir / 'report.html'}", markup=False, highlight=False)
    return 0 if all(r.outcome in (Outcome.PASS, Outcome.SKIP) for r in results) else 1


def command_bisect(args: argparse.Namespace) -> int:
    """The first commit of --good..--bad at which the test's outcome became what it is at --bad."""
    request = bisect_request(args)
    prepare_process(docker_required=True)
    run_dir = new_run_dir()
    console.print(f"bisect {request.side} commits of {args.kernel if request.side == 'kernel' else args.stap} "
                  f"{request.good}..{request.bad}, test {request.test}; artifacts in {run_dir}",
                  markup=False, highlight=False)
    log = ProgressLog(run_dir / "progress.log")

    def events(event: Event) -> None:
        log(event)
        progress(event.text())

    try:
        with console.status("starting", spinner="dots") as status:
            if console.is_terminal:
                STATUS.append(status)
            report = bisect.bisect(request, run_dir, events, progress)
    finally:
        STATUS.clear()
        docker_env.remove_own_containers()
    sys.stdout.write(bisect.render_text(report))
    json_path = Path(args.json) if args.json else run_dir / "bisect.json"
    write_output("--json", json_path, lambda p: bisect.write_json(report, p))
    markdown = bisect.render_markdown(report)
    (run_dir / "bisect.md").write_text(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY", "")
    if summary:
        write_output("GITHUB_STEP_SUMMARY", Path(summary), lambda p: p.open("a").write(markdown))
    console.print(f"bisect results: {json_path}; markdown: {run_dir / 'bisect.md'}", markup=False, highlight=False)
    return 0 if report.first_changed or report.candidates else 1


def bisect_request(args: argparse.Namespace) -> bisect.BisectRequest:
    """The command line checked: which side is bisected (the git: one given with --good and
    --bad), the other side, exactly one script or test sets."""
    config = parse_config_items([(item, "--kernel-config") for item in args.kernel_config], Path.cwd()) \
        if args.kernel_config else ()
    kernel = parse_kernel_spec(_with_ref(args.kernel, args.good), "--kernel", config=config)
    stap = parse_stap_spec(_with_ref(args.stap, args.good), "--stap")
    git_sides = [side for side, spec in (("kernel", kernel), ("stap", stap)) if spec.kind == "git"
                 and not _has_ref(args.kernel if side == "kernel" else args.stap)]
    if len(git_sides) != 1:
        raise MatrixError("bisect: give exactly one of --kernel git:REPO or --stap git:REPO without @REF (the "
                          "side whose commits --good..--bad are), and the other side as a fixed build")
    side = git_sides[0]
    check_reruns(args.reruns)
    scripts = tuple(load_script(Path(s), (), None, where=s) for s in args.scripts)
    test_sets = tuple(make_test_set(selector, "--testsuite", args.testsuite_include, args.testsuite_exclude)
                      for selector in args.testsuite)
    if len(scripts) + (1 if test_sets else 0) != 1 or len(scripts) > 1:
        raise MatrixError("bisect: give one SCRIPT or --testsuite sets (judged together), not both and not several "
                          "scripts: a bisection follows one outcome")
    repo = (kernel if side == "kernel" else stap).value
    return bisect.BisectRequest(side, repo, args.good, args.bad, kernel, stap, scripts, test_sets, args.reruns)


def _has_ref(text: str) -> bool:
    return text.startswith("git:") and "@" in text.partition(":")[2]


def _with_ref(text: str, ref: str) -> str:
    """`git:REPO` given without @REF is the bisected side: check it as REPO@--good."""
    return f"{text}@{ref}" if text.startswith("git:") and not _has_ref(text) else text


def cell_work(cell: Cell) -> str:
    """A cell's tests in a few words: its scripts by name, systemtap's own tests counted."""
    parts = [t.name for t in cell.tests]
    if cell.examples:
        kinds = Counter(t.kind for t in cell.examples)
        parts.append(f"{len(cell.examples)} example test(s) ({kinds['check']} check, {kinds['installcheck']} "
                     f"installcheck) from {cell.work.corpus.origin if cell.work.corpus else ''}")
    if cell.dejagnu:
        bound = sum(1 for f in cell.dejagnu if f.host_bound)
        parts.append(f"{len(cell.dejagnu)} DejaGnu file(s)" + (f", {bound} of them not run (stap --remote cannot "
                                                                "judge them)" if bound else ""))
    return ", ".join(parts)


def describe_plan(matrix_path: Path, plan: Plan) -> list[str]:
    """What `check` prints: where every kernel and systemtap build comes from, each cell's
    base and why."""
    lines = [(f"{matrix_path}: {len(plan.kernels)} kernel(s) x {len(plan.staps)} systemtap build(s) = "
             f"{len(plan.cells)} cell(s); mirror {mirror().url} ({mirror().origin}), "
             f"security {security_mirror().url}")]
    images_from = registry.configured()
    if images_from:
        lines.append(f"  images: looked up in {images_from.reference} before they are built"
                     + ("; what is built is pushed there" if images_from.push else " (no push)"))
    for kernel in plan.kernels:
        name = f" [{kernel.spec.name}]" if kernel.spec.name else ""
        detail = kernel.identity if kernel.spec.kind != "deb" else f"{kernel.origin} {kernel.identity.split()[0]}"
        extra = f", headers call {' '.join(kernel.compilers)}" if kernel.compilers else ""
        if kernel.download_bytes:
            extra += f", {kernel.download_bytes // (1024 * 1024)} MiB to download"
        if kernel.spec.kind == "git":
            extra += f", release {kernel.release}, config {' + '.join(i.partition(':')[2] for i in kernel.spec.config) or 'defconfig + kvm_guest.config'} + systemtap's needs"
        lines.append(f"  kernel {kernel.spec.spec}{name}: {detail}{extra}")
    for stap in plan.staps:
        name = f" [{stap.spec.name}]" if stap.spec.name else ""
        lines.append(f"  systemtap {stap.spec.spec}{name}: {stap.identity}")
    for cell in plan.cells:
        lines.append(f"  cell {cell.id}: base {cell.base_suite} ({cell.base_reason}): "
                     f"{cell_work(cell)}")
    return lines


def command_check(args: argparse.Namespace) -> int:
    matrix, plan = plan_matrix(Path(args.matrix), Archive())
    print("\n".join(describe_plan(matrix.path, plan)))
    return 0


GITHUB_MATRIX_LIMIT = 256  # jobs one GitHub Actions matrix may generate
ARTIFACT_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def github_matrix(plan: Plan, matrix_path: Path) -> dict[str, list[dict[str, str]]]:
    """The cells as a GitHub Actions job matrix (`strategy.matrix: ${{ fromJSON(...) }}`): one
    job per cell, which runs `pytest --cell=ID`. Ids hold only [A-Za-z0-9._+-], so they are valid
    artifact and job names as they are."""
    if len(plan.cells) > GITHUB_MATRIX_LIMIT:
        raise MatrixError(
            f"{matrix_path}: {len(plan.cells)} cells, but a GitHub Actions matrix runs at most "
            f"{GITHUB_MATRIX_LIMIT} jobs: split the matrix into files of at most {GITHUB_MATRIX_LIMIT} cells "
            "(e.g. the kernels in two halves, each file with every systemtap build) and call the workflow "
            "once per file, or leave cells out with `exclude:`")
    return {"include": [{"cell": cell.id, "kernel": cell.kernel.spec.spec, "stap": cell.stap.spec.spec,
                         "kernel_key": cell.kernel.key} for cell in plan.cells]}


def command_plan(args: argparse.Namespace) -> int:
    """The cells of a matrix, checked like `check` does (every kernel and systemtap build
    resolved): one id per line, or with --github a job matrix for GitHub Actions."""
    if args.artifact_prefix is not None and not ARTIFACT_PREFIX_RE.fullmatch(args.artifact_prefix):
        raise MatrixError(f"--artifact-prefix {args.artifact_prefix!r}: give letters, digits, '.', '_' and '-' only "
                          "(up to 64): artifacts are named PREFIX=cell=ID and cache keys PREFIX/..., so a prefix "
                          "with '=' or '/' could match another call's")
    matrix, plan = plan_matrix(Path(args.matrix), Archive())
    for line in describe_plan(matrix.path, plan):
        console.print(line, markup=False, highlight=False)
    if not args.github:
        print("\n".join(cell.id for cell in plan.cells))
        return 0
    text = json.dumps(github_matrix(plan, matrix.path), separators=(",", ":"))
    print(text)
    images_from = ""
    if args.registry and args.registry != "-":
        # GitHub's expressions cannot lower-case an owner's name; a registry reference must be.
        images_from = registry.parse_reference(args.registry.lower(), "--registry")
    if args.github_output:
        with open(args.github_output, "a") as output:  # GitHub's `name=value` lines: one line of JSON
            output.write(f"matrix={text}\ncells={len(plan.cells)}\nregistry={images_from}\n")
    return 0


def add_plan_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = commands.add_parser("plan", help="print the cells of a matrix (with --github: a GitHub Actions job matrix)")
    plan.add_argument("--matrix", default="matrix.yaml")
    plan.add_argument("--github", action="store_true",
                      help='print {"include": [{"cell": ID, "kernel": SPEC, "stap": SPEC}, ...]} on one line; '
                           f"more than {GITHUB_MATRIX_LIMIT} cells is an error")
    plan.add_argument("--github-output", metavar="FILE",
                      help="with --github: also append `matrix=JSON` and `cells=N` to FILE ($GITHUB_OUTPUT)")
    plan.add_argument("--registry", metavar="REFERENCE",
                      help="with --github-output: also write `registry=REFERENCE`, lower-cased and checked "
                           "(`-`: none), the STAPMATRIX_REGISTRY of the workflow's images and cell jobs")
    plan.add_argument("--artifact-prefix", metavar="NAME",
                      help="check NAME, the workflow's prefix of artifact names and cache keys: letters, digits, "
                           "'.', '_', '-'")
    plan.set_defaults(handler=command_plan)


def command_clean(args: argparse.Namespace) -> int:
    client = docker_env.client()
    for name in docker_env.remove_orphans():
        print(f"removed container {name} (its run is gone)")
    if args.kernels:
        for path, size in kernel_store.entries():
            kernel_store.remove_tree(path)
            print(f"removed kernel tree {path} ({size // (1024 * 1024)} MiB)")
        for marker in kernel_store.store_dir().glob(".*.failed"):
            marker.unlink()
            print(f"forgot the failed build {marker.name}")
    if args.images:
        for image in client.images.list(filters={"label": f"{docker_env.LABEL}=1"}):
            for tag in image.tags:
                client.images.remove(tag, force=True)
                print(f"removed image {tag}")
    return 0


def command_images(args: argparse.Namespace) -> int:
    """Every distinct image of the plan, once: found, pulled or built, and with
    STAPMATRIX_REGISTRY_PUSH=1 in the registry afterwards (a workflow's images job)."""
    _, plan = plan_matrix(Path(args.matrix), Archive(), args.cell)
    prepare_process(docker_required=True)
    settled: set[str] = set()  # built or pulled here: ensure pushed what it built

    def show(event: Event) -> None:
        if isinstance(event, (ImagePushed, ImagePushFailed, ImagePulled)):
            settled.add(event.tag)
        progress(event.text())

    tags: list[str] = []
    for cell in plan.cells:
        tags += [tag for tag in images.make_cell_images(cell, show) if tag not in tags]
    for tag in tags:
        if tag not in settled:
            registry.publish(tag, show)
    console.print(f"{len(tags)} image(s) of {len(plan.cells)} cell(s) ready: " + " ".join(tags),
                  markup=False, highlight=False)
    return 0


def command_registry_login(args: argparse.Namespace) -> int:
    """`docker login` to STAPMATRIX_REGISTRY's host with REGISTRY_USER and REGISTRY_TOKEN (the
    token on stdin, never in argv), so that this process's Docker clients may pull and push."""
    images_from = registry.configured()
    if images_from is None:
        raise MatrixError("registry-login: STAPMATRIX_REGISTRY is not set: name the registry "
                          "(e.g. STAPMATRIX_REGISTRY=ghcr.io/OWNER/stapmatrix)")
    user, token = os.environ.get("REGISTRY_USER", ""), os.environ.get("REGISTRY_TOKEN", "")
    if not user or not token:
        raise MatrixError("registry-login: set REGISTRY_USER and REGISTRY_TOKEN (in a workflow: github.actor and "
                          "github.token)")
    try:
        completed = subprocess.run(["docker", "login", images_from.host, "--username", user, "--password-stdin"],
                                   input=token, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InfraError(f"registry-login: `docker login {images_from.host}` did not run ({error})") from None
    if completed.returncode != 0:
        said = (completed.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise InfraError(f"registry-login: `docker login {images_from.host}` failed: {said}")
    console.print(f"logged in to {images_from.host} as {user}", markup=False, highlight=False)
    return 0


def command_nightly_baseline(args: argparse.Namespace) -> int:
    """Last night's run for a scheduled run's baseline: `run-id=` and `date=` in
    --github-output (nothing when there is none; GitHub's API failing is one line, and the
    night runs without a baseline)."""
    if not re.fullmatch(r"[0-9]{1,20}", args.current_run):
        raise MatrixError(f"--current-run {args.current_run[:40]!r}: give the run's id (${{{{ github.run_id }}}})")
    try:
        found = github_api.last_night(args.repository, args.workflow_ref, args.branch, args.artifact,
                                      int(args.current_run), os.environ.get("GITHUB_TOKEN", ""))
    except InfraError as error:
        console.print(f"stapmatrix: no baseline tonight: {error}", markup=False, highlight=False)
        return 0
    if found is None:
        console.print(f"stapmatrix: no earlier scheduled run of {args.branch} with a report: no baseline tonight",
                      markup=False, highlight=False)
        return 0
    console.print(f"baseline: run {found.run_id} of {found.created_at} ({found.conclusion})", markup=False,
                  highlight=False)
    if args.github_output:
        with open(args.github_output, "a") as output:
            output.write(f"run-id={found.run_id}\ndate={found.date}\n")
    return 0


def add_nightly_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    night = commands.add_parser("nightly-baseline", help="find last night's run of a scheduled workflow (GitHub)")
    night.add_argument("--repository", required=True, help="OWNER/REPO (${{ github.repository }})")
    night.add_argument("--workflow-ref", required=True, help="${{ github.workflow_ref }}: the workflow whose runs count")
    night.add_argument("--branch", required=True, help="the branch (${{ github.ref_name }})")
    night.add_argument("--artifact", required=True, help="the merged report's artifact name (NAME=report)")
    night.add_argument("--current-run", required=True, help="this run's id, never its own baseline")
    night.add_argument("--github-output", metavar="FILE", help="append run-id=ID and date=YYYY-MM-DD ($GITHUB_OUTPUT)")
    night.set_defaults(handler=command_nightly_baseline)


def command_kernel_store(args: argparse.Namespace) -> int:
    """Kernel store entries as tarballs and back (the Actions cache of kernel trees)."""
    if args.action == "list":
        for path, size in kernel_store.entries():
            tree = kernel_store.find(path.name)
            if tree:
                print(f"{path.name} {size // (1024 * 1024)} MiB {tree.release} ({tree.identity})")
        return 0
    if args.action == "pack":
        if args.output is None:
            raise MatrixError("kernel-store pack: give --output DIR (where KEY.tar.zst is written)")
        for key in args.items:
            kernel_pack.check_key(key, "kernel-store pack")
            if args.missing_ok and kernel_store.find(key) is None:
                console.print(f"kernel-store pack: {key} is not in the store: nothing packed", markup=False)
                continue
            started = time.monotonic()
            written = kernel_pack.pack(key, Path(args.output))
            console.print(f"packed {key} into {written} ({written.stat().st_size // (1024 * 1024)} MiB) in "
                          f"{time.monotonic() - started:.0f} s", markup=False, highlight=False)
        return 0
    for archive in kernel_pack.archives([Path(p) for p in args.items]):
        started = time.monotonic()
        key, unpacked = kernel_pack.unpack(archive)
        console.print(f"unpacked {archive} into the kernel store as {key} in {time.monotonic() - started:.0f} s"
                      if unpacked else f"{key}: already in the kernel store; {archive} left unused",
                      markup=False, highlight=False)
    return 0


def add_images_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    made = commands.add_parser("images", help="make every image of a matrix once (pull or build; push with "
                                              "STAPMATRIX_REGISTRY_PUSH=1)")
    made.add_argument("--matrix", default="matrix.yaml")
    made.add_argument("--cell", metavar="ID", help="only this cell's images")
    made.set_defaults(handler=command_images)


def add_kernel_store_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = commands.add_parser("kernel-store", help="list the kernel store, pack entries into tarballs, unpack them")
    store.add_argument("action", choices=("list", "pack", "unpack"))
    store.add_argument("items", nargs="*", metavar="KEY-OR-FILE",
                       help="pack: store keys (deb-..., git-..., path-...); unpack: KEY.tar.zst files or "
                            "directories holding them")
    store.add_argument("--output", metavar="DIR", help="pack: the directory KEY.tar.zst is written into")
    store.add_argument("--missing-ok", action="store_true",
                       help="pack: a key the store does not have (its cell failed early) is not an error")
    store.set_defaults(handler=command_kernel_store)


def write_output(option: str, path: Path, write: Callable[[Path], object]) -> None:
    """Write one output file of `report`; a path that cannot be written (a directory, a
    missing parent that cannot be made, no permission) is bad input naming the option."""
    if path.is_dir():
        raise MatrixError(f"{option} {path} is a directory: give a file name (e.g. {path / 'report.out'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as error:
        raise MatrixError(f"{option} {path}: cannot write it: {error.strerror or error}") from None


def expected_cells(text: str) -> list[str]:
    """The cells a run was planned to have: `stapmatrix plan --github`'s job matrix
    ({"include": [{"cell": ID}, ...]}) or ids separated by commas or white space."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            include = json.loads(stripped)["include"]
            cells = [str(entry["cell"]) for entry in include]
        except (ValueError, KeyError, TypeError):
            raise MatrixError("--expect-cells: not the job matrix `stapmatrix plan --github` prints "
                              '({"include": [{"cell": ID, ...}, ...]}) nor a list of cell ids') from None
    else:
        cells = [c for c in re.split(r"[\s,]+", stripped) if c]
    for cell in cells:
        check_value(cell, CELL_ID_RE, "--expect-cells", "cell id", "6.12.118+deb13-amd64-stap5.6-1")
    return cells


def command_report(args: argparse.Namespace) -> int:
    """The grid of one run, or of several merged (shards of one matrix); files on request.
    With --expect-cells, exit 1 naming every planned cell that brought no result."""
    results = load_runs(Path(p) for p in args.runs)
    expected = expected_cells(args.expect_cells) if args.expect_cells is not None else []
    render_terminal(results, Console())
    if args.html:
        html_path = Path(args.html)
        write_output("--html", html_path,
                     lambda p: p.write_text(render_html(results, link_base=p.parent.resolve())))
    if args.markdown:
        write_output("--markdown", Path(args.markdown), lambda p: p.write_text(render_markdown(results)))
    if args.json:
        left_out: list[int] = []
        write_output("--json", Path(args.json), lambda p: left_out.append(write_merged(p, results)))
        if left_out and left_out[0]:
            console.print(f"stapmatrix: {left_out[0]} artifact path(s) lie outside {Path(args.json).parent} and "
                          f"were left out of {args.json}: write the merged file in a directory that holds the runs",
                          markup=False, highlight=False)
    if args.junit:
        write_output("--junit", Path(args.junit), lambda p: write_junit(p, results))
    if args.expect_cells is not None:
        brought = {cell_id(r) for r in results}
        missing = [cell for cell in expected if cell not in brought]
        if missing:
            console.print(Text(f"stapmatrix: {len(missing)} of {len(expected)} planned cell(s) brought no results: "
                               + ", ".join(missing) + " (their jobs failed before writing results, or uploaded "
                               "nothing: see those jobs' logs)", style="red"))
            return 1
    return 0


def command_diff(args: argparse.Namespace) -> int:
    """Exit 1 for regressions (flaky and infrastructure errors are reported apart), and with
    --fail-on-vanished for cells or tests of the base run that the new run does not have."""
    base, new = load_runs([Path(args.base)]), load_runs([Path(args.new)])
    diff = report_diff.diff_results(base, new)
    text = report_diff.DIFF_FORMATS[args.format](diff)
    if args.history or args.write_history:
        still = nightly(args, base, new)
        if args.format == "json":  # one document: the diff's, with the failures that are not new
            text = json.dumps(dict(json.loads(text), **json.loads(history.render_still_failing_json(still))),
                              indent=2) + "\n"
        else:
            text += history.STILL_FAILING_FORMATS[args.format](still)
    sys.stdout.write(text)
    if diff.regressed:
        return 1
    vanished = [f"{k} x {s}" for k, s in diff.cells_vanished] + \
        [f"{c.key[0]} x {c.key[1]} {c.key[2]}" for c in diff.groups["vanished"]]
    if args.fail_on_vanished and vanished:
        console.print(Text(f"stapmatrix: {len(vanished)} cell(s) or test(s) of {args.base} are not in {args.new}: "
                           + terminal_line(", ".join(vanished[:20])) + (" ..." if len(vanished) > 20 else ""),
                           style="red"))
        return 1
    return 0


def nightly(args: argparse.Namespace, base: list[Result], new: list[Result]) -> list[history.Failing]:
    """`diff --history`: the failures that are not new, each with the night it began, and
    tonight's history for the next night (written even when something regressed)."""
    date = history.check_date(args.date or time.strftime("%Y-%m-%d", time.gmtime()), "--date")
    previous = history.load_history(Path(args.history)) if args.history else None
    if args.history and previous is None:
        console.print(f"stapmatrix: no history at {args.history} (the first night, or not a nightly baseline): "
                      "failures already in BASE are dated 'before the history began'", markup=False, highlight=False)
    tonight = history.advance(previous, base, new, date)
    if args.write_history:
        write_output("--write-history", Path(args.write_history), lambda p: history.write_history(p, tonight))
    return history.still_failing(previous, base, tonight)


def add_report_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show = commands.add_parser("report", help="print the grid of one or more runs (merged); write HTML, markdown, "
                                              "JSON or JUnit")
    show.add_argument("runs", nargs="+", metavar="RUN", help="a results.json or a run directory")
    show.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    show.add_argument("--markdown", metavar="FILE", help="write the grid and failures as markdown (a CI summary)")
    show.add_argument("--json", metavar="FILE", help="write the merged results.json (paths relative to FILE)")
    show.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per result")
    show.add_argument("--expect-cells", metavar="CELLS",
                      help="the planned cells (`stapmatrix plan --github`'s JSON, or ids): exit 1 naming each "
                           "that brought no results")
    show.set_defaults(handler=command_report)
    diff = commands.add_parser("diff", help="compare two runs: regressions, fixes, changes; exit 1 on a regression")
    diff.add_argument("base", metavar="BASE", help="the run before: a results.json or a run directory")
    diff.add_argument("new", metavar="NEW", help="the run after")
    diff.add_argument("--format", choices=sorted(report_diff.DIFF_FORMATS), default="text")
    diff.add_argument("--fail-on-vanished", action="store_true",
                      help="exit 1 when cells or tests of BASE are missing from NEW (a job that brought nothing)")
    diff.add_argument("--history", metavar="FILE",
                      help="BASE's history (history.json of the last nightly): list the failures that are not new "
                           "with the night each began; a missing FILE is the first night")
    diff.add_argument("--write-history", metavar="FILE", help="write NEW's history here (for the next night)")
    diff.add_argument("--date", metavar="YYYY-MM-DD", help="tonight's date in the history (default: today, UTC)")
    diff.set_defaults(handler=command_diff)


def ascii_int(text: str) -> int:
    """argparse's `int` also takes other scripts' digits ("٣٠"); the directives take ASCII only,
    and so does the command line."""
    if not re.fullmatch(r"-?[0-9]{1,9}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number in ASCII digits")
    return int(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="stapmatrix", description="Does systemtap build S still work on kernel K?")
    top.add_argument("-v", "--verbose", action="store_true")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one cell: one kernel, one systemtap build, some scripts")
    run.add_argument("--kernel", required=True,
                     help="a Debian kernel ABI name (6.12.117+deb13-amd64), git:URL-or-DIR@REF (built from "
                          "source) or path:DIR (a tree you built)")
    run.add_argument("--kernel-config", action="append", default=[], metavar="ITEM",
                     help="git: kernels: a config base (defconfig, tinyconfig), fragment file, in-tree "
                          "fragment (kvm_guest.config) or CONFIG_X=y line; repeatable, in order")
    run.add_argument("--reruns", type=ascii_int, default=1,
                     help="try a test that did not pass again in a fresh boot this many times (default 1; 0: never)")
    run.add_argument("--stap", required=True, help="a systemtap build: deb:5.1-5, git:URL@REF or path:DIR")
    run.add_argument("--json", help="write results.json here (default: in the run's artifact directory)")
    run.add_argument("--timeout", type=ascii_int, help="seconds each script may run in the guest (overrides directives)")
    run.add_argument("--stap-arg", action="append", default=[], help="an extra stap option, repeatable")
    run.add_argument("--testsuite", action="append", default=[], metavar="SET",
                     help="systemtap's own tests: `examples` (every build), `smoke`, `all` or DejaGnu files, "
                          "directories and globs (git:/path: builds); repeatable")
    run.add_argument("--testsuite-include", action="append", default=[], metavar="PATTERN",
                     help="keep only the tests of the sets whose name matches (fnmatch, e.g. 'examples/io/*'); "
                          "repeatable")
    run.add_argument("--testsuite-exclude", action="append", default=[], metavar="PATTERN",
                     help="leave out the tests of the sets whose name matches; repeatable")
    run.add_argument("--testsuite-path", metavar="DIR",
                     help="run the examples of DIR (CATEGORY/NAME.meta files) instead of the build's own")
    run.add_argument("scripts", nargs="*", metavar="SCRIPT")
    run.set_defaults(handler=command_run)
    check = commands.add_parser("check", help="validate a matrix file and print its plan")
    check.add_argument("--matrix", default="matrix.yaml")
    check.set_defaults(handler=command_check)
    add_plan_command(commands)
    clean = commands.add_parser("clean", help="remove containers of runs that are gone (and images, kernels)")
    clean.add_argument("--images", action="store_true", help="also remove every image of ours")
    clean.add_argument("--kernels", action="store_true",
                       help="also remove the kernel store (extracted and built kernels) and forget failed builds")
    clean.set_defaults(handler=command_clean)
    add_report_commands(commands)
    add_kernel_store_command(commands)
    add_images_command(commands)
    add_nightly_command(commands)
    login = commands.add_parser("registry-login", help="docker login to STAPMATRIX_REGISTRY (REGISTRY_USER, "
                                                       "REGISTRY_TOKEN from the environment)")
    login.set_defaults(handler=command_registry_login)
    add_bisect_command(commands)
    return top


def add_bisect_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    one = commands.add_parser("bisect", help="find the commit (kernel or systemtap) that changed a test's outcome")
    one.add_argument("--kernel", required=True,
                     help="git:REPO (kernel commits are bisected) or a fixed kernel: an ABI name, git:REPO@REF, "
                          "path:DIR")
    one.add_argument("--stap", required=True,
                     help="git:REPO (systemtap commits are bisected) or a fixed build: deb:VERSION, git:URL@REF, "
                          "path:DIR")
    one.add_argument("--good", required=True, metavar="REF", help="the older end of the range")
    one.add_argument("--bad", required=True, metavar="REF",
                     help="the newer end: its outcome is the one looked for (a break or a fix)")
    one.add_argument("--kernel-config", action="append", default=[], metavar="ITEM",
                     help="git: kernels: a config base or fragment, as for run; repeatable, in order")
    one.add_argument("--reruns", type=ascii_int, default=1,
                     help="tries of a run-time failure in fresh boots (default 1); tries that disagree stop the "
                          "bisection as flaky")
    one.add_argument("--json", metavar="FILE", help="write the steps and the answer here (default RUN/bisect.json)")
    one.add_argument("--testsuite", action="append", default=[], metavar="SET",
                     help="systemtap's own tests instead of a script (judged together); repeatable")
    one.add_argument("--testsuite-include", action="append", default=[], metavar="PATTERN")
    one.add_argument("--testsuite-exclude", action="append", default=[], metavar="PATTERN")
    one.add_argument("scripts", nargs="*", metavar="SCRIPT")
    one.set_defaults(handler=command_bisect)


VALUE_OPTIONS = ("--stap-arg", "--kernel-config", "--testsuite-include", "--testsuite-exclude")


def join_option_values(argv: list[str]) -> list[str]:
    """`--stap-arg -g` -> `--stap-arg=-g`: the value of these options is often itself an
    option, which argparse would otherwise take for one of its own and stop."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in VALUE_OPTIONS and index + 1 < len(argv):
            joined.append(f"{word}={argv[index + 1]}")
            index += 2
            continue
        joined.append(word)
        index += 1
    return joined


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(join_option_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    docker_env.exit_cleanly_on_sigterm()
    try:
        return int(args.handler(args))
    except StapmatrixError as error:
        # Plain text, never markup: a path or name with `[/]` in it is not a rich tag.
        console.print(Text(f"stapmatrix: {terminal(str(error))}", style="red"), highlight=False)
        return 2
    except KeyboardInterrupt:
        if docker_env.connected():  # check, report, diff never connect: nothing to wait for
            docker_env.remove_own_containers()
            console.print("[red]interrupted: containers of this run removed[/]")
        else:
            console.print("[red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
