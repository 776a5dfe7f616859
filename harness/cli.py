"""The `stapmatrix` command: run one cell, check a matrix, clean up.

    stapmatrix run --kernel KVER --stap SPEC [--json FILE] [--timeout S] [--stap-arg ARG]... SCRIPT...
    stapmatrix check [--matrix FILE]      validate a matrix and print its plan
    stapmatrix clean [--images]           remove containers (and images) of ours

`run` uses the same machinery as the pytest items and is the reproducer they print.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from harness import docker_env
from harness.archive import Archive
from harness.cell import CellContext, run_cell
from harness.errors import MatrixError, StapmatrixError
from harness.matrix import EXP_RE, KERNEL_RE, check_value, load_matrix, parse_stap_spec
from harness.outcomes import Outcome, write_results
from harness.plan import Cell, choose_base_suite, make_plan, resolve_kernel, resolve_stap
from harness.scripts import load_script
from harness.settings import artifacts_root

console = Console(stderr=True, soft_wrap=True)


def progress(message: str) -> None:
    console.print(time.strftime("%H:%M:%S"), message, markup=False, highlight=False)
STYLE = {Outcome.PASS: "green", Outcome.XFAIL: "yellow", Outcome.ERROR: "magenta"}


def new_run_dir() -> Path:
    path = artifacts_root() / time.strftime("run-%Y%m%d-%H%M%S")
    suffix = 0
    while True:
        candidate = path if suffix == 0 else path.with_name(f"{path.name}-{suffix}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            suffix += 1


def command_run(args: argparse.Namespace) -> int:
    check_value(args.kernel, KERNEL_RE, "--kernel", "kernel ABI name", "6.12.117+deb13-amd64")
    spec = parse_stap_spec(args.stap, "--stap")
    scripts = tuple(load_script(Path(s), tuple(args.stap_arg), args.timeout) for s in args.scripts)
    names = [s.name for s in scripts]
    if len(set(names)) != len(names):
        raise MatrixError(f"two scripts share a name: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    archive = Archive()
    kernel = resolve_kernel(archive, args.kernel, "--kernel")
    stap = resolve_stap(archive, spec, "--stap")
    for exp in args.testsuite:
        check_value(exp, EXP_RE, "--testsuite", "testsuite file", "environment_sanity.exp")
    if args.testsuite and stap.spec.kind == "deb":
        raise MatrixError("--testsuite needs a git: or path: systemtap build (Debian packages ship no testsuite)")
    if not scripts and not args.testsuite:
        raise MatrixError("nothing to run: give scripts, --testsuite files, or both")
    cell = Cell(kernel, stap, scripts, choose_base_suite([kernel]), tuple(args.testsuite))
    docker_env.remove_orphans()
    run_dir = new_run_dir()
    console.print(f"cell {cell.id}: artifacts in {run_dir}")
    started = time.monotonic()
    try:
        results = run_cell(cell, CellContext(), run_dir / cell.id, progress)
    finally:
        docker_env.remove_own_containers()
    json_path = Path(args.json) if args.json else run_dir / "results.json"
    write_results(json_path, results)
    for result in results:
        style = STYLE.get(result.outcome, "red")
        console.print(f"[{style}]{result.outcome.value:12}[/] {cell.id} {result.test}")
        if result.detail:
            console.print("    " + result.detail.replace("\n", "\n    "), markup=False, highlight=False)
    console.print(f"{len(results)} test(s) in {time.monotonic() - started:.0f} s; results: {json_path}")
    return 0 if all(r.outcome in (Outcome.PASS, Outcome.SKIP) for r in results) else 1


def command_check(args: argparse.Namespace) -> int:
    matrix = load_matrix(Path(args.matrix))
    plan = make_plan(matrix, Archive())
    print(f"{matrix.path}: base suite {plan.base_suite}")
    for kernel in plan.kernels:
        print(f"  kernel {kernel.abi} ({kernel.suite} {kernel.version}, {' '.join(kernel.compilers)})")
    for stap in plan.staps:
        print(f"  systemtap {stap.spec.spec} ({stap.suite or 'commit ' + stap.version if stap.spec.kind == 'git' else stap.suite or 'tree sha256 ' + stap.version[:16]})")
    for cell in plan.cells:
        print(f"  cell {cell.id}: {', '.join([t.name for t in cell.tests] + list(cell.testsuite))}")
    return 0


def command_clean(args: argparse.Namespace) -> int:
    client = docker_env.client()
    for container in client.containers.list(all=True, filters={"label": f"{docker_env.LABEL}=1"}):
        container.remove(force=True)
        print(f"removed container {container.name}")
    if args.images:
        for image in client.images.list(filters={"label": f"{docker_env.LABEL}=1"}):
            for tag in image.tags:
                client.images.remove(tag, force=True)
                print(f"removed image {tag}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="stapmatrix", description="Does systemtap build S still work on kernel K?")
    top.add_argument("-v", "--verbose", action="store_true")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one cell: one kernel, one systemtap build, some scripts")
    run.add_argument("--kernel", required=True, help="a Debian kernel ABI name, e.g. 6.12.117+deb13-amd64")
    run.add_argument("--stap", required=True, help="a systemtap build: deb:5.1-5, git:URL@REF or path:DIR")
    run.add_argument("--json", help="write results.json here (default: in the run's artifact directory)")
    run.add_argument("--timeout", type=int, help="seconds each script may run in the guest (overrides directives)")
    run.add_argument("--stap-arg", action="append", default=[], help="an extra stap option, repeatable")
    run.add_argument("--testsuite", action="append", default=[], metavar="EXP",
                     help="a systemtap testsuite file to run (git:/path: builds), repeatable")
    run.add_argument("scripts", nargs="*", metavar="SCRIPT")
    run.set_defaults(handler=command_run)
    check = commands.add_parser("check", help="validate a matrix file and print its plan")
    check.add_argument("--matrix", default="matrix.yaml")
    check.set_defaults(handler=command_check)
    clean = commands.add_parser("clean", help="remove every container (and with --images, image) of ours")
    clean.add_argument("--images", action="store_true")
    clean.set_defaults(handler=command_clean)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    docker_env.exit_cleanly_on_sigterm()
    try:
        return int(args.handler(args))
    except StapmatrixError as error:
        console.print(f"[red]stapmatrix: {error}[/]", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        docker_env.remove_own_containers()
        console.print("[red]interrupted: containers of this run removed[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
