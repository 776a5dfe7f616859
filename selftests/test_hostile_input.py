"""Odd and hostile input, on real files: each is refused with a MatrixError that names the file
(and line where there is one), the bad value and what would be accepted, or is handled. None
may end in a traceback, and none may be quietly accepted.

No Docker here: the pytest and `check` cases run with DOCKER_HOST at a socket that does not
exist, which is the proof that they never contact the daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import kernel_git
from harness.archive import parse_index
from harness.cli import main
from harness.errors import InfraError, MatrixError
from harness.gitrepo import check_transport, mask
from harness.guest import GuestRun, TestRun, parse_results
from harness.judge import judge
from harness.kconfig import parse_config_items
from harness.matrix import load_matrix
from harness.modules import Compiled
from harness.outcomes import Outcome
from harness.recipes import check_packages
from harness.scripts import load_script
from harness.specs import parse_stap_spec

ROOT = Path(__file__).resolve().parent.parent
# A kernel ABI name of the right form, for the tests that stop before the archive is asked; a
# test that resolves its kernel takes the selftests' (conftest.py deb_kernel).
ANY_KERNEL = "6.12.117+deb13-amd64"
GOOD = f"kernels: [{ANY_KERNEL}]\nstap: ['deb:5.6-1']\ntests: [t.stp]\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "t.stp").write_text("probe begin { exit() }\n")
    return tmp_path


def matrix_error(folder: Path, text: str | bytes) -> str:
    path = folder / "matrix.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(MatrixError) as caught:
        load_matrix(path)
    return str(caught.value)


def script_error(folder: Path, text: str | bytes, name: str = "s.stp", **options: object) -> str:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(MatrixError) as caught:
        load_script(path, **options)  # type: ignore[arg-type]
    return str(caught.value)


# --- the matrix file --------------------------------------------------------------------------

def test_non_utf8_matrix_names_line_and_byte(folder: Path) -> None:
    message = matrix_error(folder, GOOD.encode() + b"# caf\xe9\n")
    assert "matrix.yaml:4: not UTF-8" in message and "0xe9" in message and "save the file as UTF-8" in message


@pytest.mark.parametrize("nesting", ["[" * 5000 + "]" * 5000, "\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 1500))],
                         ids=["flow", "block"])
def test_deeply_nested_yaml(folder: Path, nesting: str) -> None:
    assert "nested too deeply" in matrix_error(folder, "kernels: " + nesting)


@pytest.mark.parametrize(("text", "where", "key"), [
    (GOOD + "kernels: [6.1.0-50-amd64]\n", ":4:", "'kernels'"),  # top level
    (f"kernels:\n  - {{deb: {ANY_KERNEL}, name: a, name: b}}\nstap: ['deb:5.6-1']\ntests: [t.stp]\n", ":2:", "'name'"),
    (f"kernels: [{ANY_KERNEL}]\nstap:\n  - {{deb: 5.6-1, deb: 5.1-5}}\ntests: [t.stp]\n", ":3:", "'deb'"),
    (GOOD + "xfail:\n  - {test: a, test: b, reason: r}\n", ":5:", "'test'"),
    (GOOD + "exclude:\n  - test: a\n    reason: r\n    reason: s\n", ":7:", "'reason'"),
])
def test_duplicate_keys_in_any_mapping(folder: Path, text: str, where: str, key: str) -> None:
    message = matrix_error(folder, text)
    assert where in message and f"key {key} given twice" in message and "keep only the last" in message


@pytest.mark.parametrize(("section", "text"), [
    ("kernels", "kernels: []\nstap: ['deb:5.6-1']\ntests: [t.stp]\n"),
    ("stap", f"kernels: [{ANY_KERNEL}]\nstap: []\ntests: [t.stp]\n"),
    ("tests", f"kernels: [{ANY_KERNEL}]\nstap: ['deb:5.6-1']\ntests: []\n"),
])
def test_empty_lists_are_refused(folder: Path, section: str, text: str) -> None:
    assert f"'{section}' is empty; a matrix needs at least one" in matrix_error(folder, text)


def test_two_cells_with_one_id_are_refused(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Kernels `a` and `a-stap-b`, systemtap names `b-stap-c` and `c`: a x b-stap-c and
    a-stap-b x c are both `a-stap-b-stap-c`; one CI job would run twice, the other never."""
    text = (f"kernels:\n  - {{deb: {ANY_KERNEL}, name: a}}\n  - {{deb: 6.1.0-50-amd64, name: a-stap-b}}\n"
            "stap:\n  - {deb: 5.6-1, name: b-stap-c}\n  - {deb: 5.1-5, name: c}\ntests: [t.stp]\n")
    message = matrix_error(folder, text)
    assert "matrix.yaml:3: kernel 'a-stap-b' x systemtap 'c' (line 6) has the cell id 'a-stap-b-stap-c'" in message
    assert "as kernel 'a' (line 2) x systemtap 'b-stap-c' (line 5) does" in message
    assert main(["plan", "--github", "--matrix", str(folder / "matrix.yaml")]) == 2
    assert "has the cell id 'a-stap-b-stap-c'" in capsys.readouterr().err


def test_null_list_is_not_a_list(folder: Path) -> None:
    assert "'kernels' must be a list" in matrix_error(folder, "kernels:\nstap: ['deb:5.6-1']\ntests: [t.stp]\n")


@pytest.mark.parametrize("text", [
    f"kernels: [{ANY_KERNEL}]\nstap: ['path:~no-such-user-sm/x']\ntests: [t.stp]\n",
    f"kernels: [{ANY_KERNEL}]\nstap: [{{path: ~no-such-user-sm/x}}]\ntests: [t.stp]\n",
    f"kernels: [{ANY_KERNEL}]\nstap: ['deb:5.6-1']\ntests: [~no-such-user-sm/t.stp]\n",
])
def test_tilde_of_a_user_that_does_not_exist(folder: Path, text: str) -> None:
    assert "no such user's home directory" in matrix_error(folder, text)


# Cases of our own: each once ended in a traceback or a misleading message.
def test_symlink_loop_as_a_test(folder: Path) -> None:
    (folder / "loop.stp").symlink_to("loop.stp")
    message = matrix_error(folder, f"kernels: [{ANY_KERNEL}]\nstap: ['deb:5.6-1']\ntests: [loop.stp]\n")
    assert "matrix.yaml:3: cannot resolve 'loop.stp'" in message and "loop" in message.lower()


def test_a_huge_matrix_file_is_not_read(folder: Path) -> None:
    path = folder / "matrix.yaml"
    with path.open("wb") as stream:
        stream.truncate(20 * 1024 * 1024)  # sparse
    with pytest.raises(MatrixError, match=r"the matrix file is 20.0 MiB, more than the 16.0 MiB a matrix file may be"):
        load_matrix(path)


def test_matrix_that_is_a_directory(folder: Path) -> None:
    with pytest.raises(MatrixError, match="is not a regular file"):
        load_matrix(folder)


@pytest.mark.parametrize(("text", "expected"), [
    ("", "must be a mapping"),
    (GOOD + "\0\n", "not valid YAML"),
    ("kernels: &a [*a]\nstap: ['deb:5.6-1']\ntests: [t.stp]\n", "a kernel must be a non-empty string"),
    ("? [a]\n: b\n" + GOOD, "a key must be a non-empty string"),
    ("kernels: [!!python/object/apply:os.system ['touch pwned']]\nstap: ['deb:5.6-1']\ntests: [t.stp]\n",
     "a kernel must be a non-empty string"),
    (f"kernels: [{ANY_KERNEL}]\nstap:\n  - &s {{deb: 5.6-1}}\n  - {{<<: *s, name: x}}\ntests: [t.stp]\n", "unknown key '<<'"),
    (GOOD + "testsuite: [../../etc/passwd.exp]\n", "test set '../../etc/passwd.exp' is not `examples`"),
    (GOOD + "testsuite: ['a; rm -rf /']\n", "test set 'a; rm -rf /' is not `examples`"),
    (GOOD + "testsuite: [{set: examples, include: ['$(touch x)']}]\n", "include pattern '$(touch x)' is not"),
    (GOOD + "testsuite: [{set: smoke, path: .}]\n", "path: belongs to the examples set"),
    (GOOD + "testsuite: [examples, examples]\n", "test set 'examples' listed twice (first at line 4)"),
])
def test_odd_yaml_is_refused(folder: Path, text: str, expected: str) -> None:
    assert expected in matrix_error(folder, text)
    assert not (folder / "pwned").exists()  # YAML tags are inert


# --- config: items ----------------------------------------------------------------------------

SECRET = "API_TOKEN=SECRET-d41d8cd98f00"


def config_matrix(folder: Path, item: str) -> Path:
    path = folder / "matrix.yaml"
    path.write_text(f"kernels:\n  - {{git: {folder}/linux, ref: v6.12, config: [tinyconfig, {item}]}}\n"
                    "stap: ['deb:5.6-1']\ntests: [t.stp]\n")
    return path


def config_error(folder: Path, item: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The error of `stapmatrix check` (one line, exit 2), which load_matrix gives too."""
    path = config_matrix(folder, item)
    with pytest.raises(MatrixError) as caught:
        load_matrix(path)
    assert main(["check", "--matrix", str(path)]) == 2
    said = capsys.readouterr().err.strip()
    assert said == f"stapmatrix: {caught.value}" and "\n" not in said and SECRET not in said
    return str(caught.value)


def test_a_config_file_that_is_not_a_config_is_never_echoed(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "secret.config").write_text(f"# keys\nCONFIG_X=y\n{SECRET}\n")
    message = config_error(folder, "secret.config", capsys)
    assert f"{folder}/secret.config:3: not a kernel config line" in message


def test_the_environment_as_a_config_file_is_never_echoed(folder: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAPMATRIX_TEST_SECRET", SECRET)
    (folder / "env.config").symlink_to("/proc/self/environ")
    assert "env.config:1: not a kernel config line" in config_error(folder, "env.config", capsys)


@pytest.mark.parametrize(("kind", "said"), [("directory", "is a directory, not a regular file"),
                                            ("fifo", "is a FIFO, not a regular file"),
                                            ("device", "is a character device, not a regular file"),
                                            ("dangling", "cannot be read: No such file or directory"),
                                            ("huge", "is 800.0 MiB, more than the 4.0 MiB a kernel config file may be")])
def test_a_config_file_that_is_no_regular_file(folder: Path, kind: str, said: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Named like an in-tree fragment (x.config), but a file of that name is here: it is what
    was meant, and it is refused for what it is, never read (a FIFO would block)."""
    odd = folder / "x.config"
    if kind == "directory":
        odd.mkdir()
    elif kind == "fifo":
        os.mkfifo(odd)
    elif kind == "device":
        odd.symlink_to("/dev/zero")
    elif kind == "dangling":
        odd.symlink_to(folder / "gone.config")
    else:
        with odd.open("wb") as stream:
            stream.truncate(800 * 1024 * 1024)  # sparse
    message = config_error(folder, "x.config", capsys)
    assert f"config file {odd} {said}" in message


@pytest.mark.parametrize("value", ['CONFIG_LOCALVERSION=\\"a\\nCONFIG_MODULES=n\\"', 'CONFIG_X=\\"a\\rb\\"',
                                   'CONFIG_X=y\\nCONFIG_MODULES=n', 'CONFIG_X=\\"\\x1b[2J\\"'])
def test_config_lines_are_one_line(folder: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`config: ["CONFIG_LOCALVERSION=\\"a\\nCONFIG_MODULES=n\\""]` would have become two lines of
    the merged fragment: CONFIG_MODULES=n slipped past the check."""
    message = config_error(folder, f'"{value}"', capsys)
    assert "is not CONFIG_X=y" in message and "one line, no control characters" in message


def test_fragment_names_never_reach_the_build_script(folder: Path) -> None:
    """A fragment file named with spaces, `*` and `$(...)`: copied for the build under a name
    made of its position only."""
    odd = folder / "my frag *$(touch pwned).config"
    odd.write_text("CONFIG_KPROBES=y\n")
    items = parse_config_items([("tinyconfig", "m:1"), (str(odd), "m:2"), ("CONFIG_X=y", "m:3")], folder)
    base, fragments = kernel_git._config_files(items, folder / "config")
    assert base == "tinyconfig"
    assert fragments[0] == "/config/01-fragment.config" and all(" " not in f and "*" not in f for f in fragments)
    assert (folder / "config" / "01-fragment.config").read_text() == "CONFIG_KPROBES=y\n"
    assert not (folder / "pwned").exists()


# --- test scripts -----------------------------------------------------------------------------

def test_non_utf8_script(folder: Path) -> None:
    message = script_error(folder, b"probe begin {}\n// caf\xe9\n")
    assert "s.stp:2: not UTF-8" in message and "0xe9" in message


def test_unbalanced_quote_in_run(folder: Path) -> None:
    message = script_error(folder, "// stapmatrix: run /bin/echo 'abc\n")
    assert "s.stp:1: run directive" in message and "No closing quotation" in message


@pytest.mark.parametrize("digits", ["\u0663\u0660", "\uff13\uff10", "\u0969\u0966", "-5", "0", "3601", "1e3"])
def test_timeout_must_be_ascii_seconds(folder: Path, digits: str) -> None:
    message = script_error(folder, f"// stapmatrix: timeout {digits}\n")
    assert f"timeout {digits!r} must be whole seconds between 1 and 3600, in ASCII digits" in message


@pytest.mark.parametrize("line", [
    "// stapmatrx: expect hi", "// stap-matrix: expect hi", "# StapMatrix: timeout 5", "// sm: expect hi",
    "/* stapmatrx: expect hi */",  # our own: the block comment form
    "// stapmatrix expect hi",  # our own: the colon forgotten
])
def test_misspelt_directive_prefix(folder: Path, line: str) -> None:
    assert "looks like a misspelt 'stapmatrix:' directive prefix" in script_error(folder, line + "\n")


def test_ordinary_comments_are_not_directives(folder: Path) -> None:
    path = folder / "c.stp"
    path.write_text("// sm run of the mill comment\n# stapmatrix is the harness\n/* expect nothing */\n")
    assert load_script(path).expect == ()


def test_not_a_stp_file(folder: Path) -> None:
    assert "is not a .stp file" in script_error(folder, "probe begin {}\n", name="s.txt")


def test_fifo_is_not_a_regular_file(folder: Path) -> None:
    os.mkfifo(folder / "fifo.stp")
    with pytest.raises(MatrixError, match="is not a regular file"):
        load_script(folder / "fifo.stp")


@pytest.mark.parametrize("target", ["/dev/null", "/proc/version", "/proc/self/status", "/sys/kernel/notes"])
def test_special_files_are_refused(folder: Path, target: str) -> None:
    """Directly, or through a `.stp` symlink (the name is not the file)."""
    with pytest.raises(MatrixError, match="not a regular file|not a .stp file|not a test script"):
        load_script(Path(target))
    (folder / "link.stp").symlink_to(target)
    with pytest.raises(MatrixError, match="not a regular file|not a .stp file|not a test script"):
        load_script(folder / "link.stp")


@pytest.mark.parametrize("arg", [
    "-r", "-r6.1", "-p4", "-p", "-m", "-mfoo", "-o", "-ofile", "-c", "-x", "--remote=ssh:x", "--use-server",
    "--tmpdir=/x",
    # our own: reserved options inside clusters of short options, and options that print
    # instead of compiling (stap exits 0 with no module)
    "-vp2", "-gmfoo", "-kc", "-V", "-l", "-L", "-h", "--help", "--version", "--dump-functions", "-e",
    "--remot=ssh:x", "--use-s", "--tmp=/x", "--vers",  # getopt_long's abbreviations
])
def test_reserved_stap_options(folder: Path, arg: str) -> None:
    message = script_error(folder, f"// stapmatrix: stap-arg {arg}\n")
    assert f"stap option {arg!r} sets" in message and "reserves" in message


@pytest.mark.parametrize("arg", ["-g", "-v", "-vvv", "-k", "-DMAXACTION=1000", "-I/tmp", "-Tr", "-Sp", "--skip-badvars",
                                 "--remote-prefix"])
def test_ordinary_stap_options_pass(folder: Path, arg: str) -> None:
    """`-Tr`, `-Sp`: a value of -T or -S, not the reserved -r or -p."""
    path = folder / "ok.stp"
    path.write_text(f"// stapmatrix: stap-arg {arg}\n")
    assert load_script(path).stap_args == (arg,)


def test_reserved_options_from_the_command_line(folder: Path) -> None:
    with pytest.raises(MatrixError, match="--stap-arg: stap option '-p2' sets -p"):
        load_script(folder / "t.stp", extra_stap_args=("-p2",))


# --- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-5", "0", "3601"])
def test_cli_timeout_out_of_range(folder: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--kernel", ANY_KERNEL, "--stap", "deb:5.6-1", "--timeout", value, str(folder / "t.stp")])
    assert code == 2 and f"--timeout {value}: give whole seconds between 1 and 3600" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--timeout", "\u0663\u0660"), ("--reruns", "\u0661"), ("--timeout", "ten")])
def test_cli_numbers_are_ascii(folder: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "--kernel", ANY_KERNEL, "--stap", "deb:5.6-1", option, value, str(folder / "t.stp")])
    assert caught.value.code == 2 and "not a whole number in ASCII digits" in capsys.readouterr().err


def test_cli_script_that_is_a_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kernel", ANY_KERNEL, "--stap", "deb:5.6-1", "/dev/null"]) == 2
    assert "/dev/null is not a regular file" in capsys.readouterr().err


def test_cli_missing_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--matrix", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


# --- git URLs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "transport"), [
    ("ext::sh", "'ext::'"), ("fd::17", "'fd::'"), ("ftp://127.0.0.1/x.git", "'ftp'"), ("rsync://127.0.0.1/x", "'rsync'"),
])
def test_git_transports_outside_the_allowed_set(url: str, transport: str) -> None:
    with pytest.raises(MatrixError, match=f"git transport {transport} .* is not allowed"):
        check_transport(url, "--stap")


def test_ext_transport_from_the_command_line_is_refused(deb_kernel: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`git:ext::sh@main`: refused at planning, with nothing run."""
    spec = parse_stap_spec("git:ext::sh@main", "--stap")
    assert spec.value == "ext::sh"
    assert main(["check", "--matrix", "/dev/null"]) == 2  # and `check` of a device is a clean refusal
    code = main(["run", "--kernel", deb_kernel, "--stap", "git:ext::sh@main", str(ROOT / "tests/stap/begin_end.stp")])
    assert code == 2 and "git transport 'ext::'" in capsys.readouterr().err


@pytest.mark.parametrize(("spec", "expected"), [
    ("git:-oProxyCommand@host:x@main", "starts with '-'"),  # scp-like: git would take it for an option
    ("git:/tmp/x@--upload-pack=touch", "git ref '--upload-pack=touch' is not valid"),
    ("git:/tmp/x@-x", "git ref '-x' is not valid"),
])
def test_git_values_that_git_would_read_as_options(deb_kernel: str, spec: str, expected: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--kernel", deb_kernel, "--stap", spec, str(ROOT / "tests/stap/begin_end.stp")])
    assert code == 2 and expected in capsys.readouterr().err


def test_credentials_are_masked() -> None:
    assert mask("fatal: https://user:s3cret@127.0.0.1:9/x.git and http://tok@h/y") == \
        "fatal: https://***@127.0.0.1:9/x.git and http://***@h/y"


# --- the guest's result channel ---------------------------------------------------------------

def _channel_outcomes(text: str) -> dict[str, tuple[Outcome, str]]:
    guest = GuestRun("tcg")
    runs: dict[str, TestRun] = guest.runs
    parse_results(text, 1, runs, guest.garbled)
    outcomes = {}
    for name in ("begin_end", "timer", "syscall", "kernel_function"):
        script = load_script(ROOT / "tests" / "stap" / f"{name}.stp")
        compiled = Compiled(name, True, None, "", 0.0, True, Path("/dev/null"))
        outcomes[name] = judge(script, compiled, guest, [])
    return outcomes


@pytest.mark.parametrize("damage", ["truncate", "garble-number", "bad-base64", "nul", "unknown-record", "cut-record"])
def test_garbled_result_line_is_an_error_for_that_test_only(data: Path, damage: str) -> None:
    """A real result channel (systemtap 5.1 on 6.12) with one line of the `timer` test damaged."""
    lines = (data / "results-stap5.1-on-6.12.log").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("@@SM RC timer"))
    line = lines[index]
    lines[index] = {
        "truncate": line[: len("@@SM RC timer 1")],
        "garble-number": line.replace("@@SM RC timer 1", "@@SM RC timer x"),
        "bad-base64": "@@SM OUT timer !!not-base64!!",
        "nul": "@@SM RC timer \0\0\0 0 0 0",
        "unknown-record": "@@SM RX timer 1 0 0 0",
        "cut-record": "@@SM",
    }[damage]
    outcomes = _channel_outcomes("\n".join(lines) + "\n")
    assert outcomes["timer"][0] is Outcome.ERROR and "does not parse" in outcomes["timer"][1]
    assert outcomes["begin_end"][0] is Outcome.FAIL_LOAD  # the undamaged tests keep their real outcome


def test_result_channel_cut_short(data: Path) -> None:
    """The guest died mid-line: the channel ends anywhere, inside a record too. At every cut,
    each test is what the records before the cut say: a test whose END arrived keeps its real
    outcome (fail-load here); one that started and did not end crashed, or, when the cut line
    of its own records does not parse, is an error quoting that line; one that never started
    is an error saying so. A damaged line after a test's END is not blamed on it."""
    text = (data / "results-stap5.1-on-6.12.log").read_text()
    full = _channel_outcomes(text)
    assert {name: outcome for name, (outcome, _) in full.items()} == dict.fromkeys(full, Outcome.FAIL_LOAD)
    ends = {name: text.index(f"@@SM END {name}\n") + len(f"@@SM END {name}") for name in full}
    starts = {name: text.index(f" {name}\n", text.index("@@SM START")) for name in full}
    checked = 0
    for cut in range(0, len(text) + 1, 7):
        guest = GuestRun("tcg")
        parse_results(text[:cut], 1, guest.runs, guest.garbled)
        outcomes = _channel_outcomes(text[:cut])
        partial = text[:cut].rsplit("\n", 1)[-1].strip()
        for name, (outcome, detail) in outcomes.items():
            start = text.index(f"@@SM START {text[:starts[name]].count('@@SM START')} {name}")
            if cut >= ends[name]:
                assert (outcome, detail) == full[name], (cut, name)
            elif cut >= starts[name] + len(name) + 1:  # its START line is whole
                if name in guest.garbled:
                    said = guest.garbled[name]
                    # the cut line itself, or for a cut output chunk the base64 error it gave
                    chunk = " ".join(partial.split()[:3]) + ":"
                    assert said == partial or (said.startswith(chunk) and "base64" in said), (cut, name, said)
                    assert outcome is Outcome.ERROR and said[:40] in detail, (cut, name, detail)
                else:
                    assert outcome is Outcome.CRASH, (cut, name, outcome, detail)
                    assert detail == "the guest ended during this test without a crash message"
            else:
                assert cut < start + len(f"@@SM START 1 {name}") + 1
                assert outcome is Outcome.ERROR and "never started this test" in detail, (cut, name, detail)
        checked += 1
    assert checked > 100


# --- pytest and `check` without Docker --------------------------------------------------------

def _no_docker_env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock", STAPMATRIX_ARTIFACTS=str(tmp_path / "a"))


def test_check_and_collect_only_never_contact_docker(deb_kernel: str, deb_stap: str, tmp_path: Path) -> None:
    (tmp_path / "t.stp").write_text("probe begin { exit() }\n")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"kernels: [{deb_kernel}]\nstap: ['{deb_stap}']\ntests: [t.stp]\n")
    cell = f"{deb_kernel}-stap{deb_stap.removeprefix('deb:')}"
    env = _no_docker_env(tmp_path)
    check = subprocess.run([sys.executable, "-m", "harness.cli", "check", "--matrix", str(matrix)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stderr
    assert f"cell {cell}" in check.stdout
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", f"--matrix={matrix}"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300, check=False)
    assert collect.returncode == 0, collect.stdout + collect.stderr
    assert f"test_stap[{cell}-t]" in collect.stdout and "Docker" not in collect.stdout + collect.stderr


def test_pytest_without_xdist(tmp_path: Path) -> None:
    """`-p no:xdist`: addopts' `--dist loadgroup` is accepted and the tests run in one process."""
    env = _no_docker_env(tmp_path)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "selftests/test_scripts.py"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0 and "passed" in ran.stdout and "Traceback" not in ran.stdout + ran.stderr, ran.stdout
    both = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-n", "2", "selftests/test_scripts.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert both.returncode == 4 and "unrecognized arguments: -n" in both.stderr
    assert "Traceback" not in both.stdout + both.stderr


# --- values from package indexes that become build arguments ----------------------------------

@pytest.mark.parametrize("value", ["systemtap=5.6-1; rm -rf /", "systemtap=$(reboot)", "Systemtap=5.6-1",
                                   "systemtap=5.6-1\nRUN evil", "gcc-14 `id`", "systemtap=-1"])
def test_build_arguments_are_package_names(value: str) -> None:
    with pytest.raises(InfraError, match="is not a Debian package name"):
        check_packages(value, "systemtap packages")


def test_index_stanzas_outside_debian_grammar_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    text = ("Package: systemtap\nVersion: 5.6-1\nFilename: pool/main/s/systemtap/systemtap_5.6-1_amd64.deb\n"
            f"SHA256: {'a' * 64}\n\n"
            "Package: evil$(reboot)\nVersion: 1.0\n\n"
            "Package: linux-image-6.1-dbg\nVersion: 1.0 ; rm\n\n"
            "Package: systemtap-runtime\nVersion: 5.6-1\nFilename: ../../etc/passwd\nSHA256: " + "b" * 64 + "\n\n")
    records = parse_index(text, "sid")
    assert [r[0] for r in records] == ["systemtap"]
    assert any("dropped 3 stanza(s)" in r.getMessage() for r in caplog.records)


# --- results files read back (report, diff) ---------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    (b'[{"kernel":', "not a stapmatrix results file (Expecting value"),
    (b"\xff\xfe", "not a stapmatrix results file ('utf-8' codec can't decode"),
    (b'{"a": 1}', "not a stapmatrix results file (not a list of records)"),
    (b'[{"kernel": 1}]', "results.json: record 1: 'kernel' is a number, not a string"),
])
def test_damaged_results_file(tmp_path: Path, content: bytes, expected: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(content)
    assert main(["report", str(path)]) == 2 and expected in capsys.readouterr().err
    assert main(["diff", str(path), str(path)]) == 2
