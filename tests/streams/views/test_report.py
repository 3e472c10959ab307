"""`driftline report`: the HTML holds the decisions, and a real browser shows them."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from driftline.streams.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""As the machine notes say: without the background-networking flags Chromium tries
Google's hosts at every start and this closed network refuses them."""


class Marks(HTMLParser):
    """The report's chart elements and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[dict[str, str | None]] = []
        self.intervals: list[dict[str, str | None]] = []
        self.series: list[dict[str, str | None]] = []
        self.distributions: list[dict[str, str | None]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "circle" and "data-decision-id" in a:
            self.marks.append(a)
        if tag == "g" and a.get("class") == "interval":
            self.intervals.append(a)
        if tag == "polyline" and "data-samples" in a:
            self.series.append(a)
        if tag == "svg" and a.get("class") == "distribution":
            self.distributions.append(a)
        for name in ("src", "href"):
            value = a.get(name) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A replay of a mean shift with a bad canary, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    stream, decisions, page = tmp / "s.jsonl", tmp / "d.jsonl", tmp / "r.html"
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "mean_shift",
                "--predictions",
                "60000",
                "--canary-share",
                "0.1",
                "--canary-flip",
                "0.12",
                "--out",
                str(stream),
            ]
        )
        == 0
    )
    args = ["replay", str(stream), "--quiet", "--out", str(decisions), "--report", str(page)]
    assert main(args) == 0
    found = [orjson.loads(line) for line in decisions.read_bytes().splitlines()]
    return page, found


def test_the_report_holds_one_mark_per_decision_and_nothing_external(report) -> None:
    """Every decision has a timeline mark with its id, kind and time; the canary's
    rollback has its interval drawn; the drift statistics are drawn over the replay and
    the drifted feature's histogram against its reference; the page references nothing
    outside itself."""
    page, decisions = report
    parsed = Marks()
    parsed.feed(page.read_text())
    assert sorted(m["data-decision-id"] for m in parsed.marks) == sorted(
        d["decision_id"] for d in decisions
    )
    by_id = {d["decision_id"]: d for d in decisions}
    for mark in parsed.marks:
        d = by_id[mark["data-decision-id"]]
        assert (mark["data-kind"], mark["data-type"], int(mark["data-ts"])) == (
            d["kind"],
            d["type"],
            d["ts"],
        )
    rollback = next(d for d in decisions if d["type"] == "rollback")
    drawn = {i["data-decision-id"]: i for i in parsed.intervals}
    low, high = rollback["evidence"]["confidence_interval"]
    assert float(drawn[rollback["decision_id"]]["data-low"]) == low
    assert float(drawn[rollback["decision_id"]]["data-high"]) == high
    # The replay's drift statistics over event time, one series per kind, and the
    # drifted feature's reference vs current histogram.
    assert {s["data-kind"] for s in parsed.series} >= {"data_drift", "concept_drift"}
    assert all(int(s["data-samples"]) > 10 for s in parsed.series)
    assert "x0" in {d["data-feature"] for d in parsed.distributions}
    assert parsed.external == []


def test_report_from_a_decisions_file_equals_the_replay_report(report, tmp_path) -> None:
    """`driftline report` on the decisions file draws the same marks (a decisions file
    has no drift statistics over time: those come with `replay --report`)."""
    page, _ = report
    again = tmp_path / "again.html"
    source = page.parent / "d.jsonl"
    assert main(["report", str(source), "--out", str(again)]) == 0
    first, second = Marks(), Marks()
    first.feed(page.read_text())
    second.feed(again.read_text())
    assert first.marks == second.marks


def test_a_file_of_events_is_refused_in_one_line(tmp_path, capsys) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "prediction", "event_id": "e"}\n')
    assert main(["report", str(events), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a driftline decision" in err


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); the report's "
    "content is still checked without a browser",
)
def test_the_report_renders_in_chromium_and_a_mark_opens_its_evidence(report, tmp_path) -> None:
    """Headless Chromium: the page draws one visible mark per decision, the embedded data
    matches them, and clicking the rollback's mark opens its evidence; a screenshot is
    saved beside the report."""
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file, decisions = report
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_file.as_uri())
            marks = page.locator("circle[data-decision-id]")
            assert marks.count() == len(decisions)
            assert all(
                box is not None
                for box in (marks.nth(i).bounding_box() for i in range(marks.count()))
            )
            embedded = page.evaluate(
                "JSON.parse(document.getElementById('driftline-decisions').textContent)"
            )
            assert sorted(d["decision_id"] for d in embedded) == sorted(
                d["decision_id"] for d in decisions
            )
            rollback = next(d for d in decisions if d["type"] == "rollback")
            details = page.locator(f"#d-{rollback['decision_id']}")
            assert details.get_attribute("open") is None
            page.locator(f"circle[data-decision-id='{rollback['decision_id']}']").click()
            page.wait_for_function(f"document.getElementById('d-{rollback['decision_id']}').open")
            assert "confidence_interval" in details.inner_text()
            shot = page_file.parent / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium)",
)
async def test_the_live_view_shows_the_worker_as_it_runs(broker, make_stream, tmp_path) -> None:
    """A worker with --ui-port on the embedded broker, fed a mean shift and an equal
    canary: in headless Chromium the live page shows records processed, a drift series
    per kind with its samples and the alarm line, the drifted feature's reference vs
    current histogram, the running canary comparison with its interval, one mark per
    published decision, and a mark's evidence opens on click and stays open across a
    refresh; a screenshot is saved."""
    import asyncio  # noqa: PLC0415

    async_api = pytest.importorskip("playwright.async_api")
    from driftline.streams.broker import free_port  # noqa: PLC0415
    from driftline.streams.worker import Worker, WorkerSettings  # noqa: PLC0415
    from tests.kafka_helpers import (  # noqa: PLC0415
        TEST_WORKER,
        config_for,
        decisions,
        kafka,
        produce,
        setup_topics,
        topics_for,
        wait_committed,
    )
    from tests.streams.worker.test_worker import SMALL  # noqa: PLC0415

    topics = topics_for("live")
    await setup_topics(broker, topics, 1)
    from driftline.streams.simulation.traffic import with_canary  # noqa: PLC0415

    base = make_stream(scenario="mean_shift", n_predictions=20_000, change_at=8_000, seed=31)
    events = with_canary(list(base), 0.10, 0.0, seed=31)  # an equal canary: still running
    total = sum((await produce(broker, topics, events)).values())
    port = free_port()
    settings = WorkerSettings(group_id="g-live", ui_port=port, **TEST_WORKER)
    worker = Worker(config_for(topics, SMALL), kafka(broker), settings)
    task = asyncio.create_task(worker.run())
    try:
        await wait_committed(broker, "g-live", topics, 1, total, tasks=[task], workers=[worker])
        await asyncio.sleep(2.5)  # a gauge refresh and a page poll after the last batch
        published = await decisions(broker, topics)
        assert published
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(f"http://127.0.0.1:{port}/")
                status = page.locator("p.status")
                assert int(await status.get_attribute("data-processed")) == total
                series = page.locator("polyline.series")
                assert await series.count() >= 2
                for i in range(await series.count()):
                    assert int(await series.nth(i).get_attribute("data-samples")) >= 2
                assert await page.locator("line.threshold").count() >= 1
                # Per version: the stable version has its series and labels (the canary,
                # 2,000 predictions, is still in its warm-up: counted, not yet judged).
                versions = page.locator("svg.scores")
                shown_versions = {
                    await versions.nth(i).get_attribute("data-model-version")
                    for i in range(await versions.count())
                }
                assert shown_versions == {"v1"}
                stable = page.locator("tr[data-model-version='v1']")
                assert int(await stable.get_attribute("data-labelled")) > 0
                canary_row = page.locator("tr[data-model-version='v2']")
                assert int(await canary_row.get_attribute("data-predictions")) > 1_000
                # The drifted feature's reference vs current histogram (the mean shift
                # is on x0: its current shares are not the reference's).
                drifted = page.locator("svg.distribution[data-feature='x0']")
                assert await drifted.count() >= 1
                ref = drifted.first.locator("rect.ref-bar")
                cur = drifted.first.locator("rect.cur-bar")
                assert await ref.count() == await cur.count() > 1
                ref_shares = [
                    float(await ref.nth(i).get_attribute("data-share"))
                    for i in range(await ref.count())
                ]
                cur_shares = [
                    float(await cur.nth(i).get_attribute("data-share"))
                    for i in range(await cur.count())
                ]
                assert abs(sum(cur_shares) - 1) < 0.01
                # The running canary comparison, its interval around its difference.
                canary = page.locator("g.canary[data-canary='v2']")
                assert await canary.count() >= 1
                for i in range(await canary.count()):
                    g = canary.nth(i)
                    low, diff, high = [
                        float(await g.get_attribute(f"data-{name}"))
                        for name in ("low", "difference", "high")
                    ]
                    assert low <= diff <= high and int(await g.get_attribute("data-n")) > 0
                assert sum(abs(a - b) for a, b in zip(ref_shares, cur_shares, strict=True)) > 0.1
                marks = page.locator("circle[data-decision-id]")
                assert sorted(
                    [
                        await marks.nth(i).get_attribute("data-decision-id")
                        for i in range(await marks.count())
                    ]
                ) == sorted(d["decision_id"] for d in published)
                first = published[0]["decision_id"]
                await page.locator(f"circle[data-decision-id='{first}']").click()
                await page.wait_for_function(f"document.getElementById('d-{first}').open")
                await page.wait_for_timeout(2_500)  # one refresh: the evidence stays open
                assert await page.evaluate(f"document.getElementById('d-{first}').open")
                await page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
                assert (tmp_path / "live.png").stat().st_size > 10_000
            finally:
                await browser.close()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


def test_the_live_view_draws_allocation_shares_of_a_feedback_loop() -> None:
    """After the policing loop, the live fragment has one share series per district, and
    the last point of each is that district's share of the last closed bucket."""
    from driftline.detectors.engine import Engine  # noqa: PLC0415
    from driftline.streams.simulation.loops import simulate  # noqa: PLC0415
    from driftline.streams.views.live import LiveView  # noqa: PLC0415
    from tests.conftest import run_engine  # noqa: PLC0415

    engine = Engine()
    run_engine(simulate("policing_loop", 0), engine=engine)
    monitor = engine.loops["patrol-allocation"]
    view = LiveView()
    view.sample({}, {"processed": 1}, {"patrol-allocation": monitor.history})
    html = view.fragment()
    last = monitor.history[-1].acted
    total = sum(last.values())
    for key, n in last.items():
        name = key.replace("\x1e", "=")
        assert f'data-segment="{name}" data-last="{n / total:.4f}"' in html
