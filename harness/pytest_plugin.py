"""pytest front end: the matrix as pytest items, one xdist group per cell.

    pytest -n auto                      at the repository root: runs matrix.yaml
    pytest -n auto --matrix FILE        runs another matrix, from any directory (`--matrix=FILE`
                                        too); the items are harness/matrix_items.py
    pytest -n auto --cell ID            runs exactly one cell (`stapmatrix plan` lists the ids)
    pytest -k 6.12 -m stap_5_1_5        selects cells

The plugin is registered through the `pytest11` entry point, so an installed stapmatrix needs
no conftest.py. It does nothing unless asked for a matrix: `--matrix`, `--cell`, or
harness/matrix_items.py among pytest's arguments (the repository's `testpaths`).

Each cell runs once, in the worker that owns its xdist group, the first time one of its items
needs it. Images shared by several cells are built once per run (harness/images.py locks).
Workers write one JSON file per cell; the controller merges them into results.json.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from rich.console import Console

from harness import docker_env, resources
from harness.archive import Archive
from harness.cell import check_reruns
from harness.errors import InfraError, MatrixError, StapmatrixError
from harness.gitrepo import mask
from harness.matrix import Matrix
from harness.outcomes import Outcome, Result, read_results
from harness.plan import Cell, Plan
from harness.progress import Relay
from harness.report.escape import terminal
from harness.report.html import write_run_reports
from harness.report.terminal import render_terminal
from harness.session import Session, matrix_context, new_run_dir, plan_matrix, prepare_process
from harness.settings import artifacts_root

logger = logging.getLogger("stapmatrix")

ITEMS = Path(__file__).resolve().with_name("matrix_items.py")  # the module that holds the matrix items
RUN_DIR_KEY = "stapmatrix_run_dir"


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """`-p no:xdist`: pyproject's addopts still say `--dist loadgroup`, which pytest would
    refuse as an unknown argument; drop it, and the cells run one after another in this
    process (`-n` stays unknown: pytest names it)."""
    if not early_config.pluginmanager.is_blocked("xdist"):
        return
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--dist":
            skip = True
        elif not arg.startswith("--dist="):
            kept.append(arg)
    args[:] = kept


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("stapmatrix")
    group.addoption("--matrix", default=None, metavar="FILE",
                    help="matrix file to run (default: matrix.yaml in the current directory)")
    group.addoption("--cell", default=None, metavar="ID",
                    help="run exactly this cell, e.g. 6.12.117+deb13-amd64-stap5.6-1 (an exact id, not a pattern; "
                         "`stapmatrix plan --matrix FILE` lists them)")
    group.addoption("--reruns", type=int, default=1,
                    help="try a test that did not pass again in a fresh boot this many times (default 1; 0: never); "
                         "tries with different outcomes make it 'flaky'")


def _names_items(arg: str, config: pytest.Config) -> bool:
    path = Path(arg.split("::")[0])
    return (config.invocation_params.dir / path).resolve() == ITEMS


def _wants_matrix(config: pytest.Config) -> bool:
    if config.getoption("matrix") or config.getoption("cell"):
        return True
    return any(_names_items(arg, config) for arg in config.args)


def _collect_matrix_items(config: pytest.Config) -> None:
    """Make the matrix items part of the run. Without test paths of the user's (pytest fell
    back to `testpaths` or the current directory) they are the whole run; a user's paths are
    kept and the items added, unless a path names the items module already."""
    if any(_names_items(arg, config) for arg in config.args):
        return
    if config.args_source is pytest.Config.ArgsSource.ARGS:
        config.args.append(str(ITEMS))
    else:
        config.args[:] = [str(ITEMS)]


def _one_worker_per_cell(config: pytest.Config) -> None:
    """A cell's items must share a worker (the xdist group is the cell): `-n N` alone means
    `--dist load`, which ignores groups, so it becomes `loadgroup`. The repository's pytest
    configuration says so too, but with `--matrix FILE` (a space) pytest may take FILE's
    directory for its rootdir and never read that configuration (pytest issue #8846)."""
    dist = config.getoption("dist", None)  # None: no xdist
    if dist in (None, "no", "loadgroup"):
        return
    if dist == "load":
        config.option.dist = "loadgroup"
        return
    raise pytest.UsageError(f"--dist {dist}: matrix items need --dist loadgroup (each cell runs once, in one "
                            "worker); `-n N` alone chooses it")


def _marker(prefix: str, value: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9]+", "_", value).strip("_")


class MatrixSession(Session):
    """The run of a matrix file: its session (harness/session.py) plus the matrix it came from."""

    def __init__(self, matrix: Matrix, plan: Plan, run_dir: Path, reruns: int, archive: Archive) -> None:
        super().__init__(plan, run_dir, matrix_context(matrix, reruns), archive, logger.info)
        self.matrix = matrix

    def cell_results(self, cell: Cell) -> list[Result]:
        prepare_process(docker_required=False)  # no daemon: the cell reports it as its error, with how to start one
        return self.run(cell)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stapmatrix_cell(id): the matrix cell an item belongs to")
    if not config.pluginmanager.has_plugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's grouping (inert without it)")
    if not _wants_matrix(config):
        return
    _collect_matrix_items(config)
    _one_worker_per_cell(config)
    matrix_path = Path(config.getoption("matrix") or config.invocation_params.dir / "matrix.yaml")
    try:
        archive = Archive()
        matrix, plan = plan_matrix(matrix_path, archive, config.getoption("cell"))
        reruns = check_reruns(config.getoption("reruns"))
    except MatrixError as error:
        raise pytest.UsageError(str(error)) from None
    except StapmatrixError as error:
        raise pytest.UsageError(f"cannot plan the matrix: {error}") from None
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        run_dir = Path(workerinput[RUN_DIR_KEY])
    elif config.option.collectonly:  # nothing will run: no run directory to leave behind
        run_dir = artifacts_root() / "collect-only"
    else:
        run_dir = new_run_dir()
    for kernel in plan.kernels:
        config.addinivalue_line("markers", f"{_marker('kernel_', kernel.label)}: cells of kernel {kernel.spec.spec}")
    for stap in plan.staps:
        config.addinivalue_line("markers", f"{_marker('stap_', mask(stap.spec.value))}: cells of systemtap {stap.spec.spec}")
    config.stash[SESSION_KEY] = MatrixSession(matrix, plan, run_dir, reruns, archive)


SESSION_KEY = pytest.StashKey[MatrixSession]()


# An xdist hook (optional: pytest must not refuse it under `-p no:xdist`), tried before
# xdist's own, which would answer the number of cores.
@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """-n auto: the smaller of the cores and what memory allows (harness/resources.py).
    xdist asks before pytest_configure, so this cannot wait for the matrix session."""
    if not _wants_matrix(config):
        return None
    count, why = resources.workers()
    config.stash[WORKERS_KEY] = why
    return count


WORKERS_KEY = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest must not refuse it under `-p no:xdist`
def pytest_configure_node(node: object) -> None:
    """xdist controller hook: every worker writes into the controller's run directory."""
    config = node.config  # type: ignore[attr-defined]
    if SESSION_KEY in config.stash:
        node.workerinput[RUN_DIR_KEY] = str(config.stash[SESSION_KEY].run_dir)  # type: ignore[attr-defined]


def _item_id(text: str) -> str:
    """A test name as a pytest id: `examples/io/iotop: check` -> `examples/io/iotop:check`
    (spaces make -k awkward)."""
    return text.replace(": ", ":").replace(" ", "_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wanted = {"stap_case", "image_case", "testsuite_case", "example_case"} & set(metafunc.fixturenames)
    if not wanted:
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    if session is None:
        raise pytest.UsageError("matrix items need a matrix: give --matrix FILE (or run at the repository root)")
    params = []
    for cell in session.plan.cells:
        marks = [pytest.mark.xdist_group(cell.id), getattr(pytest.mark, _marker("kernel_", cell.kernel.label)),
                 getattr(pytest.mark, _marker("stap_", mask(cell.stap.spec.value)))]
        if "stap_case" in wanted:
            params += [pytest.param((cell, t.name), id=f"{cell.id}-{t.name}", marks=marks) for t in cell.tests]
        elif "testsuite_case" in wanted:
            params += [pytest.param((cell, f.path), id=f"{cell.id}-{f.path}", marks=marks) for f in cell.dejagnu]
        elif "example_case" in wanted:
            params += [pytest.param((cell, t.name), id=f"{cell.id}-{_item_id(t.name)}", marks=marks)
                       for t in cell.examples]
        else:
            params.append(pytest.param(cell, id=cell.id, marks=marks))
    metafunc.parametrize(next(iter(wanted)), params)


@pytest.fixture(scope="session")
def matrix_session(request: pytest.FixtureRequest) -> MatrixSession:
    return request.config.stash[SESSION_KEY]


@pytest.fixture
def stap_result(stap_case: tuple[Cell, str], matrix_session: MatrixSession) -> Result:
    """The test's result; an infrastructure failure is raised here, so pytest calls it an error."""
    cell, test = stap_case
    result = next(r for r in matrix_session.cell_results(cell) if r.test == test)
    if result.outcome is Outcome.ERROR:
        raise InfraError(f"{terminal(result.detail)}\nreproduce: {result.reproduce}")
    return result


RELAY_KEY = pytest.StashKey[Relay]()


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The controller relays the workers' progress (RUN/progress.log) to its terminal."""
    matrix_session = session.config.stash.get(SESSION_KEY, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if matrix_session is None or hasattr(session.config, "workerinput") or reporter is None \
            or session.config.option.collectonly:
        return
    def write(line: str) -> None:
        reporter.ensure_newline()
        reporter.write_line(line)

    relay = Relay(matrix_session.run_dir / "progress.log", write, len(matrix_session.plan.cells),
                  matrix_session.cells_done)
    session.config.stash[RELAY_KEY] = relay
    relay.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    relay = session.config.stash.get(RELAY_KEY, None)
    if relay is not None:
        relay.stop()
    matrix_session = session.config.stash.get(SESSION_KEY, None)
    if matrix_session is None or hasattr(session.config, "workerinput"):
        return
    results = matrix_session.merge()
    if results:
        write_run_reports(matrix_session.run_dir, results)


def pytest_report_header(config: pytest.Config) -> list[str]:
    matrix_session = config.stash.get(SESSION_KEY, None)
    if matrix_session is None:
        return []
    plan = matrix_session.plan
    size = f"{len(plan.kernels)} kernel(s) x {len(plan.staps)} systemtap build(s) = {len(plan.cells)} cell(s)"
    progress = matrix_session.run_dir / "progress.log"
    return [
        f"stapmatrix: {matrix_session.matrix.path}: {size}, base suite(s) {', '.join(plan.base_suites)}",
        f"stapmatrix: artifacts in {matrix_session.run_dir}; follow builds and boots: tail -f {progress}",
    ] + ([f"stapmatrix: -n auto: {config.stash[WORKERS_KEY]}"] if WORKERS_KEY in config.stash else [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    matrix_session = config.stash.get(SESSION_KEY, None)
    if matrix_session is None or not (matrix_session.run_dir / "results.json").exists():
        return
    results = read_results(matrix_session.run_dir / "results.json")
    terminalreporter.section("stapmatrix grid")
    terminalreporter.write(_grid_text(results, config))
    terminalreporter.write_line(f"results: {matrix_session.run_dir / 'results.json'}; "
                                f"report: {matrix_session.run_dir / 'report.html'}")


def _grid_text(results: list[Result], config: pytest.Config) -> str:
    """The grid rendered for pytest's terminal: its width, colour only where pytest uses colour."""
    writer = config.get_terminal_writer()
    buffer = io.StringIO()
    console = Console(file=buffer, width=writer.fullwidth, force_terminal=writer.hasmarkup,
                      no_color=not writer.hasmarkup, highlight=False)
    render_terminal(results, console)
    return buffer.getvalue()


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        docker_env.remove_own_containers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A matrix without testsuite files (or without source-built columns) has no
    test_testsuite items: drop the placeholder pytest makes for an empty parameter set
    instead of reporting it as a skip."""
    if SESSION_KEY not in config.stash:
        return
    empty = [item for item in items
             if any(str(m.kwargs.get("reason", "")).startswith("got empty parameter set")
                    for m in item.iter_markers("skip"))]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [item for item in items if item not in empty]
