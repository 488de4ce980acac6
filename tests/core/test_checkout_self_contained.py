"""Every file a test or a benchmark reads is in the checkout (issue #15).

A clone that does not sit beside the project's `shared` folder must pass: paths are built from
`__file__` and must stay inside the repository, and no absolute path into a workspace appears.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARENTS = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")
# Places outside the checkout that a test has no business reading (system binaries and the
# caches ./dev builds, such as /var/cache/hub-test, are allowed).
FORBIDDEN = ("shared/data", "esc-captures", "/work/")


def _sources() -> list[Path]:
    files = [*REPO.joinpath("tests").rglob("*.py"), *REPO.joinpath("bench").rglob("*.py")]
    return [f for f in files if f.resolve() != Path(__file__).resolve()]


def test_paths_from_file_stay_in_the_checkout() -> None:
    escaping = []
    for source in _sources():
        for match in PARENTS.finditer(source.read_text(encoding="utf-8")):
            target = source.resolve().parents[int(match.group(1))]
            if not target.is_relative_to(REPO):
                escaping.append(
                    f"{source.relative_to(REPO)}: parents[{match.group(1)}] is {target}"
                )
    assert not escaping, "paths that leave the checkout:\n" + "\n".join(escaping)


def test_no_path_into_the_workspace() -> None:
    found = [
        f"{source.relative_to(REPO)}: {word!r}"
        for source in _sources()
        for word in FORBIDDEN
        if word in source.read_text(encoding="utf-8")
    ]
    assert not found, "paths outside the checkout:\n" + "\n".join(found)


def test_the_real_captures_are_in_the_checkout() -> None:
    data = REPO / "tests" / "data"
    readme = (data / "README.md").read_text(encoding="utf-8")
    for name in ("hobbywing-platinum-v4.csv", "hobbywing-platinum-pro-v3.csv"):
        assert (data / name).stat().st_size > 100_000
        assert name in readme
    assert "GPL-3.0" in readme and "ArduPilot" in readme
