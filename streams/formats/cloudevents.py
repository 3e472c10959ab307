"""Decisions as CloudEvents 1.0 in binary content mode (the Kafka protocol binding).

The message value stays driftline's decision JSON (the contract in ``schemas/``); the
CloudEvents attributes travel as ``ce_*`` headers, and ``datacontenttype`` as
``content-type``, so a consumer that speaks CloudEvents (Knative, Argo Events, an event
router) reads the decisions without a translator, and one that does not sees the same
JSON as before.

>>> from driftline.detectors.decision import Decision
>>> d = Decision("ab" * 16, "alert", "data_drift", "credit-risk", "v1", "critical", ("x0",),
...              {}, {}, {}, 1_767_225_600_000, 7, "Look at x0.")
>>> dict(decision_headers(d, "/driftline/prod"))["ce_type"]
b'io.driftline.alert.data_drift'
"""

from __future__ import annotations

from datetime import UTC, datetime

from driftline.detectors.decision import Decision

SPEC_VERSION = b"1.0"
TYPE_PREFIX = "io.driftline"
"""Reverse-DNS prefix of the event types: ``io.driftline.<type>.<kind>``."""
CONTENT_TYPE = b"application/json"


def decision_headers(
    decision: Decision, source: str, traceparent: str | None = None
) -> list[tuple[str, bytes]]:
    """The binary-mode CloudEvents headers of one decision: ``ce_id`` is the decision id
    (a re-sent decision is the same event), ``ce_time`` the event time of the decision
    (when the evidence was complete, not when it was sent), ``ce_subject`` the model.
    With the triggering request's W3C ``traceparent``, it is carried as ``traceparent``
    (Kafka instrumentations) and ``ce_traceparent`` (the CloudEvents distributed-tracing
    extension), so the decision joins the request's trace."""
    when = datetime.fromtimestamp(decision.ts / 1000, tz=UTC)
    headers = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", decision.decision_id.encode()),
        ("ce_type", f"{TYPE_PREFIX}.{decision.type}.{decision.kind}".encode()),
        ("ce_source", source.encode()),
        ("ce_subject", decision.model_id.encode()),
        ("ce_time", when.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
        ("content-type", CONTENT_TYPE),
    ]
    if traceparent:
        headers += [
            ("traceparent", traceparent.encode()),
            ("ce_traceparent", traceparent.encode()),
        ]
    return headers


def source_of(group_id: str) -> str:
    """The ``ce_source`` of a worker group's decisions (a URI reference)."""
    return f"/driftline/{group_id}"
