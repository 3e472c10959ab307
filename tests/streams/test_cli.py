"""The driftline command line: replay, reference build, simulate, and its errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from driftline.streams.cli import main


def simulate(tmp_path: Path, scenario: str = "mean_shift", n: int = 30_000) -> Path:
    out = tmp_path / "stream.jsonl"
    assert (
        main(
            [
                "simulate",
                "--scenario",
                scenario,
                "--predictions",
                str(n),
                "--change-at",
                str(n // 2),
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_replay_writes_decisions_dead_letters_and_a_summary(tmp_path, capsys) -> None:
    """Replay decides, dead-letters bad lines with reasons, and accounts for every line."""
    stream = simulate(tmp_path)
    good = stream.read_bytes().count(b"\n")
    with stream.open("ab") as fh:
        fh.write(b"not json\n")
        fh.write(b'{"type": "prediction", "event_id": "x"}\n')
        fh.write(
            b'{"type": "outcome", "event_id": "o", "request_id": "r", "model_id": "m", '
            b'"ts": 5, "label": 1}\n'
        )
    out, dead = tmp_path / "decisions.jsonl", tmp_path / "dead.jsonl"
    code = main(["replay", str(stream), "--out", str(out), "--dead-letters", str(dead)])
    assert code == 0
    decisions = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(d["type"], d["kind"], d["features"][0]) for d in decisions][:1] == [
        ("alert", "data_drift", "x0")
    ]
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [letter["reason"] for letter in letters] == [
        "invalid_json",
        "schema_violation",
        "bad_timestamp",
    ]
    assert [letter["source"]["offset"] for letter in letters] == [good, good + 1, good + 2]
    rows = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in capsys.readouterr().err.splitlines()
    )
    count = {k: int(v.replace(",", "")) for k, v in rows.items() if v.replace(",", "").isdigit()}
    assert count["lines read"] == good + 3
    assert count["invalid_json"] == 1
    # The simulator's label delays do not depend on the outcome: no label waits.
    assert count["labels still maturing"] == 0
    # Nothing is lost: every line is processed, a duplicate, or dead-lettered.
    assert (
        count["predictions"]
        + count["outcomes"]
        + count["duplicates dropped"]
        + count["dead letters"]
        == count["lines read"]
    )


def test_replay_is_deterministic(tmp_path) -> None:
    """Two replays of one file give the same decision ids."""
    stream = simulate(tmp_path, "categorical")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        main(["replay", str(stream), "--out", str(out)])
        runs.append([orjson.loads(line)["decision_id"] for line in out.read_bytes().splitlines()])
    assert runs[0] == runs[1]
    assert runs[0]


def test_reference_build_then_replay_against_it(tmp_path, capsys) -> None:
    """A profile built from training data is used by replay as the reference."""
    train = simulate(tmp_path, "stationary", 12_000)
    profile = tmp_path / "profile.json"
    assert (
        main(["reference", "build", str(train), "--out", str(profile), "--model-id", "credit-risk"])
        == 0
    )
    assert "offline error rate" in capsys.readouterr().err
    live = tmp_path / "live.jsonl"
    main(
        [
            "simulate",
            "--scenario",
            "mean_shift",
            "--predictions",
            "20000",
            "--change-at",
            "5000",
            "--seed",
            "4",
            "--out",
            str(live),
        ]
    )
    out = tmp_path / "d.jsonl"
    assert main(["replay", str(live), "--reference", str(profile), "--out", str(out)]) == 0
    first = orjson.loads(out.read_bytes().splitlines()[0])
    # The shift starts 5,000 predictions after go-live, inside skew_horizon_events: against
    # an offline profile that is training-serving skew.
    assert (first["kind"], first["evidence"]["reference"], first["evidence"]["comparison"]) == (
        "online_offline_gap",
        "profile:stream",
        "training_serving_skew",
    )


def test_user_errors_are_one_clear_line(tmp_path, capsys) -> None:
    """Missing files and bad configuration exit 2 with a message, no traceback."""
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    stream = simulate(tmp_path, "stationary", 200)
    config = tmp_path / "c.toml"
    config.write_text("[detectors]\nwarmup_event = 5\n")
    assert main(["replay", str(stream), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown detector setting(s): warmup_event" in err
    config.write_text("[detectors]\nwindow_events = -1\n")
    assert main(["replay", str(stream), "--config", str(config)]) == 2
    assert "window_events must be positive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "s.jsonl", "--partitions", "0"], "--partitions: 0 is not a whole number of 1"),
        (["simulate", "--predictions", "-5", "--out", "x"], "--predictions: -5 is not a whole"),
        (["simulate", "--change-at", "x", "--out", "x"], "--change-at: 'x' is not a whole"),
        (["worker", "--ui-port", "70000"], r"--ui-port: 70000 is not a port number \(1-65535\)"),
        (["demo", "--duration", "0"], "--duration: 0 is not a number of seconds above 0"),
        (["topics", "create", "--partitions", "-1"], "--partitions: -1 is not a whole number"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error(args, message, capsys) -> None:
    """Counts, durations and ports are checked as the command line is read (exit 2, one
    line naming the flag); before, they failed deep inside as tracebacks (a KeyError for
    zero partitions, numpy's negative dimensions for a negative count)."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert re.search(message, capsys.readouterr().err.splitlines()[-1])


def test_files_that_cannot_be_read_or_written_are_one_line(tmp_path, capsys) -> None:
    """A directory given as the stream, an output in a folder that does not exist, a
    canary flip that is not a share: exit 2 with one line, no traceback."""
    assert main(["replay", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"driftline: error: Is a directory: {tmp_path}\n"
    stream = simulate(tmp_path, "stationary", 200)
    missing = tmp_path / "no" / "d.jsonl"
    assert main(["replay", str(stream), "--quiet", "--out", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"driftline: error: No such file or directory: {missing}\n"
    out = str(tmp_path / "x.jsonl")
    assert main(["simulate", "--canary-share", "0.1", "--canary-flip", "2", "--out", out]) == 2
    assert "--canary-flip must be in [0, 1], got 2.0" in capsys.readouterr().err


def test_installed_entry_point_runs(tmp_path) -> None:
    """The `driftline` console script is installed and answers --help."""
    exe = Path(sys.executable).parent / "driftline"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "replay" in result.stdout


def test_replay_rolls_back_a_simulated_canary(tmp_path) -> None:
    """Through the command line: a simulated 5-point-worse canary on 10 % of traffic is
    rolled back in replay, with the evidence on the line."""
    stream = tmp_path / "canary.jsonl"
    args = ["simulate", "--scenario", "stationary", "--predictions", "120000"]
    args += ["--change-at", "120000", "--seed", "71", "--canary-share", "0.1"]
    assert main([*args, "--out", str(stream)]) == 0
    out = tmp_path / "d.jsonl"
    assert main(["replay", str(stream), "--out", str(out)]) == 0
    rollbacks = [
        d for d in map(orjson.loads, out.read_bytes().splitlines()) if d["type"] == "rollback"
    ]
    assert [(d["kind"], d["from_version"], d["to_version"]) for d in rollbacks] == [
        ("canary_regression", "v2", "v1")
    ]
    assert rollbacks[0]["evidence"]["confidence_interval"][0] > 0


def test_replay_flags_a_simulated_feedback_loop(tmp_path) -> None:
    """Through the command line: the recommender loop simulation is flagged; its control
    is not."""
    for name, expected in (("recommender_loop", 1), ("recommender_control", 0)):
        stream = tmp_path / f"{name}.jsonl"
        assert main(["simulate", "--feedback-sim", name, "--seed", "2", "--out", str(stream)]) == 0
        out = tmp_path / f"{name}.decisions.jsonl"
        assert main(["replay", str(stream), "--out", str(out)]) == 0
        found = [
            d
            for d in map(orjson.loads, out.read_bytes().splitlines())
            if d["kind"] == "feedback_loop"
        ]
        assert len(found) == expected, name


def test_bad_canary_share_is_refused(tmp_path, capsys) -> None:
    assert main(["simulate", "--canary-share", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert "--canary-share must be in (0, 1)" in capsys.readouterr().err


def test_simulate_and_replay_a_kserve_log(tmp_path, capsys) -> None:
    """`simulate --input-format kserve` writes recorded logger events and prints the
    features line; `replay --input-format kserve` with it finds the injected shift, and
    reports pairing in its summary; a bad [input] setting is one line."""
    records = tmp_path / "k.jsonl"
    args = ["simulate", "--predictions", "20000", "--change-at", "8000", "--seed", "3"]
    assert main([*args, "--input-format", "kserve", "--out", str(records)]) == 0
    features_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert features_line.startswith("features = [")
    config = tmp_path / "k.toml"
    config.write_text("[input]\n" + features_line.split("  #")[0] + "\n")
    out = tmp_path / "d.jsonl"
    argv = ["replay", str(records), "--config", str(config), "--out", str(out)]
    assert main([*argv, "--input-format", "kserve"]) == 0
    found = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert any(d["kind"] == "data_drift" and d["features"] == ["x0"] for d in found)
    assert "pairs paired" in capsys.readouterr().err
    config.write_text('[input]\nformat = "kserve"\nfeatures = "x0"\npair_ttl_ms = -1\n')
    assert main(["replay", str(records), "--config", str(config)]) == 2
    assert "pair_ttl_ms" in capsys.readouterr().err
