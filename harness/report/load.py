"""Reading results back: results.json files or run directories, merged (the shards of one
matrix run on several machines each bring their cells), and the merged file written out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.bounded import inside
from harness.errors import MatrixError
from harness.outcomes import Result, read_results, write_records

Key = tuple[str, str, str]  # (kernel_name, stap_name, test): what identifies a test across runs
CellKey = tuple[str, str]  # (kernel_name, stap_name)

def key(result: Result) -> Key:
    return (result.kernel_name, result.stap_name, result.test)


def _source_file(path: Path) -> Path:
    return path / "results.json" if path.is_dir() else path


def _comparable(result: Result, source: Path) -> dict[str, object]:
    """The record as its file holds it: the same run copied to two places compares equal."""
    return result.as_json(source.parent.resolve())


def load_runs(paths: Iterable[Path | str]) -> list[Result]:
    """Merge the results of several runs (e.g. the shards of one matrix run on many machines).

    A test found twice is an error naming both files, unless both records are identical (the
    same run given twice)."""
    merged: list[Result] = []
    seen: dict[Key, tuple[Result, Path]] = {}
    for path in paths:
        source = _source_file(Path(path))
        for result in read_results(source):
            earlier = seen.get(key(result))
            if earlier is None:
                seen[key(result)] = (result, source)
                merged.append(result)
            elif _comparable(earlier[0], earlier[1]) != _comparable(result, source):
                kernel, stap, test = key(result)
                raise MatrixError(f"{test} of kernel {kernel} x systemtap {stap} is in both {earlier[1]} and "
                                  f"{source} with different results; merge runs that hold different cells")
    return merged


def merged_artifacts(result: Result, base: Path) -> tuple[dict[str, str], int]:
    """(the result's artifacts as paths relative to `base` with no `..`, how many were left
    out): only files the record may point at (inside the directory it was read from) that
    also lie under `base`, so the merged file never names a file outside its own directory."""
    kept: dict[str, str] = {}
    left_out = 0
    for name, value in result.artifacts.items():
        real = inside(value, result.root) if result.root else Path(os.path.realpath(value))
        contained = inside(real, base) if real is not None else None
        if contained is None:
            left_out += 1
            continue
        kept[name] = str(contained.relative_to(Path(os.path.realpath(base))))
    return kept, left_out


def write_merged(path: Path, results: Sequence[Result]) -> int:
    """A results.json whose artifact paths are relative to its own directory and inside it
    (put it in a directory that holds the runs: merged/ with the shards in merged/shards/).
    Returns how many artifact paths were left out because they lie elsewhere."""
    base = path.parent.resolve()
    records = []
    left_out = 0
    for result in results:
        record = result.as_json()
        record["artifacts"], missing = merged_artifacts(result, base)
        left_out += missing
        records.append(record)
    write_records(path, records)
    return left_out
