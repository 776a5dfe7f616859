"""Test sets without Docker: how a matrix names systemtap's own tests, how examples' .meta files
become tests, which DejaGnu files a set selects, and which of them work outside the guest.
The .meta and .exp texts here are written for these tests (systemtap's own are read by the
real tests in test_examples.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from harness import dejagnu_sets, examples
from harness.errors import MatrixError
from harness.matrix import load_matrix
from harness.testsets import TestSet

META = """title: Periodically Print IO Activity by Process Name
name: iotop.stp
keywords: io
test_check: stap -p4 iotop.stp
test_installcheck: stap iotop.stp -T 1
"""


def test_meta_files_become_one_test_per_command() -> None:
    tests = examples.tests_of({"io/iotop.meta": META, "general/hello.meta": "name: hello.stp\ntest_check: stap -p4 "
                               "hello.stp\ntest_support: stap -l 'kernel.function(\"vfs_read\")'\n"}, "t")
    assert [(t.name, t.kind, t.command, t.directory) for t in tests] == [
        ("examples/general/hello: check", "check", "stap -p4 hello.stp", "general"),
        ("examples/io/iotop: check", "check", "stap -p4 iotop.stp", "io"),
        ("examples/io/iotop: installcheck", "installcheck", "stap iotop.stp -T 1", "io")]
    assert tests[0].support == "stap -l 'kernel.function(\"vfs_read\")'"


def test_meta_fields_as_check_exp_reads_them() -> None:
    """One line a field, the last of a repeated key wins, other keys and variants are ignored."""
    fields = examples.parse_meta("test_check: stap -p4 a.stp\ntest_check: stap -p4 b.stp\n"
                                 "test_check_bpf: stap --bpf -p4 a.stp\ndescription: test_check: no\n", "m")
    assert fields == {"test_check": "stap -p4 b.stp"}


@pytest.mark.parametrize(("metas", "message"), [
    ({"../etc/x.meta": META}, "has a name stapmatrix does not take"),
    ({"io/a b.meta": META}, "has a name stapmatrix does not take"),
    ({"io/x.meta": "test_check: " + "x" * 5000 + "\n"}, "test_check is 5000 characters long"),
    ({"io/x.meta": "test_check: stap\0 -p4\n"}, "holds a NUL byte"),
])
def test_meta_files_outside_the_rules_are_refused(metas: dict[str, str], message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        examples.tests_of(metas, "t")


def test_a_package_gives_only_regular_files_below_its_examples(tmp_path: Path) -> None:
    """systemtap-doc's data tar: links, devices, `..` and files outside the examples directory
    are not extracted."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind in (("./usr/share/systemtap/examples/io/iotop.meta", tarfile.REGTYPE),
                           ("./usr/share/systemtap/examples/io/../../../../etc/passwd", tarfile.REGTYPE),
                           ("./usr/share/systemtap/examples/io/link", tarfile.SYMTYPE),
                           ("./usr/share/doc/systemtap-doc/copyright", tarfile.REGTYPE),
                           ("/usr/share/systemtap/examples/abs.meta", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = 0 if kind != tarfile.REGTYPE else len(META)
            tar.addfile(info, io.BytesIO(META.encode()) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        kept = [examples._safe_member(m) for m in tar.getmembers()]
    assert kept == ["io/iotop.meta", None, None, None, None]


def test_examples_of_a_directory_and_a_filter(tmp_path: Path) -> None:
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "iotop.meta").write_text(META)
    (tmp_path / "io" / "iotop.stp").write_text("probe begin { exit() }\n")
    found = examples._from_directory(tmp_path, str(tmp_path))
    assert len(found.tests) == 2 and found.host_dir == str(tmp_path)
    only_check = TestSet("examples", exclude=("*: installcheck",))
    assert [t.name for t in found.tests if only_check.selects(t.name)] == ["examples/io/iotop: check"]
    (tmp_path / "io" / "iotop.stp").write_text("probe begin { exit(); }\n")
    assert examples.tree_key(tmp_path) != found.key  # a changed script: cached verdicts no longer apply


@pytest.mark.parametrize(("text", "why"), [
    ("set test x\nstap_run $test no_load $output $srcdir/$subdir/$test.stp\n", ""),
    ("spawn stap $srcdir/$subdir/$test.stp -c {ls /proc/* > /dev/null; sleep 5}\n", ""),  # -c runs in the guest
    ('if {[catch { exec sh -c "stap -s 1 -e \'probe begin{exit();}\' | grep -q x"}]} { fail $test }\n', ""),
    ("# exec cat /dev/null in a comment\nstap_run $test no_load $output $f\n", ""),
    ("target_compile $srcdir/$subdir/jennie.c jennie executable \"\"\n", "DejaGnu machine's gcc"),
    ("proc opener {} { exec cat /dev/null }\nstap_run $test opener $output $file\n", "runs a program"),
    ("set f [open /proc/systemtap/x/command]\n", "reads /proc"),
    ("as_root {insmod foo.ko}\n", "as root"),
    ("exec staprun -R mod.ko\n", "runs staprun itself"),
    ("set pid [exec pgrep -P $ppid]\n", "looks for processes"),
])
def test_dejagnu_files_that_work_outside_the_guest(text: str, why: str) -> None:
    found = dejagnu_sets.host_bound(text)
    assert (why in found) if why else found == "", found


@pytest.mark.parametrize(("text", "programs"), [
    ('stap_run $test no_load $all_pass_string -c "cat /dev/null" -w $srcdir/$subdir/$test.stp\n', ("cat",)),  # kretprobe-vars.exp
    ("spawn stap $srcdir/$subdir/$test.stp -c {ls /proc/* > /dev/null; sleep 5}\n", ("ls", "sleep")),
    ("spawn stap -c ./a.out x.stp\nspawn stap -c $exepath y.stp\n# spawn stap -c {date} z.stp\n", ()),
    ("spawn stap -c true x.stp\nexec sh -c \"stap -e 'probe begin{exit()}'\"\n", ("true",)),
])
def test_the_programs_a_dejagnu_file_starts_in_the_guest(text: str, programs: tuple[str, ...]) -> None:
    """They come from the cell image, not busybox (whose cat copies with sendfile(2), so
    kretprobe-vars.exp's vfs_read probe never fired); compiled programs and variables are not
    programs of the image, and `sh -c` is not stap's -c."""
    assert dejagnu_sets.target_programs_of(text) == programs


def test_dejagnu_selectors() -> None:
    tests = ["systemtap.base/kprobes.exp", "systemtap.base/kretprobe-vars.exp", "systemtap.pass1-4/buildok.exp",
             "systemtap.examples/check.exp", "systemtap.base/environment_sanity.exp"]
    assert dejagnu_sets._select("systemtap.base/k*.exp", tests) == tests[:2]
    assert dejagnu_sets._select("kprobes.exp", tests) == ["systemtap.base/kprobes.exp"]  # a bare name, as runtest
    assert dejagnu_sets._select("systemtap.pass1-4", tests) == ["systemtap.pass1-4/buildok.exp"]
    assert dejagnu_sets._select("smoke", tests) == ["systemtap.base/kprobes.exp", "systemtap.base/kretprobe-vars.exp"]
    assert dejagnu_sets._select("all", tests) == tests


def test_matrix_test_sets(write) -> None:  # type: ignore[no-untyped-def]
    write("mine/io/x.meta", META)
    path = write("m.yaml", "kernels: [6.12.117+deb13-amd64]\nstap: ['deb:5.6-1']\ntestsuite:\n  - examples\n"
                           "  - {set: smoke, include: ['testsuite:*kprobes*']}\n"
                           "  - {set: examples, path: mine, exclude: ['*: installcheck']}\n"
                           "xfail:\n  - {test: 'examples/io/iotop: *', reason: a known failure}\n")
    matrix = load_matrix(path)  # no `tests:` needed when the matrix runs systemtap's own
    assert [s.selector for s in matrix.testsuite] == ["examples", "smoke", "examples"]
    assert matrix.testsuite[1].include == ("testsuite:*kprobes*",)
    assert matrix.testsuite[2].path == str(path.parent / "mine") and matrix.testsuite[2].exclude == ("*: installcheck",)
    assert matrix.known_failure("6.12.117+deb13-amd64", "deb:5.6-1", "examples/io/iotop: check")
    with pytest.raises(MatrixError, match="needs a 'tests' list .*, a 'testsuite' list"):
        load_matrix(write("n.yaml", "kernels: [6.12.117+deb13-amd64]\nstap: ['deb:5.6-1']\n"))
    with pytest.raises(MatrixError, match="examples directory .*nope does not exist"):
        load_matrix(write("o.yaml", "kernels: [6.12.117+deb13-amd64]\nstap: ['deb:5.6-1']\n"
                                    "testsuite: [{set: examples, path: nope}]\n"))
