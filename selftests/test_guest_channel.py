"""Reading what the guest reported: real result-channel and console text captured from a
real boot (systemtap 5.1 on Debian's 6.12.117, where every module fails to load because
6.12 split uprobe_unregister())."""

from __future__ import annotations

from harness.guest import TestRun, _console_sections, build_id_from_notes, crash_excerpt, parse_results


def test_parse_real_result_channel(data) -> None:  # type: ignore[no-untyped-def]
    runs: dict[str, TestRun] = {}
    booted, done, build_id = parse_results((data / "results-stap5.1-on-6.12.log").read_text(), 1, runs)
    assert booted and done
    assert build_id == "b1d7a9114053a488ef493f85f85e9fc75ba9f632"
    assert set(runs) == {"begin_end", "kernel_function", "syscall", "timer"}
    begin_end = runs["begin_end"]
    assert begin_end.ended and begin_end.status == 1 and not begin_end.timed_out
    assert begin_end.stderr == "ERROR: Can't resolve uprobe_unregister!\n"
    assert begin_end.taint_after == 12288 and begin_end.new_taint() == ""  # O and E are expected


def test_console_sections_follow_kmsg_markers(data) -> None:  # type: ignore[no-untyped-def]
    sections = _console_sections((data / "console-stap5.1-on-6.12.log").read_text())
    assert "module verification failed" in sections["begin_end"]
    assert sections["timer"] == ""


def test_no_crash_in_clean_console(data) -> None:  # type: ignore[no-untyped-def]
    assert crash_excerpt((data / "console-stap5.1-on-6.12.log").read_text()) == ""


def test_build_id_from_notes_skips_other_notes() -> None:
    xen_note = (4).to_bytes(4, "little") + (4).to_bytes(4, "little") + (6).to_bytes(4, "little") + b"Xen\0" + b"abcd"
    gnu_note = (4).to_bytes(4, "little") + (3).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"GNU\0" + b"\x01\x02\x03\0"
    assert build_id_from_notes((xen_note + gnu_note).hex()) == "010203"


def test_new_taint_names_flags() -> None:
    run = TestRun("t", 1, 1, taint_before=0, taint_after=4096 | 8192 | 512 | 128)
    assert run.new_taint() == "DW"
