"""Feedback-loop worlds for `feedback_quality.py`, written apart from the test simulations
(`streams/simulation/loops.py`): other generators, volumes, cadences and models, each with a warm
period before the loop's onset and matched controls.

* ``dispatch`` — 5 districts with unequal true incident rates, ~360 dispatches an hour,
  ~19 citizen reports an hour (``independent`` outcomes, the reference). The model
  allocates by its estimated rates (a hot-spot exponent of 1.3) and is retrained hourly.
  Before the onset, and in the ``control``, it learns from citizen reports. ``loop``: from
  the onset it learns from the incidents its own patrols discovered (counts, not rates),
  so districts it patrols more look worse. ``ipw``: from its patrols, but as rates per
  patrol (inverse-propensity weighting). ``exogenous``: it learns from reports while
  incidents really double in one district.
* ``feed`` — a catalogue of 300 items with Zipf-like appeal, slates of 8 ranked items,
  1,000 slates an hour, 5 % exploration slates (random, ``exploration: true``), clicks
  with position bias. Retrained hourly. Before the onset, and in the ``control``, the
  scores are click-through rates measured on exploration slates (decayed counts, in steady
  state from the start: a model in production for weeks). ``loop``: from the onset,
  popularity of clicks on its own slates (decayed counts that start where the exploration
  estimates are, so the policy moves gradually from the onset on). ``exogenous``:
  exploration-trained while a few items really surge in appeal.
* ``lending`` — 3 regions, ~6,000 applications a day, labels only for approved loans,
  repayments known a day after approval and defaults two days after (outcome-dependent
  label delays), a new ``model_version`` every day at a daily retrain. Before the onset,
  and in the ``control``, the region rates are estimated from approved loans. ``loop``:
  from the onset, rejected applicants count as bad (reject inference), so a region
  approved less looks worse. ``exploration``: 5 % of applications are approved at random
  (``exploration: true``) and the rates are estimated there (pooled over about two weeks).

Every world returns its events in time order and the onset's event time (the loop
starts there; for a control, where it would have).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from driftline.schemas.records import Event, Outcome, Prediction

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000
"""2026-01-01T00:00Z: the worlds start at midnight, so a daily retrain is at 00:00."""


@dataclass(frozen=True, slots=True)
class World:
    events: list[Event]
    onset_ts: int
    model_id: str


class _Events:
    def __init__(self, model_id: str, seed: int) -> None:
        self.model_id = model_id
        self.seed = seed
        self.rows: list[tuple[int, int, Event]] = []

    def add(self, event: Event) -> None:
        self.rows.append((event.ts, len(self.rows), event))

    def rid(self, n: int) -> str:
        return f"{self.model_id}-{self.seed}-{n}"

    def sorted(self) -> list[Event]:
        self.rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in self.rows]


def dispatch(seed: int, variant: str, hours: int = 96, onset_h: int = 24) -> World:
    rng = np.random.default_rng(10_000 + seed)
    rates = np.array([1.0, 0.9, 1.15, 0.8, 1.05])
    districts = len(rates)
    estimate = rates / rates.sum() * rng.uniform(0.9, 1.1, districts)
    out = _Events("dispatch", seed)
    n = 0
    for h in range(hours):
        now = rates.copy()
        if variant == "exogenous" and h >= onset_h:
            now[2] *= 1.0 + min(1.0, (h - onset_h) / 48.0)  # incidents really double
        share = estimate**1.3 / (estimate**1.3).sum()
        patrols = rng.multinomial(rng.poisson(360), share)
        found = np.zeros(districts)
        for d in range(districts):
            ts = np.sort(rng.integers(0, HOUR, patrols[d])) + T0 + h * HOUR
            hits = rng.uniform(size=patrols[d]) < 0.25 * now[d]
            found[d] = hits.sum()
            for t, hit in zip(ts.tolist(), hits.tolist(), strict=True):
                n += 1
                rid = out.rid(n)
                out.add(
                    Prediction(
                        f"p-{rid}",
                        rid,
                        "dispatch",
                        "v1",
                        t,
                        {"calls_last_hour": float(rng.poisson(20 * now[d]))},
                        round(float(estimate[d]), 5),
                        segment={"district": f"D{d}"},
                        action="dispatch",
                    )
                )
                delay = int(rng.integers(10 * 60_000, 90 * 60_000))
                out.add(Outcome(f"o-{rid}", rid, "dispatch", t + delay, int(hit)))
        reports = rng.poisson(19.0 * now / rates.sum())
        for d in range(districts):
            for t in (np.sort(rng.integers(0, HOUR, reports[d])) + T0 + h * HOUR).tolist():
                n += 1
                rid = out.rid(n)
                out.add(
                    Outcome(
                        f"r-{rid}",
                        rid,
                        "dispatch",
                        t,
                        1,
                        segment={"district": f"D{d}"},
                        independent=True,
                    )
                )
        looping = h + 1 >= onset_h
        if variant == "loop" and looping:
            target = found + 0.5
        elif variant == "ipw" and looping:
            target = (found + 0.5) / (patrols + 2.0)
        else:
            target = reports + 0.5
        rate = 0.05 if variant == "loop" and looping else 0.15
        estimate = (1 - rate) * estimate / estimate.sum() + rate * target / target.sum()
    return World(out.sorted(), T0 + onset_h * HOUR, "dispatch")


def feed(seed: int, variant: str, hours: int = 48, onset_h: int = 12) -> World:
    rng = np.random.default_rng(20_000 + seed)
    items = 300
    appeal = 1.0 / np.arange(1, items + 1) ** 0.6
    appeal = appeal[rng.permutation(items)] * rng.lognormal(0.0, 0.2, items)
    names = [f"sku{i:03d}" for i in range(items)]
    position = 1.0 / (1.0 + np.arange(8)) ** 0.7
    # A model in production for weeks: its exploration estimates are in steady state
    # (decayed counts, half-life about three days), not still being learnt.
    decay = 0.99
    explore_shown = np.full(items, 1_000 * 0.05 * 8 / items / (1 - decay))
    explore_clicks = explore_shown * 0.6 * appeal / appeal.mean() / 8
    score = 1.0 * np.log(explore_clicks / explore_shown * 8.0)
    # Its own slates are 95 % of traffic; their counts decay faster (a popularity model
    # wants recent clicks).
    own_decay = 0.95
    own_shown = explore_shown * 19.0 * (1 - decay) / (1 - own_decay)
    own_clicks = explore_clicks * 19.0 * (1 - decay) / (1 - own_decay)
    out = _Events("feed", seed)
    n = 0
    for h in range(hours):
        taste = appeal.copy()
        if variant == "exogenous" and h >= onset_h:
            surge = min(1.0, (h - onset_h) / 12.0)
            taste[:4] *= 1.0 + 5.0 * surge  # a few items really take off
        weights = np.exp(score - score.max())
        p = weights / weights.sum()
        for t in (np.sort(rng.integers(0, HOUR, rng.poisson(1_000))) + T0 + h * HOUR).tolist():
            exploring = bool(rng.uniform() < 0.05)
            slate = rng.choice(items, 8, replace=False, p=None if exploring else p)
            n += 1
            rid = out.rid(n)
            ranked = tuple(names[i] for i in slate)
            out.add(
                Prediction(
                    f"p-{rid}",
                    rid,
                    "feed",
                    "v1",
                    t,
                    {"session_minutes": float(rng.gamma(2.0, 4.0))},
                    ranked,
                    segment={"platform": "ios" if rng.uniform() < 0.45 else "android"},
                    action=list(ranked),
                    exploration=exploring,
                )
            )
            pull = taste[slate] * position
            clicked = rng.uniform() < 0.6
            label: str | None = None
            if clicked:
                pick = int(slate[rng.choice(8, p=pull / pull.sum())])
                label = names[pick]
                if exploring:
                    explore_clicks[pick] += 1
                else:
                    own_clicks[pick] += 1
            if exploring:
                explore_shown[slate] += 1
            else:
                own_shown[slate] += 1
            delay = int(rng.integers(30_000, 20 * 60_000))
            out.add(Outcome(f"o-{rid}", rid, "feed", t + delay, label))  # type: ignore[arg-type]
        explore_shown *= decay
        explore_clicks *= decay
        own_shown *= own_decay
        own_clicks *= own_decay
        if variant == "loop" and h + 1 >= onset_h:
            # Popularity of clicks on its own slates: what it shows more is clicked more,
            # looks better, and is shown more again.
            score = 1.0 * np.log(own_clicks)
        else:
            score = 1.0 * np.log(explore_clicks / explore_shown * 8.0)
    return World(out.sorted(), T0 + onset_h * HOUR, "feed")


def lending(seed: int, variant: str, days: int = 21, onset_day: int = 4) -> World:
    rng = np.random.default_rng(30_000 + seed)
    regions = ["north", "south", "east"]
    mix = np.array([0.4, 0.35, 0.25])
    default_rate = 0.12
    estimate = default_rate * np.array([1.0, 0.98, 1.04]) * rng.uniform(0.99, 1.01, 3)
    # The exploration lender pools its slice over about two weeks (decayed counts, in
    # steady state from the start): a hundred random approvals a region a day is too
    # few to re-estimate from daily.
    pooled_n = 6_000 * 0.05 * mix * 14.0
    pooled_bad = pooled_n * default_rate
    out = _Events("lending", seed)
    n = 0
    for day in range(days):
        version = f"d{day:02d}"
        tally = np.zeros((3, 4))  # applications, approved, defaults seen, explored bad
        explored = np.zeros(3)
        count = rng.poisson(6_000)
        times = np.sort(rng.integers(0, DAY, count)) + T0 + day * DAY
        region = rng.choice(3, count, p=mix)
        quality = rng.normal(0.0, 1.0, count)
        for t, r, q in zip(times.tolist(), region.tolist(), quality.tolist(), strict=True):
            risk = 1.0 / (1.0 + np.exp(-(np.log(estimate[r] / (1 - estimate[r])) - 0.8 * q)))
            exploring = variant == "exploration" and rng.uniform() < 0.05
            approve = exploring or risk < 0.125
            true_risk = 1.0 / (1.0 + np.exp(-(np.log(default_rate / (1 - default_rate)) - 0.8 * q)))
            n += 1
            rid = out.rid(n)
            out.add(
                Prediction(
                    f"p-{rid}",
                    rid,
                    "lending",
                    version,
                    t,
                    {"income_k": round(float(40 + 12 * q + rng.normal(0, 5)), 1)},
                    round(float(risk), 5),
                    segment={"region": regions[r]},
                    action="approve" if approve else "decline",
                    exploration=exploring,
                )
            )
            tally[r, 0] += 1
            if not approve:
                continue
            tally[r, 1] += 1
            bad = bool(rng.uniform() < true_risk)
            # Repayments are known at the due date, defaults after a day of grace.
            delay = int((1.0 if not bad else 2.0) * DAY + rng.integers(0, 6 * HOUR))
            out.add(Outcome(f"o-{rid}", rid, "lending", t + delay, int(bad)))
            tally[r, 2] += bad
            if exploring:
                explored[r] += 1
                tally[r, 3] += bad
        # The daily retrain (the labels are taken as the day's outcomes, for simplicity).
        if variant == "loop" and day + 1 >= onset_day:
            rejected = tally[:, 0] - tally[:, 1]
            fresh = (tally[:, 2] + rejected) / np.maximum(tally[:, 0], 1)
            fresh = default_rate * (1.0 + 2.0 * (fresh - fresh.mean()) / max(fresh.mean(), 1e-9))
        elif variant == "exploration":
            pooled_n = 0.93 * pooled_n + explored
            pooled_bad = 0.93 * pooled_bad + tally[:, 3]
            fresh = pooled_bad / pooled_n
        else:
            fresh = (tally[:, 2] + 1.0) / (tally[:, 1] + 8.0)
        estimate = np.clip(0.7 * estimate + 0.3 * fresh, 0.02, 0.6)
    return World(out.sorted(), T0 + onset_day * DAY, "lending")


WORLDS: dict[str, tuple[Callable[[int, str], World], tuple[str, ...], str]] = {
    "dispatch": (dispatch, ("control", "ipw", "exogenous"), "loop"),
    "feed": (feed, ("control", "exogenous"), "loop"),
    "lending": (lending, ("control", "exploration"), "loop"),
}
"""World -> (generator, control variants, loop variant)."""
