"""Another commit of this repository as files, for benchmarks that run it beside this tree."""

from __future__ import annotations

import subprocess


def unpack(rev: str, into: str) -> str:
    """Commit ``rev`` as files under ``into``; one line and exit when git cannot read it."""
    try:
        tree = subprocess.run(
            ["git", "archive", "--format=tar", rev], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--against {rev}: git archive failed ({exc})") from None
    subprocess.run(["tar", "-x", "-C", into], input=tree, check=True)
    return into
