"""`driftline demo` on a bare machine: shows decisions, exits cleanly, leaves no process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def running_brokers(port: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tansu" in text and f"127.0.0.1:{port}" in text:
            found.append(text)
    return found


def test_demo_shows_drift_and_leaves_nothing_behind() -> None:
    """A short demo prints the injected drifts, the canary rollback and the feedback loop,
    and stops its broker."""
    exe = Path(sys.executable).parent / "driftline"
    result = subprocess.run(
        [str(exe), "demo", "--duration", "30", "--rate", "4000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"ALERT\s+data_drift\s+credit-risk@v1\s+features: x0", out), out
    assert re.search(r"ALERT\s+concept_drift\s+fraud-score@v1", out), out
    assert re.search(r"ROLLBACK\s+canary_regression\s+pricing@v2.*back from v2 to v1", out), out
    assert re.search(r"ALERT\s+feedback_loop\s+patrol-allocation@v1", out), out
    assert "churn" not in out.split("scenes:")[1].split("\n", 1)[1]
    port = re.search(r"broker on 127\.0\.0\.1:(\d+)", out).group(1)
    assert running_brokers(port) == []
