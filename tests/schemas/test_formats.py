"""Foreign prediction-log formats: KServe's logger, Seldon Core 2, mapped JSON; the
tensors they carry; the re-key and pairing rules; replay over recorded records."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest

from driftline.detectors.pipeline import StagedPipeline
from driftline.detectors.versions.pairing import Pairing
from driftline.schemas import load_schema
from driftline.schemas.decode import REASONS, encode
from driftline.schemas.exceptions import ConfigError, DecodeError
from driftline.schemas.formats import (
    InputSettings,
    RequestPart,
    ResponsePart,
    SeldonTopic,
    SourceRecord,
    correlation_key,
    read_kserve,
    read_mapped,
    read_seldon,
    seldon_pattern,
)
from driftline.schemas.formats.correlation import correlation_id
from driftline.schemas.formats.oip_proto import ModelInferRequest
from driftline.schemas.formats.recorded import record_from_line, record_to_line
from driftline.streams.formats.ingest import ForeignIntake
from driftline.streams.replay import Staged, replay, replay_records
from driftline.streams.simulation.foreign import MAPPING, to_foreign
from tests import ROOT
from tests.streams.worker.test_worker import SMALL

TS = 1_700_000_000_000
KSERVE = InputSettings(format="kserve", features=("age", "income"))
V2_REQUEST = {
    "id": "body-id-differs",
    "inputs": [
        {"name": "input-0", "shape": [2, 2], "datatype": "FP32", "data": [[30, 1.5], [41, 2.5]]}
    ],
}
V2_RESPONSE = {
    "id": "body-id-differs",
    "model_name": "credit",
    "model_version": None,
    "outputs": [{"name": "output-0", "shape": [2], "datatype": "FP32", "data": [0.1, 0.8]}],
}


def kserve_record(
    body: object, kind: str = "request", ce_id: str = "ce-1", **extra: bytes
) -> SourceRecord:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": ce_id.encode(),
        "ce_type": f"org.kubeflow.serving.inference.{kind}".encode(),
        "ce_source": b"http://localhost:9081/",
        "ce_inferenceservicename": b"credit",
        "ce_namespace": b"models",
        "ce_component": b"predictor",
        "ce_endpoint": b"default",
        "ce_metadata": b"{}",
        "ce_time": b"2023-11-14T22:13:20Z",
        "content-type": b"application/json",
        **extra,
    }
    return SourceRecord("logs", 0, 0, TS + 5, orjson.dumps(body), None, headers)


def test_kserve_binary_v2_pairs_into_one_prediction_per_row() -> None:
    """A batched V2 request and its response (V2 body id differing from ce_id, null
    model_version) give one prediction per row, named ``<ce_id>:<row>``, at ce_time, with
    the column names from [input] features and the version from the endpoint."""
    request = read_kserve(kserve_record(V2_REQUEST), KSERVE)
    response = read_kserve(kserve_record(V2_RESPONSE, "response"), KSERVE)
    assert isinstance(request, RequestPart) and isinstance(response, ResponsePart)
    assert request.ts == TS and request.correlation_id == "ce-1"
    pairing = Pairing(60_000, 100)
    assert pairing.add(request, kserve_record(V2_REQUEST)) == ([], [])
    out, problems = pairing.add(response, replace_offset(kserve_record(V2_RESPONSE, "response"), 1))
    assert problems == []
    assert [(p.request_id, dict(p.features), p.prediction, p.model_version) for p in out] == [
        ("ce-1:0", {"age": 30, "income": 1.5}, 0.1, "default"),
        ("ce-1:1", {"age": 41, "income": 2.5}, 0.8, "default"),
    ]


def replace_offset(record: SourceRecord, offset: int) -> SourceRecord:
    return SourceRecord(
        record.topic,
        record.partition,
        offset,
        record.timestamp,
        record.value,
        record.key,
        record.headers,
    )


def test_kserve_structured_mode_and_v1_bodies() -> None:
    """Structured mode (one JSON envelope, data inline or base64) reads like binary mode;
    V1 instances (lists named by [input] features, or objects) and predictions too; the
    canary endpoint gives the canary role."""
    envelope = {
        "specversion": "1.0",
        "id": "ce-2",
        "type": "org.kubeflow.serving.inference.request",
        "inferenceservicename": "credit",
        "endpoint": "canary",
        "time": "2023-11-14T22:13:20Z",
        "data": {"instances": [[30, 1.5]]},
    }
    headers = {"content-type": b"application/cloudevents+json"}
    record = SourceRecord("logs", 0, 0, TS, orjson.dumps(envelope), None, headers)
    part = read_kserve(record, KSERVE)
    assert isinstance(part, RequestPart)
    assert (part.correlation_id, part.role, list(part.rows)) == (
        "ce-2",
        "canary",
        [{"age": 30, "income": 1.5}],
    )
    b64 = {**envelope, "type": "org.kubeflow.serving.inference.response"}
    del b64["data"]
    b64["data_base64"] = base64.b64encode(orjson.dumps({"predictions": [[0.3, 0.7]]})).decode()
    response = read_kserve(SourceRecord("logs", 0, 1, TS, orjson.dumps(b64), None, headers), KSERVE)
    assert isinstance(response, ResponsePart)
    assert response.predictions == [0.7] and response.scores == [{"0": 0.3, "1": 0.7}]
    named = read_kserve(kserve_record({"instances": [{"age": 1, "region": "eu"}]}), KSERVE)
    assert list(named.rows) == [{"age": 1, "region": "eu"}]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (kserve_record(V2_REQUEST, ce_id=""), "missing_correlation_id"),
        (kserve_record(V2_REQUEST, ce_type=b"dev.knative.other"), "schema_violation"),
        (kserve_record(V2_REQUEST, ce_inferenceservicename=b""), "schema_violation"),
        (
            kserve_record(
                {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0]}]}
            ),
            "tensor_mismatch",
        ),
        (
            kserve_record(
                {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": ["a"]}]}
            ),
            "tensor_mismatch",
        ),
        (
            kserve_record(
                {"inputs": [{"name": "x", "shape": [1], "datatype": "COMPLEX", "data": [1]}]}
            ),
            "unknown_datatype",
        ),
        (
            kserve_record(
                {
                    "inputs": [
                        {"name": "img", "shape": [1, 2, 2], "datatype": "FP32", "data": [1] * 4}
                    ]
                }
            ),
            "tensor_mismatch",
        ),
        (kserve_record({"neither": 1}), "schema_violation"),
        (kserve_record(V2_REQUEST, ce_time=b"yesterday"), "bad_timestamp"),
    ],
)
def test_kserve_refuses_what_does_not_read(record: SourceRecord, reason: str) -> None:
    """Each malformed event names its reason (it becomes the dead letter's)."""
    with pytest.raises(DecodeError) as caught:
        read_kserve(record, KSERVE)
    assert caught.value.reason == reason


def test_kserve_truncated_body_is_invalid_json() -> None:
    record = kserve_record(V2_REQUEST)
    cut = SourceRecord("logs", 0, 0, TS, record.value[:25], None, record.headers)
    with pytest.raises(DecodeError, match="invalid_json"):
        read_kserve(cut, KSERVE)


def test_pairing_counts_unanswered_requests_and_dead_letters_orphan_responses() -> None:
    """A request whose response never comes expires and is counted (KServe logs only HTTP
    200 responses); a response whose request never comes is handed back to be
    dead-lettered; a record read twice is recognised; a row-count mismatch is refused."""
    pairing = Pairing(ttl_ms=1_000, max_pending=100)
    src = SourceRecord("logs", 0, 0, TS, b"{}")
    lonely = RequestPart("a", "m", TS, [{"x": 1.0}])
    orphan = ResponsePart("b", "m", "v1", TS, [0.5], [None])
    assert pairing.add(lonely, src) == ([], [])
    assert pairing.add(lonely, src) == ([], [])  # the same record again
    assert pairing.add(orphan, replace_offset(src, 1)) == ([], [])
    later = RequestPart("c", "m", TS + 5_000, [{"x": 2.0}])
    _, given_up = pairing.add(later, replace_offset(src, 2))
    assert [(u.reason, u.record.offset) for u in given_up] == [("response_without_request", 1)]
    assert pairing.counts == {
        "paired": 0,
        "unanswered": 1,
        "unmatched_responses": 1,
        "duplicate_parts": 1,
    }
    _, refused = pairing.add(
        ResponsePart("c", "m", "v1", TS + 5_000, [0.1, 0.2], [None, None]), replace_offset(src, 3)
    )
    assert [u.reason for u in refused] == ["tensor_mismatch"]


def test_pairing_waits_for_every_partition_of_a_source_topic() -> None:
    """Halves from a partition read ahead do not expire the others' before every partition
    has been heard from, and then only by the slowest one's event time."""
    pairing = Pairing(ttl_ms=1_000, max_pending=100)
    ahead = [SourceRecord("logs", 0, i, TS, b"{}", partitions=2) for i in range(3)]
    pairing.add(ResponsePart("r", "m", "v", TS, [0.5], [None]), ahead[0])
    pairing.add(RequestPart("x", "m", TS + 60_000, [{"x": 1.0}]), ahead[1])
    assert pairing.counts["unmatched_responses"] == 0  # partition 1 not heard from yet
    behind = SourceRecord("logs", 1, 0, TS, b"{}", partitions=2)
    out, problems = pairing.add(RequestPart("r", "m", TS, [{"x": 3.0}]), behind)
    assert problems == [] and [p.features["x"] for p in out] == [3.0]


def test_pairing_state_round_trip() -> None:
    """A restored pairing finishes what the checkpointed one had waiting."""
    pairing = Pairing(60_000, 100)
    src = SourceRecord("logs", 0, 0, TS, b"\x00raw", b"k")
    pairing.add(ResponsePart("r", "m", None, TS, ["yes"], [None]), src)
    restored = Pairing(60_000, 100)
    restored.restore(orjson.loads(orjson.dumps(pairing.state())))
    out, _ = restored.add(RequestPart("r", "m", TS, [{"x": 1}]), replace_offset(src, 9))
    assert [(p.prediction, p.model_version) for p in out] == [("yes", "unknown")]
    assert restored.add(RequestPart("r", "m", TS, [{"x": 1}]), replace_offset(src, 9)) == ([], [])


def seldon_record(value: bytes, suffix: str = "inputs", **headers: bytes) -> SourceRecord:
    topic = f"seldon.seldon-mesh.model.iris.{suffix}"
    return SourceRecord(topic, 0, 0, TS, value, b"0.iris.xid", {"x-request-id": b"cq1", **headers})


def test_seldon_protobuf_by_wire_bytes() -> None:
    """A ModelInferRequest written field by field (model_name=1, id=3, inputs=5 with
    name=1, datatype=2, shape=3 packed, contents=5 with fp32_contents=6) reads as the
    protocol defines it; the request id comes from x-request-id, the time from the record."""

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    contents = field(6, struct.pack("<2f", 5.1, 3.5))
    tensor = field(1, b"input-0") + field(2, b"FP32") + field(3, bytes([1, 2])) + field(5, contents)
    raw = field(1, b"iris") + field(3, b"body-id") + field(5, tensor)
    part = read_seldon(seldon_record(raw), InputSettings(format="seldon", features=("sl", "sw")))
    assert isinstance(part, RequestPart)
    assert (part.correlation_id, part.model_id, part.ts) == ("cq1", "iris", TS)
    assert list(part.rows) == [{"sl": pytest.approx(5.1), "sw": 3.5}]


def test_seldon_raw_contents_json_and_refusals() -> None:
    """raw_input_contents (little-endian) and JSON bodies (seldon-infer-type json/...)
    read alike; truncated protobuf, a missing x-request-id and a non-model topic are
    refused with their reasons."""
    settings = InputSettings(format="seldon")
    message = ModelInferRequest(model_name="iris", id="x")
    tensor = message.inputs.add(name="petal", datatype="INT64")
    tensor.shape.extend([2])
    message.raw_input_contents.append(struct.pack("<2q", 4, 7))
    part = read_seldon(seldon_record(message.SerializeToString()), settings)
    assert list(part.rows) == [{"petal": 4}, {"petal": 7}]  # type: ignore[union-attr]
    body = {
        "outputs": [{"name": "o", "shape": [1], "datatype": "BYTES", "data": ["setosa"]}],
        "model_version": "3",
    }
    response = read_seldon(
        seldon_record(
            orjson.dumps(body), "outputs", **{"seldon-infer-type": b"json/inferModelResponse"}
        ),
        settings,
    )
    assert isinstance(response, ResponsePart)
    assert (response.predictions, response.model_version) == (["setosa"], "3")
    with pytest.raises(DecodeError, match="invalid_protobuf"):
        read_seldon(seldon_record(message.SerializeToString()[:-3]), settings)
    no_id = SourceRecord("seldon.ns.model.iris.inputs", 0, 0, TS, b"", None, {})
    with pytest.raises(DecodeError, match="missing_correlation_id"):
        read_seldon(no_id, settings)
    with pytest.raises(DecodeError, match="wrong_topic"):
        read_seldon(SourceRecord("seldon.ns.pipeline.p.inputs", 0, 0, TS, b"", None, {}), settings)


def test_seldon_topics_and_pattern() -> None:
    """Any namespace by default (never assume 'default'), or the ones configured; model
    names may contain dots; pipelines are not model topics."""
    import re  # noqa: PLC0415

    assert SeldonTopic.parse("seldon.seldon-mesh.model.fraud.v2.outputs", "seldon") == SeldonTopic(
        "seldon-mesh", "fraud.v2", False
    )
    every = re.compile(seldon_pattern(InputSettings(format="seldon")))
    assert every.fullmatch("seldon.team-a.model.iris.inputs")
    assert not every.fullmatch("seldon.team-a.pipeline.iris.inputs")
    only = re.compile(seldon_pattern(InputSettings(format="seldon", seldon_namespaces=("prod",))))
    assert only.fullmatch("seldon.prod.model.iris.outputs") and not only.fullmatch(
        "seldon.dev.model.iris.outputs"
    )


def test_mapped_reads_json_pointers() -> None:
    """Each contract field comes from its pointer; defaults fill the rest; a message
    without its request id or inputs is refused naming the pointer."""
    settings = InputSettings(format="mapped", mapping=MAPPING)
    body = {
        "meta": {
            "id": 42,
            "model": {"name": "credit", "version": "7"},
            "time": "2023-11-14T22:13:20Z",
        },
        "inputs": {"age": 30},
        "output": {"score": 0.2},
    }
    p = read_mapped(SourceRecord("logs", 0, 0, TS + 1, orjson.dumps(body)), settings)
    assert (p.request_id, p.event_id, p.model_id, p.model_version, p.ts) == (
        "42",
        "42",
        "credit",
        "7",
        TS,
    )
    del body["meta"]["id"]
    with pytest.raises(DecodeError, match="/meta/id"):
        read_mapped(SourceRecord("logs", 0, 0, TS, orjson.dumps(body)), settings)


def test_input_settings_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="format must be one of"):
        InputSettings(format="kafka-connect")
    with pytest.raises(ConfigError, match=r"needs \[input.mapping\] request_id"):
        InputSettings(format="mapped", mapping={"features": "/x", "prediction": "/y"})
    with pytest.raises(ConfigError, match="JSON pointer"):
        InputSettings(format="mapped", mapping={**MAPPING, "ts": "meta.time"})
    with pytest.raises(ConfigError, match="unknown setting"):
        InputSettings.from_mapping({"formt": "kserve"})


def test_correlation_keys_put_rows_with_their_request() -> None:
    """Requests, responses and every row's outcome share a partitioning key."""
    assert correlation_key("ce-1") == correlation_key("ce-1:0") == correlation_key("ce-1:12")
    assert correlation_key("order:7") == correlation_key("order:7:2")
    outcome = SourceRecord("outcomes", 0, 0, TS, b'{"event_id": "o", "request_id": "ce-1:1", '
                           b'"model_id": "credit", "ts": 1700000000000, "label": 1}')  # fmt: skip
    assert correlation_key(correlation_id(outcome, KSERVE, "outcomes")) == "ce-1"


def test_recorded_records_round_trip() -> None:
    record = SourceRecord("t", 2, 9, TS, b"\xff\x00binary", b"k", {"x-request-id": b"a"})
    assert record_from_line(record_to_line(record), 0) == record
    with pytest.raises(DecodeError, match="topic"):
        record_from_line(b'{"value": "x"}', 0)


@pytest.mark.parametrize("fmt", ["kserve", "seldon", "mapped"])
@pytest.mark.parametrize("partitions", [1, 4])
def test_replay_of_a_foreign_log_gives_the_native_decisions(make_stream, fmt, partitions) -> None:
    """Replay of the same traffic as a KServe, Seldon or mapped log (batched requests,
    unanswered ones, structured and binary, protobuf and JSON) gives the very decisions
    (ids included) that replay of it in driftline's format gives."""
    events = list(
        make_stream(scenario="mean_shift", n_predictions=20_000, change_at=8_000, seed=31)
    )
    traffic = to_foreign(events, fmt, "logs", "outcomes")
    settings = InputSettings(
        format=fmt,
        topics=("logs",),
        features=traffic.features,
        mapping=MAPPING if fmt == "mapped" else {},
    )
    foreign = replay_records(
        [record_to_line(r) for r in traffic.records],
        Staged(StagedPipeline(partitions, SMALL, {}, {})),
        settings,
        "outcomes",
    )
    native = replay(
        [encode(e) for e in traffic.events], Staged(StagedPipeline(partitions, SMALL, {}, {}))
    )
    assert {d.kind for d in native.decisions} >= {"data_drift"}
    assert [d.decision_id for d in foreign.decisions] == [d.decision_id for d in native.decisions]
    assert [d.features for d in foreign.decisions] == [d.features for d in native.decisions]
    assert not foreign.dead_letters
    if fmt != "mapped":
        assert foreign.pairs["paired"] > 15_000 and foreign.pairs["unmatched_responses"] == 0


def test_foreign_intake_reports_where_bad_records_came_from() -> None:
    """Dead letters name the original topic, partition and offset."""
    intake = ForeignIntake(KSERVE, "outcomes", 1 << 20)
    bad = SourceRecord(
        "logs",
        3,
        77,
        TS,
        b"{",
        None,
        {
            "ce_id": b"x",
            "ce_type": b"org.kubeflow.serving.inference.request",
            "ce_inferenceservicename": b"credit",
        },
    )
    read = intake.read([bad])
    assert [(d.reason, d.topic, d.partition, d.offset) for d in read.letters] == [
        ("invalid_json", "logs", 3, 77)
    ]


def test_every_reason_is_in_the_dead_letter_schema() -> None:
    """The schema's reason enum lists exactly the reasons the code can give, and a
    foreign record's dead letter validates against it."""
    import jsonschema  # noqa: PLC0415

    schema = load_schema("deadletter")
    assert schema["properties"]["reason"]["enum"] == list(REASONS)
    intake = ForeignIntake(KSERVE, "outcomes", 1 << 20)
    read = intake.read([kserve_record({"neither": 1})])
    jsonschema.validate(orjson.loads(read.letters[0].to_json(TS)), schema)


def test_items_carry_their_trace_through_the_summaries_wire() -> None:
    """A trace rides as the wire row's last element; rows without one (older workers,
    older checkpoints) decode as before."""
    from driftline.detectors.intake.stage import PREDICTION, Routed, item_from_wire, item_to_wire  # noqa: PLC0415
    from driftline.schemas.records import Prediction  # noqa: PLC0415

    p = Prediction("e", "r", "m", "v", TS, {"x": 1.0}, 0.5)
    traced = Routed(PREDICTION, 3, TS, p, None, "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    row = orjson.loads(orjson.dumps(item_to_wire(traced)))
    assert item_from_wire(row, "m") == traced
    assert item_from_wire(row[:-1], "m").trace is None


def test_decisions_find_the_trace_of_their_triggering_event() -> None:
    """Positions are counted as the model engine counts them (the labels of one outcome
    share one), and the decision's CloudEvent headers carry the trace."""
    from driftline.detectors.decision import Decision  # noqa: PLC0415
    from driftline.detectors.intake.stage import LABEL, PREDICTION, Label, Routed  # noqa: PLC0415
    from driftline.schemas.records import Outcome, Prediction  # noqa: PLC0415
    from driftline.streams.formats.cloudevents import decision_headers  # noqa: PLC0415
    from driftline.streams.worker.worker import _traces_by_position  # noqa: PLC0415

    p = Prediction("e1", "r1", "m", "v", TS, {"x": 1.0}, 0.5)
    o = Outcome("o1", "r1", "m", TS + 1, 1)
    label = Label("v", 0.5, 1, TS, None)
    items = [
        Routed(PREDICTION, 0, TS, p, None, "t-p"),
        Routed(LABEL, 1, TS, o, label, None),
        Routed(LABEL, 2, TS, o, label._replace(model_version="w"), "t-o"),
        Routed(PREDICTION, 3, TS, p, None, "t-last"),
    ]
    assert _traces_by_position(items, 10) == {10: "t-p", 11: "t-o", 12: "t-last"}
    d = Decision("ab" * 16, "alert", "data_drift", "m", "v", "warning", (), {}, {}, {}, TS, 12)
    headers = dict(decision_headers(d, "/driftline/g", "t-last"))
    assert headers["traceparent"] == headers["ce_traceparent"] == b"t-last"
    assert "traceparent" not in dict(decision_headers(d, "/driftline/g"))


def test_the_readme_input_examples_load(tmp_path) -> None:
    """Every TOML example of README 'Input formats' is a configuration that loads."""
    import re  # noqa: PLC0415

    from driftline.streams.config import load_config  # noqa: PLC0415

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Input formats") : readme.index("## Decisions")]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) >= 3
    formats = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"{i}.toml"
        path.write_text(block)
        formats.append(load_config(path).input.format)
    assert {"kserve", "seldon", "mapped"} <= set(formats)
