"""stapmatrix's benchmark: what a run of the default matrix costs on this machine, measured in
one go, printed as a table (and written to bench/results-DATE.md).

    ./sm bench            # everything: about an hour on 2 cores, most of it the cold run
    ./sm bench --no-cold  # skip the cold run (keeps images and caches)

The cold run starts with no stapmatrix image and an empty cache directory: it REMOVES every
stapmatrix image (the kernel store and caches it uses live under bench/.cache, so the user's
own cache is left alone). What it measures:

- the default matrix cold (empty caches, no images) and warm (everything built and compiled),
  with `-n auto` (parallel) and `-n 1` (serial, warm);
- the disk the grid's images and kernel trees take, against the sum of its kernel trees and
  systemtap images (each image counted whole: base + systemtap);
- a warm single cell (`stapmatrix run`, one begin/end script) against a bare QEMU boot of the
  same kernel to a busybox initramfs that powers off at once (the floor), in the same runner
  image and container set-up;
- in one cell with stap's own cache emptied: a first tracepoint script, a second (different)
  tracepoint script, and a new begin-only script, each never compiled before;
- systemtap's examples (`--testsuite examples`) for one cell whose images and kernel are in
  place and nothing is compiled (stap's cache and the check verdicts emptied), then again:
  wall time, compile (test_check) and run (test_installcheck) seconds, tests per minute.

- a cell's image stage built (its images removed from the local daemon first) against the
  same stage pulled from a registry (Debian's docker-registry on a loopback port, as in
  selftests/test_registry.py), in one run; and its kernel's store entry packed into a tarball
  (the Actions cache's) and unpacked again, against its download and extraction.

- incremental source builds, each in an empty cache of its own (bench/.cache-incremental, no
  ccache, no kept build directory) and then one commit later in the same cache: systemtap
  (STAPMATRIX_SYSTEMTAP_SOURCE, a systemtap git repository: release-5.5, then the commit after
  it on master) and a kernel (Debian's linux-source-6.12 with tinyconfig + systemtap's needs,
  selftests/linux_source.py: "before", then "after", one function added). The goals: at most
  20% (systemtap) and 10% (kernel) of the cold build.

`--only SECTION...` measures some of these: matrix, cell, compiles, examples, registry, incremental.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
STAP = "deb:5.6-1"
TRIES = 3
SECTIONS = ["matrix", "cell", "compiles", "examples", "registry", "incremental"]
KERNEL = ""  # main() chooses it


def run(command: list[str], env: dict[str, str], what: str) -> float:
    """Wall seconds of a command; its output goes to bench/logs/WHAT.log."""
    logs = BENCH / "logs"
    logs.mkdir(exist_ok=True)
    started = time.monotonic()
    with (logs / f"{what}.log").open("w") as log:
        completed = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    print(f"  {what}: {seconds:.0f} s (exit {completed.returncode}; log bench/logs/{what}.log)", flush=True)
    return seconds


def environment(cache: Path) -> dict[str, str]:
    return dict(os.environ, STAPMATRIX_CACHE=str(cache), STAPMATRIX_ARTIFACTS=str(BENCH / "artifacts"))


def remove_images() -> None:
    from harness import docker_env

    client = docker_env.client()
    for image in client.images.list(filters={"label": f"{docker_env.LABEL}=1"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)
    client.images.prune(filters={"dangling": True})


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out.strip() else 0


def docker_root() -> Path:
    from harness import docker_env

    return Path(docker_env.client().info()["DockerRootDir"])


def image_sizes() -> dict[str, int]:
    """tag -> size (the image whole, its base layers included) of every stapmatrix image."""
    from harness import docker_env

    sizes = {}
    for image in docker_env.client().images.list(filters={"label": f"{docker_env.LABEL}=1"}):
        for tag in image.tags:
            sizes[tag] = int(image.attrs["Size"])
    return sizes


def pytest(workers: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-n", workers, "-q", "-p", "no:cacheprovider"]


def bare_boot_seconds(cache: Path) -> float:
    """QEMU in the runner image, the same kernel, an initramfs of busybox whose init powers
    off at once: what any cell must at least pay."""
    os.environ["STAPMATRIX_CACHE"] = str(cache)
    from harness import images, kernel_store, kernels, staps
    from harness.archive import Archive
    from harness.guest import guest_memory_mb, qemu_command, start_guest
    from harness.progress import discard
    from harness.specs import parse_kernel_spec, parse_stap_spec

    archive = Archive()
    build = kernels.resolve(parse_kernel_spec(KERNEL, "bench"), "bench", archive)
    tree = kernel_store.find(build.key)
    assert tree is not None, "the kernel is not in the store: run the matrix first"
    runner = images.runner_image(discard)
    times = []
    with tempfile.TemporaryDirectory(prefix="stapmatrix-bare-") as tmp:
        guest = Path(tmp)
        stap_image = images.stap_image(build.base_suite, staps.resolve(parse_stap_spec(STAP, "bench"), "bench", archive),
                                       discard)
        # busybox, and an init that powers off at once, packed where cpio and busybox are.
        script = ("set -e; mkdir -p /r/bin; cp /bin/busybox /r/bin/busybox; "
                  "printf '#!/bin/busybox sh\\n/bin/busybox poweroff -f\\n' > /r/init; chmod 755 /r/init; "
                  "cd /r && find . | cpio -o -H newc --quiet > /out/initramfs.cpio")
        subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{guest}:/out", stap_image,
                        "sh", "-c", script], check=True)
        shutil.copy(tree.vmlinuz_path, guest / "vmlinuz")
        for attempt in range(TRIES):
            started = time.monotonic()
            container = start_guest(runner, guest, "tcg",
                                    qemu_command("tcg", "", attempt, memory_mb=guest_memory_mb(guest)))
            container.wait(timeout=300)
            times.append(time.monotonic() - started)  # to QEMU's exit, as a cell's boot is timed
            container.remove(force=True)
            console = (guest / f"console-{attempt}.log").read_text(errors="replace")
            assert "Power down" in console or "reboot: Power" in console, console[-2000:]
    return statistics.median(times)


def warm_cell_seconds(env: dict[str, str]) -> float:
    script = ROOT / "tests/stap/begin_end.stp"
    command = [sys.executable, "-m", "harness.cli", "run", "--kernel", KERNEL, "--stap", STAP, str(script)]
    run(command, env, "warm-cell-prime")
    return statistics.median(run(command, env, f"warm-cell-{n}") for n in range(TRIES))


def tracepoint_compiles(env: dict[str, str], cache: Path) -> dict[str, float]:
    """Compile seconds of three scripts never compiled before, in one cell whose stap cache
    (tracepoint and type queries) was emptied first."""
    shutil.rmtree(cache / "stap-cache", ignore_errors=True)
    nonce = str(time.time_ns())
    work = BENCH / "scripts"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    first = (ROOT / "tests/stap/tracepoint.stp").read_text()
    (work / "tracepoint_first.stp").write_text(first + f"// bench {nonce}\n")
    (work / "tracepoint_second.stp").write_text(
        "// stapmatrix: run /bin/true\n// stapmatrix: expect-re ^exit true$\n"
        'probe kernel.trace("sched:sched_process_exit") {\n\tif (pid() == target())\n'
        '\t\tprintf("exit %s\\n", execname())\n}\n' + f"// bench {nonce}\n")
    (work / "begin_only.stp").write_text((ROOT / "tests/stap/begin_end.stp").read_text() + f"// bench {nonce}\n")
    results = BENCH / "artifacts" / "compiles.json"
    run([sys.executable, "-m", "harness.cli", "run", "--kernel", KERNEL, "--stap", STAP, "--json", str(results),
         *(str(work / n) for n in ("tracepoint_first.stp", "tracepoint_second.stp", "begin_only.stp"))],
        env, "tracepoint-compiles")
    return {r["test"]: r["stages"]["compile"]["seconds"] for r in json.loads(results.read_text())}


def examples_run(env: dict[str, str], cache: Path) -> list[tuple[str, str]]:
    """The whole examples set of one cell: cold (images and kernel in place, nothing compiled),
    then warm. One example first puts the images and the kernel in place, so the cold run
    measures the examples and nothing else."""
    rows = []
    run([sys.executable, "-m", "harness.cli", "run", "--kernel", KERNEL, "--stap", STAP, "--json",
         str(BENCH / "artifacts" / "examples-prepare.json"), "--testsuite", "examples",
         "--testsuite-include", "examples/general/helloworld: check"], env, "examples-prepare")
    for label in ("cold", "warm"):
        if label == "cold":
            shutil.rmtree(cache / "stap-cache", ignore_errors=True)
            shutil.rmtree(cache / "example-checks", ignore_errors=True)
        results = BENCH / "artifacts" / f"examples-{label}.json"
        wall = run([sys.executable, "-m", "harness.cli", "run", "--kernel", KERNEL, "--stap", STAP, "--json",
                    str(results), "--testsuite", "examples"], env, f"examples-{label}")
        records = json.loads(results.read_text())
        check = sum(r["stages"].get("check", {}).get("seconds", 0) for r in records)
        install = sum(r["stages"].get("installcheck", {}).get("seconds", 0) for r in records)
        outcomes: dict[str, int] = {}
        for record in records:
            outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
        cached = sum(1 for r in records if r["stages"].get("check", {}).get("cached"))
        rows.append((f"examples of {STAP} on {KERNEL}, {label} ({len(records)} tests: "
                     + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + ")",
                     f"{wall / 60:.1f} min; check {check / 60:.1f} min, installcheck {install / 60:.1f} min "
                     f"(summed over {os.cpu_count()} jobs); {len(records) / (wall / 60):.0f} tests/min"
                     + (f"; {cached} checks from the cache" if label == "warm" else "")))
    return rows


def images_stage(env: dict[str, str], label: str) -> tuple[float, dict[str, int]]:
    """One `stapmatrix run` of the bench cell: its images stage's seconds and the count of
    each image event (from the run's events.jsonl)."""
    from harness.progress import read_events

    results = BENCH / "artifacts" / f"registry-{label}.json"
    run([sys.executable, "-m", "harness.cli", "run", "--kernel", KERNEL, "--stap", STAP, "--json", str(results),
         str(ROOT / "tests/stap/begin_end.stp")], env, f"registry-{label}")
    (record,) = json.loads(results.read_text())
    counts: dict[str, int] = {}
    for event in read_events((results.parent / record["artifacts"]["dir"]).parent):  # relative to the file
        if str(event["event"]).startswith("Image") and event["event"] != "ImageBuildStep":
            counts[str(event["event"])] = counts.get(str(event["event"]), 0) + 1
    return float(record["stages"]["images"]["seconds"]), counts


def registry_rows(env: dict[str, str], cache: Path) -> list[tuple[str, str]]:
    """The cell's images built from nothing, pushed, removed, pulled: one run, one loopback
    registry. Then its kernel tree packed and unpacked (into a scratch store)."""
    from harness import docker_env, kernel_pack, kernel_store, kernels, staps
    from harness.archive import Archive
    from harness.images import cell_tags
    from harness.plan import make_cell
    from harness.specs import parse_kernel_spec, parse_stap_spec
    from selftests.registry_server import serve

    os.environ["STAPMATRIX_CACHE"] = str(cache)
    archive = Archive()
    kernel = kernels.resolve(parse_kernel_spec(KERNEL, "bench"), "bench", archive)
    cell = make_cell(kernel, staps.resolve(parse_stap_spec(STAP, "bench"), "bench", archive), (), None)
    tags = cell_tags(cell)
    client = docker_env.client()

    def remove_cell_images() -> None:
        for tag in tags:
            if docker_env.image_exists(tag):
                client.images.remove(tag, force=True)
        client.images.prune(filters={"dangling": True})

    rows = []
    with tempfile.TemporaryDirectory(prefix="stapmatrix-bench-registry-") as scratch, serve(Path(scratch)) as reference:
        env = dict(env, STAPMATRIX_REGISTRY=reference)
        remove_cell_images()
        built, built_events = images_stage(env, "built")
        pushed = run([sys.executable, "-m", "harness.cli", "images", "--matrix", str(write_matrix())],
                     dict(env, STAPMATRIX_REGISTRY_PUSH="1"), "registry-push")
        remove_cell_images()
        pulled, pulled_events = images_stage(env, "pulled")
        rows.append((f"a cell's image stage, built (no local images; {', '.join(tags)})",
                     f"{built:.0f} s ({built_events.get('ImageBuilt', 0)} built)"))
        rows.append(("the same images pushed to a loopback registry (`stapmatrix images`)", f"{pushed:.0f} s"))
        counted = (f"{pulled_events.get('ImagePulled', 0)} pulled, {pulled_events.get('ImageBuilt', 0)} built; "
                   f"{built / max(pulled, 0.1):.0f}x faster")
        rows.append(("the same image stage, pulled from that registry", f"{pulled:.0f} s ({counted})"))
    tree = kernel_store.find(kernel.key)
    if tree is not None:
        entry_bytes = du_bytes(kernel_store.store_dir() / kernel.key)
        with tempfile.TemporaryDirectory(prefix="stapmatrix-bench-pack-") as scratch:
            started = time.monotonic()
            packed = kernel_pack.pack(kernel.key, Path(scratch) / "pack")
            pack_s = time.monotonic() - started
            os.environ["STAPMATRIX_CACHE"] = str(Path(scratch) / "cache")
            started = time.monotonic()
            kernel_pack.unpack(packed)
            unpack_s = time.monotonic() - started
            os.environ["STAPMATRIX_CACHE"] = str(cache)
            sizes = f"{entry_bytes / 1e9:.1f} GB -> {packed.stat().st_size / 1e9:.1f} GB, {packed.suffix[1:]}"
            rows.append((f"the kernel's store entry packed ({sizes})", f"{pack_s:.0f} s"))
            rows.append(("the same entry unpacked and checked (what a cell job does on a cache hit)", f"{unpack_s:.0f} s"))
    return rows


def write_matrix() -> Path:
    path = BENCH / "artifacts" / "registry-matrix.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"kernels: [{KERNEL}]\nstap: ['{STAP}']\ntests: [{ROOT / 'tests/stap/begin_end.stp'}]\n")
    return path


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout.strip()


class _Builds:
    """A Progress that prints events and keeps the build events' seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, event: object) -> None:
        from harness.progress import Event, KernelBuilt, StapSourceBuilt

        assert isinstance(event, Event)
        if isinstance(event, (KernelBuilt, StapSourceBuilt)):
            self.seconds[type(event).__name__] = event.seconds
        print(f"    {time.strftime('%H:%M:%S')} {event.text()[:160]}", flush=True)


def _stap_builds(source: str) -> tuple[float, float, str]:
    """(cold seconds, one commit later seconds, what) of the systemtap source build."""
    from harness import docker_env, images, recipes, staps
    from harness.archive import Archive
    from harness.specs import parse_stap_spec

    first = _git(source, "rev-parse", "release-5.5^{commit}")
    second = _git(source, "rev-list", "--first-parent", "--reverse", "--ancestry-path", f"{first}..master").split()[0]
    seconds = []
    for commit in (first, second):
        build = staps.resolve(parse_stap_spec(f"git:{source}@{commit}", "bench"), "bench", Archive())
        tag = recipes.stap_source_recipe(build.base_suite, build.version, build.version_label).tag
        if docker_env.image_exists(tag):  # made by an earlier bench: build it again, or nothing is measured
            docker_env.client().images.remove(tag, force=True)
        watch = _Builds()
        images.stap_image(build.base_suite, build, watch)
        seconds.append(watch.seconds["StapSourceBuilt"])
    return seconds[0], seconds[1], f"release-5.5 ({first[:12]}), then {second[:12]}"


class _KernelImages:
    def __init__(self, progress: _Builds) -> None:
        self.progress = progress

    def base(self) -> str:
        from harness import images
        from harness.suites import KERNEL_BUILD_SUITE

        return images.base_image(KERNEL_BUILD_SUITE, self.progress)

    def kernel_build(self) -> str:
        from harness import images

        return images.kernel_build_image(self.progress)


def _kernel_builds(repo: Path) -> tuple[float, float]:
    """(cold seconds, one commit later seconds) of the kernel's make (tinyconfig + systemtap's needs)."""
    from harness import kernels
    from harness.archive import Archive
    from harness.kconfig import parse_config_items
    from harness.specs import parse_kernel_spec

    config = parse_config_items([("tinyconfig", "bench")], ROOT)
    seconds = []
    for ref in ("before", "after"):
        build = kernels.resolve(parse_kernel_spec(f"git:{repo}@{ref}", "bench", config=config), "bench", Archive())
        watch = _Builds()
        kernels.materialize(build, Archive(), _KernelImages(watch), watch)
        seconds.append(watch.seconds["KernelBuilt"])
    return seconds[0], seconds[1]


def incremental_builds() -> list[tuple[str, str]]:
    """Cold and one-commit-later source builds, in a cache of their own (emptied first)."""
    from selftests.linux_source import linux_source_repo

    repo, _, _ = linux_source_repo()  # in the user's cache: made once, only read here
    cache = BENCH / ".cache-incremental"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["STAPMATRIX_CACHE"] = str(cache)
    rows = []
    source = os.environ.get("STAPMATRIX_SYSTEMTAP_SOURCE", "")
    if source:
        cold, warm, what = _stap_builds(source)
        rows.append((f"systemtap source build, cold ({what.split(',')[0]}; no ccache, no build directory)",
                     f"{cold:.0f} s"))
        rows.append((f"systemtap source build, the next commit ({what.split(', then ')[1]}) on it",
                     f"{warm:.0f} s ({100 * warm / cold:.0f}% of cold; goal <= 20%)"))
    else:
        rows.append(("systemtap source build", "not measured: set STAPMATRIX_SYSTEMTAP_SOURCE to a systemtap repository"))
    cold, warm = _kernel_builds(repo)
    rows.append(("kernel build (linux-source-6.12, tinyconfig + systemtap's needs), cold", f"{cold:.0f} s"))
    rows.append(("kernel build, the next commit (one function added) on it",
                 f"{warm:.0f} s ({100 * warm / cold:.0f}% of cold; goal <= 10%)"))
    return rows


def machine() -> str:
    memory = next((int(line.split()[1]) // (1024 * 1024) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({model}), {memory} GiB, {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-cold", action="store_true", help="skip the cold run (keep images and caches)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, metavar="SECTION",
                        help=f"measure only these: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    global KERNEL
    from selftests.archive_choice import newest_kernel

    KERNEL = newest_kernel("6.12", "trixie")  # the selftests' kernel: chosen by series, not by version
    cache = BENCH / ".cache"
    env = environment(cache)
    rows: list[tuple[str, str]] = []
    print(f"stapmatrix bench on {machine()}", flush=True)

    if "matrix" in args.only and not args.no_cold:
        print("cold: removing every stapmatrix image and the bench cache", flush=True)
        remove_images()
        shutil.rmtree(cache, ignore_errors=True)
        root_before = du_bytes(docker_root())
        cold = run(pytest("auto"), env, "matrix-cold")
        rows.append(("default matrix, cold (no images, empty caches), -n auto", f"{cold / 60:.1f} min"))
        images_bytes = du_bytes(docker_root()) - root_before
        store_bytes = du_bytes(cache / "kernels")
        sizes = image_sizes()
        stap_bytes = sum(size for tag, size in sizes.items() if "/stap:" in tag)
        reference = store_bytes + stap_bytes
        rows.append(("disk: images (Docker's data root grew by) + kernel store",
                     f"{images_bytes / 1e9:.1f} + {store_bytes / 1e9:.1f} = {(images_bytes + store_bytes) / 1e9:.1f} GB"))
        rows.append(("disk: kernel trees + systemtap images (the reference)",
                     (f"{store_bytes / 1e9:.1f} + {stap_bytes / 1e9:.1f} = {reference / 1e9:.1f} GB "
                     f"(grid uses {100 * (images_bytes + store_bytes) / max(reference, 1):.0f}% of it)")))
    if "matrix" in args.only:
        warm = run(pytest("auto"), env, "matrix-warm")
        rows.append(("default matrix, warm (everything cached), -n auto", f"{warm:.0f} s"))
        serial = run(pytest("1"), env, "matrix-warm-serial")
        rows.append(("default matrix, warm, -n 1 (serial)",
                     f"{serial:.0f} s (parallel is {serial / warm:.2f}x faster)"))

    if "cell" in args.only:
        cell = warm_cell_seconds(env)
        floor = bare_boot_seconds(cache)
        rows.append((f"warm single cell ({KERNEL} x {STAP}, begin_end), median of {TRIES}", f"{cell:.1f} s"))
        rows.append(("bare QEMU boot of the same kernel to busybox (TCG), median of 3",
                     f"{floor:.1f} s (warm cell = {cell / floor:.2f}x)"))

    if "compiles" in args.only:
        compiles = tracepoint_compiles(env, cache)
        first, second, begin = compiles["tracepoint_first"], compiles["tracepoint_second"], compiles["begin_only"]
        rows.append(("compile, first tracepoint script of a (systemtap, kernel) pair", f"{first:.0f} s"))
        rows.append(("compile, a second, new tracepoint script",
                     f"{second:.0f} s ({second / begin:.1f}x a new begin-only script)"))
        rows.append(("compile, a new begin-only script", f"{begin:.0f} s"))

    if "examples" in args.only:
        rows += examples_run(env, cache)

    if "registry" in args.only:
        rows += registry_rows(env, cache)
    if "incremental" in args.only:
        rows += incremental_builds()

    table = [f"Measured {time.strftime('%Y-%m-%d')} on {machine()}:", "",
             "| what | measured |", "| --- | --- |"] + [f"| {what} | {value} |" for what, value in rows]
    text = "\n".join(table) + "\n"
    print("\n" + text)
    (BENCH / f"results-{time.strftime('%Y%m%d')}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
