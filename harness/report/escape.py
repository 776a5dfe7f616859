"""One escaper per output kind, for every field that comes from a record (a test name, a cell
id, a detail, a path): records are input from outside, and what is text in them must stay
text in the terminal, in markdown, in JUnit XML and in HTML.

    terminal     control characters (an ESC starting an OSC 52 clipboard write, a CR that
                 rewrites the line, bidirectional overrides) shown as \\xNN / \\uNNNN
    markdown     no raw HTML, images, links, headings, emphasis or table rows from record
                 text: every character markdown gives a meaning is backslash-escaped, line
                 breaks (\\r included) become spaces; blocks are fenced longer than any run
                 of backticks inside
    xml          characters XML 1.0 does not allow (most C0 controls, U+FFFE, U+FFFF,
                 lone surrogates) replaced by their \\xNN form; the XML writer escapes the rest
    html         Jinja's autoescape (harness/report/html.py) and `href` values that are
                 `./`-relative paths only
"""

from __future__ import annotations

import re
import urllib.parse

# C0 and C1 controls, DEL, and the characters that reorder or hide text on a terminal
# (bidirectional embeddings, overrides and isolates; line and paragraph separators).
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_TERMINAL_UNSAFE_LINE = re.compile(_TERMINAL_UNSAFE.pattern[:-1] + "\n\t]")
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# CommonMark lets any ASCII punctuation be backslash-escaped; these can start markup in the
# middle of a line (record text never starts one: the reports put `| ` or `- ` first):
# emphasis, code spans, links and images, raw HTML and entities, table cells, strikethrough,
# GitHub's math. Dots, dashes and plus signs (kernel names) stay as they are.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#!|~&$])")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u2028\u2029\x0b\x0c\x85]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """Text for a terminal, newlines and tabs kept (a detail of several lines)."""
    return _TERMINAL_UNSAFE.sub(_visible, text)


def terminal_line(text: str) -> str:
    """Text for one line of a terminal: a newline or tab inside is shown as \\x0a, \\x09."""
    return _TERMINAL_UNSAFE_LINE.sub(_visible, text)


def _without_controls(text: str) -> str:
    """Control characters shown as \\xNN, newlines and tabs kept."""
    return _TERMINAL_UNSAFE.sub(_visible, text)


def markdown_inline(text: str) -> str:
    """Record text inside a markdown line or table cell: one line, every markup character
    escaped (GitHub would render raw HTML, images and links from it)."""
    one_line = _LINE_BREAKS.sub(" ", text)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _without_controls(one_line).replace("\t", " "))


def markdown_block(text: str) -> str:
    """A fenced code block of record text: the fence is longer than any backtick run in it,
    and line breaks are normalised (a lone \\r is a line ending to markdown)."""
    body = _without_controls(_LINE_BREAKS.sub("\n", text)).rstrip()
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{body}\n{fence}"


def xml(text: str) -> str:
    return _XML_UNSAFE.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                           else f"\\u{ord(m.group(0)):04x}", text)


def href(relative: str) -> str:
    """A link to a file next to the page: always `./`-relative and percent-encoded, so no
    scheme (`javascript:`), host (`//`) or query can come from a path."""
    return "./" + urllib.parse.quote(relative.lstrip("/"), safe="/")
