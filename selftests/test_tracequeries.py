"""A failed tracepoint query is rebuilt once before a probe on it is judged (harness/modules.py:
systemtap caches a failed query as an empty file, whatever the cause). The log is the real
pass-2 failure of a `kernel.trace("sys_exit")` script on 6.12.118+deb13-amd64 x deb:5.6-1 with
the syscalls.h query emptied by hand."""

from __future__ import annotations

from pathlib import Path

from harness import modules

NO_MATCH_LOG = """\
semantic error: while resolving probe point: identifier 'kernel' at /work/scripts/sys_exit_seen.stp:6:7
semantic error: no match (similar tracepoints: ksm_exit, user_exit, ipi_exit, cpuhp_exit, rss_stat)
Pass 2: analysis failed.  [man error::pass2]
"""
PASS4_LOG = "task_finder2.c:941:9: error: implicit declaration of function 'task_euid'\nPass 4: compilation failed.\n"


def _query(stap_cache: Path, name: str, content: bytes) -> Path:
    path = stap_cache / "cache" / name[11:13] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_unresolved_probe_rebuilds_unconfirmed_failed_queries_once(tmp_path: Path) -> None:
    syscalls = _query(tmp_path, "tracequery_e5ed88efa66dfe38d778d1a7257ce5d1_850.o", b"")
    real_failure = _query(tmp_path, "tracequery_bb4d0b7bd3fc0cd600c2c329222f8890_857.o", b"")
    built = _query(tmp_path, "tracequery_1c5c34d73f1757b8583a597045b02ae7_847.o", b"\x7fELF")
    assert modules.forget_unconfirmed_failed_queries(tmp_path, PASS4_LOG) == []
    assert syscalls.exists()

    retried = modules.forget_unconfirmed_failed_queries(tmp_path, NO_MATCH_LOG)
    assert retried == ["cache/bb/tracequery_bb4d0b7bd3fc0cd600c2c329222f8890_857.o",
                       "cache/e5/tracequery_e5ed88efa66dfe38d778d1a7257ce5d1_850.o"]
    assert not syscalls.exists() and not real_failure.exists() and built.exists()
    syscalls.write_bytes(b"\x7fELF")  # the second compile built it: the first failure was transient
    real_failure.write_bytes(b"")  # and this header fails again: a real failure
    modules.confirm_failed_queries(tmp_path, retried)

    assert modules.forget_unconfirmed_failed_queries(tmp_path, NO_MATCH_LOG) == []  # confirmed: not again
    assert real_failure.exists()
    _query(tmp_path, "tracequery_ed4a652dde440183ca6ae615c6c80c87_854.o", b"")  # a new failure
    assert modules.forget_unconfirmed_failed_queries(tmp_path, NO_MATCH_LOG) == [
        "cache/ed/tracequery_ed4a652dde440183ca6ae615c6c80c87_854.o"]


def test_a_retry_that_built_no_query_puts_them_back_unconfirmed(tmp_path: Path) -> None:
    """A `process(...)` probe that does not resolve also says "while resolving probe point";
    its second compile builds no tracepoint query. Seen in a cold examples run: each such
    failure removed the 21 real failures of 6.12.118 x 5.6-1 and the next tracepoint compile
    rebuilt them (20 s each time)."""
    real_failure = _query(tmp_path, "tracequery_bb4d0b7bd3fc0cd600c2c329222f8890_857.o", b"")
    retried = modules.forget_unconfirmed_failed_queries(tmp_path, NO_MATCH_LOG)
    assert retried == ["cache/bb/tracequery_bb4d0b7bd3fc0cd600c2c329222f8890_857.o"]
    assert not real_failure.exists()  # set aside while the second compile runs
    modules.confirm_failed_queries(tmp_path, retried)  # and it built none
    assert real_failure.is_file() and real_failure.stat().st_size == 0
    assert not list(tmp_path.glob("cache/*/*.retrying"))
    assert not (tmp_path / modules.CONFIRMED_EMPTY_QUERIES).exists()  # still unconfirmed: the next retry tries it
    assert modules.forget_unconfirmed_failed_queries(tmp_path, NO_MATCH_LOG) == retried
