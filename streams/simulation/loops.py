"""Seeded simulations of feedback loops and their controls (tests, demo, benchmarks).

Each simulation runs for ``buckets`` event-time hours (the default ``feedback_bucket_ms``)
and returns the events in arrival order:

* `policing` — patrols allocated over districts with equal true incident rates. Loop:
  the model allocates by incidents *discovered by its own patrols* (superlinearly, as
  hot-spot policing does), so allocation runs away to one district. Control: it allocates
  by citizen reports (observed independently of patrols). Exogenous control: the same, with
  a real rise of incidents in one district. Citizen reports are published as
  ``independent`` outcomes in every variant: the reference.
* `recommender` — ranked lists of items. Loop: recommendations follow past clicks on the
  model's own recommendations (popularity feeds itself); a 10 % exploration slice shows
  random items. Control: random recommendations. Exogenous control: recommendations follow
  clicks on exploration traffic while user taste really concentrates on a few items.
* `credit` — approvals in two regions with equal default rates; outcomes are observed only
  for approved applicants. Loop: the lender treats denied applicants as bad (reject
  inference), so the region approved slightly less gets ever fewer approvals. Controls:
  outcomes observed for everyone, and a model that is not retrained.
* `daily_credit` — the same kind of loop moving once a day at a daily retrain (a new
  version each day), over days rather than hours. Control: the same model every day.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from driftline.schemas.records import ActionValue, Event, Outcome, Prediction

HOUR_MS = 3_600_000
INCIDENT_RATE = 0.2 / 3.0
"""Chance that a patrol finds an incident where the true rate is 1 (the model's score is
this, give or take 20 %: the score is not what drives the loop, the allocation is)."""
TS0_MS = 1_700_000_000_000


class _Stream:
    """Collects events with their event times and returns them in time order."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.rows: list[tuple[int, int, Event]] = []
        self.n = 0

    def predict(
        self,
        ts: int,
        prediction: float | str | tuple[str, ...],
        segment: dict[str, str],
        action: ActionValue | list[str],
        features: dict[str, float],
        exploration: bool = False,
        version: str = "v1",
    ) -> str:
        self.n += 1
        rid = f"{self.name}-{self.seed}-{self.n}"
        self.rows.append(
            (
                ts,
                self.n,
                Prediction(
                    f"p-{rid}",
                    rid,
                    self.name,
                    version,
                    ts,
                    features,
                    prediction,
                    segment=segment,
                    # A list as it stands in a server's JSON (decoding makes it a
                    # tuple): the engine takes either.
                    action=action,  # type: ignore[arg-type]
                    exploration=exploration,
                ),
            )
        )
        return rid

    def outcome(
        self,
        ts: int,
        rid: str,
        label: object,
        segment: dict[str, str] | None = None,
        independent: bool = False,
    ) -> None:
        self.n += 1
        self.rows.append(
            (
                ts,
                self.n,
                Outcome(
                    f"o-{rid}" if not independent else f"o-{self.name}-{self.seed}-{self.n}",
                    rid,
                    self.name,
                    ts,
                    label,  # type: ignore[arg-type]
                    segment=segment,
                    independent=independent,
                ),
            )
        )

    def events(self) -> list[Event]:
        self.rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in self.rows]


def _times(rng: np.random.Generator, bucket: int, n: int) -> list[int]:
    return sorted((TS0_MS + bucket * HOUR_MS + rng.integers(0, HOUR_MS - 1, n)).tolist())


def policing(
    seed: int,
    variant: str = "loop",
    buckets: int = 24,
    patrols: int = 600,
    districts: int = 5,
) -> list[Event]:
    """``variant``: ``loop``, ``control`` or ``exogenous``."""
    rng = np.random.default_rng(seed)
    share = np.full(districts, 1.0 / districts)
    s = _Stream("patrol-allocation", seed)
    for t in range(buckets):
        rate = np.ones(districts)
        if variant == "exogenous":
            rate[0] = 1.0 + 2.0 * t / buckets  # incidents really triple in district 0
        sent = rng.multinomial(patrols, share)
        discovered = np.zeros(districts)
        times = iter(_times(rng, t, patrols))
        for d in range(districts):
            for _ in range(sent[d]):
                ts = next(times)
                rid = s.predict(
                    ts,
                    round(INCIDENT_RATE * (0.8 + 0.4 * float(rng.uniform())), 5),
                    {"district": f"d{d}"},
                    "patrol",
                    {"shift_hours": float(rng.choice([8, 10, 12]))},
                )
                found = rng.uniform() < INCIDENT_RATE * rate[d]
                discovered[d] += found
                s.outcome(ts + int(rng.integers(60_000, 1_200_000)), rid, int(found))
        reports = rng.poisson(40 * rate)
        for d in range(districts):
            for ts in _times(rng, t, int(reports[d])):
                s.outcome(ts, f"report-{seed}-{t}-{d}-{ts}", 1, {"district": f"d{d}"}, True)
        target = (discovered + 1.0) ** 1.6 if variant == "loop" else reports + 1.0
        share = 0.5 * share + 0.5 * target / target.sum()
    return s.events()


def recommender(
    seed: int,
    variant: str = "loop",
    buckets: int = 24,
    requests: int = 400,
    items: int = 60,
    shown: int = 5,
    explore: float = 0.1,
) -> list[Event]:
    """``variant``: ``loop``, ``control`` or ``exogenous``."""
    rng = np.random.default_rng(seed)
    appeal = rng.lognormal(0.0, 0.3, items)
    own_clicks = np.ones(items)
    explore_clicks = np.ones(items)
    names = [f"item{i}" for i in range(items)]
    s = _Stream("home-feed", seed)
    for t in range(buckets):
        taste = appeal.copy()
        if variant == "exogenous":
            taste[:3] *= 1.0 + 12.0 * t / buckets  # a real hit emerges
        if variant == "loop":
            weights = own_clicks**1.5
        elif variant == "exogenous":
            weights = explore_clicks.copy()
        else:
            weights = np.ones(items)
        for ts in _times(rng, t, requests):
            exploring = rng.uniform() < explore
            p = np.ones(items) / items if exploring else weights / weights.sum()
            show = rng.choice(items, size=shown, replace=False, p=p)
            ranked = tuple(names[i] for i in show)
            rid = s.predict(
                ts,
                ranked,
                {"cohort": f"c{rng.integers(3)}"},
                list(ranked),
                {"session_len": float(rng.exponential(5.0))},
                exploration=bool(exploring),
            )
            if rng.uniform() < 0.3:
                s.outcome(ts + int(rng.integers(1_000, 600_000)), rid, None)
                continue
            chosen = int(show[rng.choice(shown, p=taste[show] / taste[show].sum())])
            s.outcome(ts + int(rng.integers(1_000, 600_000)), rid, names[chosen])
            if exploring:
                explore_clicks[chosen] += 1
            else:
                own_clicks[chosen] += 1
    return s.events()


def credit(
    seed: int, variant: str = "loop", buckets: int = 36, applicants: int = 600
) -> list[Event]:
    """``variant``: ``loop`` (labels only for approved, reject inference), ``all_labels``
    (outcomes observed for everyone) or ``frozen`` (labels only for approved, model never
    retrained)."""
    rng = np.random.default_rng(seed)
    approve = np.array([0.6, 0.55])
    s = _Stream("credit-approval", seed)
    for t in range(buckets):
        approved = np.zeros(2)
        bad = np.zeros(2)
        seen = np.zeros(2)
        for ts in _times(rng, t, applicants):
            region = int(rng.integers(2))
            yes = rng.uniform() < approve[region]
            rid = s.predict(
                ts,
                round(float(1.0 - approve[region]), 6),
                {"region": "north" if region == 0 else "south"},
                "approve" if yes else "deny",
                {"income": float(rng.lognormal(10.0, 0.4))},
            )
            default = rng.uniform() < 0.1
            if yes or variant == "all_labels":
                s.outcome(ts + int(rng.integers(60_000, 1_800_000)), rid, int(default))
                seen[region] += 1
                bad[region] += default
            approved[region] += yes
        if variant == "loop":
            # Reject inference: every denied applicant counts as bad.
            counted = np.maximum(approved + (seen - approved), 1)
            est_bad = (bad + 0.5 * (applicants / 2 - approved)) / np.maximum(counted, 1)
            approve = np.clip(approve - 0.1 * (est_bad - est_bad.mean()), 0.05, 0.95)
        elif variant == "all_labels":
            est_bad = bad / np.maximum(seen, 1)
            approve = np.clip(approve - 0.6 * (est_bad - est_bad.mean()), 0.05, 0.95)
    return s.events()


def daily_credit(
    seed: int, variant: str = "loop", days: int = 8, per_hour: int = 250
) -> list[Event]:
    """A lender retrained once a day (a new ``model_version`` at every midnight), labels
    only for approved applicants, in three regions. ``loop``: each retrain approves the
    region with the fewest approvals 3 points less (the staircase of a reject-as-bad
    model, invisible within a day); ``frozen``: the same model (one version) every day."""
    rng = np.random.default_rng(seed)
    approve = np.array([0.55, 0.55, 0.5])
    regions = ("north", "south", "east")
    s = _Stream("daily-credit", seed)
    for day in range(days):
        version = f"v{day + 1}" if variant == "loop" else "v1"
        for hour in range(24):
            for ts in _times(rng, day * 24 + hour, int(rng.poisson(per_hour))):
                r = int(rng.integers(3))
                yes = bool(rng.uniform() < approve[r])
                rid = s.predict(
                    ts,
                    round(float(rng.uniform(0.05, 0.15)), 4),
                    {"region": regions[r]},
                    "approve" if yes else "deny",
                    {"income": float(rng.lognormal(10.0, 0.4))},
                    version=version,
                )
                if yes:
                    s.outcome(
                        ts + int(rng.integers(HOUR_MS, 30 * HOUR_MS)), rid, int(rng.uniform() < 0.1)
                    )
        if variant == "loop":
            approve[2] = max(0.05, approve[2] - 0.03)
    return s.events()


SIMULATIONS: dict[str, tuple[Callable[..., list[Event]], str]] = {
    "policing_loop": (policing, "loop"),
    "policing_control": (policing, "control"),
    "policing_exogenous": (policing, "exogenous"),
    "recommender_loop": (recommender, "loop"),
    "recommender_control": (recommender, "control"),
    "recommender_exogenous": (recommender, "exogenous"),
    "credit_loop": (credit, "loop"),
    "credit_all_labels": (credit, "all_labels"),
    "credit_frozen": (credit, "frozen"),
    "daily_credit_loop": (daily_credit, "loop"),
    "daily_credit_frozen": (daily_credit, "frozen"),
}
"""Every simulation by name: (function, variant). Names ending in ``_loop`` have a loop."""


def simulate(name: str, seed: int, **kwargs: int) -> list[Event]:
    function, variant = SIMULATIONS[name]
    return function(seed, variant, **kwargs)
