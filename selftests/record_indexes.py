"""Record the package indexes the planning selftests read (selftests/data/indexes/): for each
suite, the stanzas of the archive's signed Packages index (fetched and verified the way the
harness does it, harness/archive.py) that planning looks at: amd64 kernel packages (image,
signed and -unsigned, -dbg, headers, kbuild, compiler wrappers, the 7.x binary, modules and
base packages, and the metapackages), the gcc packages a base offers, and systemtap. Of each
stanza only the fields harness/archive.py parses are kept.

    python -m selftests.record_indexes     # then commit selftests/data/indexes/

The recorded files never change on their own: a test that plans from them (Archive(recorded=
...)) says the same next month, whatever Debian's point releases and security updates do.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from harness.archive import _download_index
from harness.suites import SUITES

DIRECTORY = Path(__file__).resolve().parent / "data" / "indexes"
KEPT_FIELDS = ("Package", "Version", "Provides", "Depends", "Size", "Filename", "SHA256")
WANTED = re.compile(
    r"^(linux-(image|headers|binary|modules|base)-[0-9][0-9a-z.+~-]*?-(amd64|common)(-unsigned|-dbg)?"
    r"|linux-image-amd64(-dbg)?|linux-image-(rt|cloud)-amd64-dbg|linux-headers-amd64"
    r"|linux-kbuild-[0-9][0-9a-z.+~-]*|linux-compiler-gcc-[0-9]+-x86"
    r"|gcc-1[0-9](-for-host|-x86-64-linux-gnu)?|systemtap(-runtime|-common)?)$")


def trimmed(stanza: str) -> str:
    kept = [line for line in stanza.splitlines() if line.split(":", 1)[0] in KEPT_FIELDS]
    return "\n".join(kept)


def record(directory: Path = DIRECTORY) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for suite in SUITES:
        text = _download_index(suite).decode("utf-8", "replace")
        stanzas = [trimmed(s) for s in text.split("\n\n")
                   if s.startswith("Package: ") and WANTED.match(s[9:].split("\n", 1)[0])]
        (directory / f"{suite.name}.Packages").write_text("\n\n".join(stanzas) + "\n")
        print(f"{suite.name}: {len(stanzas)} stanzas")
    (directory / "RECORDED").write_text(time.strftime("%Y-%m-%d %H:%M UTC\n", time.gmtime()))


if __name__ == "__main__":
    record()
