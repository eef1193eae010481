"""Issue 13: choose the served aggregate's rule on data before the test period only.

Replays candidate rules for the served forecast (expert weights, prior, expert set, interval
tracking) over the LSTM walk-forward forecasts that `bench/walkforward.py --cache` kept, on
the as-of days before the test period: BTC before 2019, each multi daily series before its
last two years. Every rule is replayed the way the service replays its record (point in
time: a forecast counts once its target is at or before the as_of), in one pass per horizon;
that equals the service's replay while a horizon has at most `RECORD_ROUNDS` scored rounds
(but for the service widening a 95 % band to hold the 80 % one, left out here: the interval
scores differ in the third decimal). Prints, per rule, the RMSE ratio to naive and the
interval scores ÷ close per series and their worst / mean, the worst 80 % coverage of a
year or volatility tercile, beside the naive with trailing-365 empirical intervals.

    nice .venv/bin/python bench/walkforward.py --retrain-every 28 --train-candles 1000 \\
        --start 2016-07-01 --end 2018-12-31 --no-baselines --cache bench/.cache
    nice .venv/bin/python bench/walkforward.py --retrain-every 28 --train-candles 1000 \\
        --daily-multi --forecasts-only --cache bench/.cache
    .venv/bin/python bench/aggregation_choice.py --cache bench/.cache
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _compare import ewma_bounds  # noqa: E402
from _data import DATA, load_daily, load_series  # noqa: E402

from forecaster.aggregate import LEVELS, references  # noqa: E402
from forecaster.metrics import score_forecasts  # noqa: E402
from forecaster.online import Bernstein  # noqa: E402

TEST_START_BTC = pd.Timestamp("2019-01-01", tz="UTC")
TEST_YEARS = 2  # a multi series' test period: its last two years
MIN_AS_OFS = 30  # fewer pre-test as-of days than this (XRPUSD's walk has 3) judge nothing


@dataclass(frozen=True)
class Rule:
    """A candidate: experts and prior, the learner, how intervals are tracked."""

    name: str
    prior: dict[str, float]
    learner: Callable[[np.ndarray], object] = Bernstein
    interval: str = "pid"  # "pid": P-control of the scale; "quantile": rolling quantile
    step: float = 0.02  # the P-control step
    window: int = 365  # the rolling quantile's scored rounds
    width: str = "lstm"  # whose half-width is scaled: the LSTM's or the naive-empirical's
    rate: float = 1.0  # the factor on BOA's adaptive learning rate (value weights)
    bound_prior: tuple[float, float] = (0.5, 0.5)  # "bounds": the LSTM's bound, the naive's
    bound_rate: float = 1.0  # "bounds": the factor on the bound learners' learning rate
    split: bool = False  # "bounds": each side's scale tracked on its own, at (1 - level) / 2
    # "bounds": the bound experts, by column prefix: "" the LSTM's, "naive_" the naive's
    # empirical ones, "ewma_" the naive's EWMA-scaled ones (one prior weight each)
    bound_experts: tuple[str, ...] = ("", "naive_")
    # "bounds": the scale's step weighted by the band's width (over its running mean): online
    # gradient descent on the interval score itself instead of on the miss rate
    weighted: bool = False
    recent: int = 0  # the width's running mean over the last this many rounds (0: all)
    multiplicative: bool = False  # "bounds": the step moves log s instead of s
    step_95: float | None = None  # "bounds": the 95 % scale's own step (None: ``step``)
    bound_rate_80: float | None = None  # "bounds": the 80 % bounds' own rate (None: bound_rate)
    # the scale's step while the record is short: max(step, warm / √(rounds scored)), so a new
    # series' scale finds its level in weeks rather than months (0: the plain step)
    warm: float = 0.0
    # "bounds": the scale tracked at each of these steps at once and mixed by their interval
    # scores (`ScaleSteps`, DtACI); the 95 % level's grid halved (empty: one
    # step)
    steps: tuple[float, ...] = ()
    # the value's LSTM weight served only while its square loss over the horizon's last this
    # many scored rounds is below the naive's (naive alone otherwise); 0: no gate
    gate: int = 0


# The tracked scale's candidate steps when they are learnt (`ScaleSteps`): a doubling grid
# spanning 64x around the fixed step, as in DtACI (Gibbs & Candès 2024), and its lookback.
STEP_GRID = tuple(0.02 * 2.0**k for k in range(-3, 4))
STEP_LOOKBACK = 500


class ScaleSteps:
    """The interval scale tracked at several steps at once, mixed by their interval scores.

    One tracker per step in ``steps`` moves its own scale as `tracked_scale` does; the served
    scale is their mean under exponential weights on each tracker's loss ℓ_k = weight ×
    ρ_{level}(score − s_k), the pinball loss of the level's quantile — the round's interval
    score up to terms that do not depend on s — with fixed-share mixing σ = 1 / (2 × lookback)
    so that the weights can move to a faster step after a regime change and back. The
    learning rate is set from the losses themselves, η = √((ln(2kL) + 1) / Σ ℓ̄²) over the last
    L = ``lookback`` rounds' mixed losses ℓ̄ (DtACI, Gibbs & Candès 2024, with the weighted
    mean in place of a random draw, so a replay is reproducible; the interval score is convex
    in s, so the mean does at least as well as a draw).
    """

    def __init__(
        self,
        *,
        level: float,
        steps: tuple[float, ...] = STEP_GRID,
        start: float = 1.0,
        lookback: int = STEP_LOOKBACK,
    ) -> None:
        self.alpha = 1.0 - level
        self.steps = list(steps)
        self.scales = [start] * len(steps)
        self.weights = [1.0 / len(steps)] * len(steps)
        self.lookback = lookback
        self._squares: list[float] = []  # the mixed losses' squares, the last `lookback`
        self._total = 0.0
        self._log = math.log(2 * len(steps) * lookback) + 1.0

    @property
    def scale(self) -> float:
        return sum(w * s for w, s in zip(self.weights, self.scales, strict=True))

    def update(self, score: float, weight: float = 1.0) -> None:
        """Learn from one round: its ``score`` and its weight (its band's relative width)."""
        alpha, k = self.alpha, len(self.steps)
        losses = [
            weight * ((1 - alpha) * (score - s) if score > s else alpha * (s - score))
            for s in self.scales
        ]
        mixed = sum(w * loss for w, loss in zip(self.weights, losses, strict=True))
        self._squares.append(mixed * mixed)
        self._total += mixed * mixed
        if len(self._squares) > self.lookback:
            self._total -= self._squares.pop(0)
        self.scales = [
            max(0.0, s + step * weight * (float(score > s) - alpha))
            for s, step in zip(self.scales, self.steps, strict=True)
        ]
        if self._total <= 0:
            return
        eta = math.sqrt(self._log / self._total)
        best = min(losses)
        raw = [
            w * math.exp(-eta * (loss - best)) for w, loss in zip(self.weights, losses, strict=True)
        ]
        total = sum(raw)
        sigma = 1.0 / (2 * self.lookback)
        self.weights = [(1 - sigma) * r / total + sigma / k for r in raw]


class LossBernstein(Bernstein):
    """BOA on the experts' own square losses (no gradient trick): it competes with the best
    expert instead of the best convex combination, so it mixes less."""

    def regrets(self, forecast: float, x: list[float], y: float) -> list[float]:
        own = (forecast - y) ** 2
        return [own - (xi - y) ** 2 for xi in x]


# the rule chosen on 2026-12-01; the candidates of 2026-12-02 are variants of it (the one
# chosen last: "width-weighted (last 90) P 0.02 / 95 % P 0.01, bound rate 80 % 0.03")
CHOSEN = Rule(
    "BOA lstm/naive .1/.9 rate .39, bounds BOA, P 0.02",
    {"lstm": 0.1, "naive": 0.9},
    interval="bounds",
    rate=0.39,
)
# the rule chosen on the morning of 2026-12-02 (bounds at 0.1 × BOA's rate), and it with the
# scale's steps weighted by the band's width over the last 90 rounds': the afternoon's bases
MORNING = replace(CHOSEN, bound_rate=0.1)
WEIGHTED = replace(
    MORNING, name="bound rate 0.1, width-weighted (last 90) P 0.02", weighted=True, recent=90
)

RULES = [
    Rule(
        "current: BOA lstm/naive/drift .3/.6/.1, P 0.02", {"lstm": 0.3, "naive": 0.6, "drift": 0.1}
    ),
    Rule("BOA .1/.8/.1", {"lstm": 0.1, "naive": 0.8, "drift": 0.1}),
    Rule("BOA lstm/naive .3/.7", {"lstm": 0.3, "naive": 0.7}),
    Rule("BOA lstm/naive .1/.9", {"lstm": 0.1, "naive": 0.9}),
    Rule("loss-BOA .3/.6/.1", {"lstm": 0.3, "naive": 0.6, "drift": 0.1}, LossBernstein),
    Rule("loss-BOA lstm/naive .3/.7", {"lstm": 0.3, "naive": 0.7}, LossBernstein),
    Rule("loss-BOA lstm/naive .1/.9", {"lstm": 0.1, "naive": 0.9}, LossBernstein),
    Rule("naive alone", {"naive": 1.0}),
    Rule("naive alone, P 0.005", {"naive": 1.0}, step=0.005),
    Rule("naive alone, quantile 365", {"naive": 1.0}, interval="quantile", window=365),
    Rule("naive alone, quantile 730", {"naive": 1.0}, interval="quantile", window=730),
    Rule("naive alone, naive width P 0.005", {"naive": 1.0}, step=0.005, width="naive"),
    Rule("BOA lstm/naive .1/.9, P 0.005", {"lstm": 0.1, "naive": 0.9}, step=0.005),
    Rule("BOA lstm/naive .1/.9, quantile 365", {"lstm": 0.1, "naive": 0.9}, interval="quantile"),
    Rule(
        "BOA lstm/naive .1/.9, bounds BOA, P 0.02", {"lstm": 0.1, "naive": 0.9}, interval="bounds"
    ),
    Rule(
        "BOA lstm/naive .1/.9, bounds BOA, P 0.005",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        step=0.005,
    ),
    Rule(
        "BOA lstm/naive .1/.9, bounds BOA, no ACI",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        step=0.0,
    ),
    Rule("BOA lstm/naive .05/.95", {"lstm": 0.05, "naive": 0.95}),
    Rule(
        "BOA lstm/naive .1/.9, bounds BOA, P 0.01",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        step=0.01,
    ),
    Rule(
        "BOA lstm/naive .3/.7, bounds BOA, P 0.02",
        {"lstm": 0.3, "naive": 0.7},
        interval="bounds",
    ),
    Rule(
        "BOA lstm/naive .1/.9, bounds BOA .3/.7, P 0.02",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        bound_prior=(0.3, 0.7),
    ),
    Rule(
        "BOA lstm/naive .05/.95, bounds BOA, P 0.02",
        {"lstm": 0.05, "naive": 0.95},
        interval="bounds",
    ),
    Rule(
        "BOA lstm/naive .1/.9 rate .5, bounds BOA, P 0.02",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        rate=0.5,
    ),
    Rule(
        "BOA lstm/naive .1/.9 rate .25, bounds BOA, P 0.02",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        rate=0.25,
    ),
    Rule(
        "BOA lstm/naive .05/.95 rate .27, bounds BOA, P 0.02",
        {"lstm": 0.05, "naive": 0.95},
        interval="bounds",
        rate=0.27,
    ),
    Rule(
        "BOA lstm/naive .3/.7 rate .25, bounds BOA, P 0.02",
        {"lstm": 0.3, "naive": 0.7},
        interval="bounds",
        rate=0.25,
    ),
    CHOSEN,
    Rule(
        "BOA lstm/naive .1/.9 rate .39, bounds BOA, P 0.05",
        {"lstm": 0.1, "naive": 0.9},
        interval="bounds",
        rate=0.39,
        step=0.05,
    ),
    Rule("BOA lstm/naive .05/.95 P 0.01", {"lstm": 0.05, "naive": 0.95}, step=0.01),
    Rule(
        "BOA lstm/naive .1/.9, quantile 730",
        {"lstm": 0.1, "naive": 0.9},
        interval="quantile",
        window=730,
    ),
    *(
        replace(
            CHOSEN, name=f"the chosen rule, each side's scale own, P {step}", step=step, split=True
        )
        for step in (0.01, 0.02, 0.04)
    ),
    *(
        replace(CHOSEN, name=f"the chosen rule, bound rate {rate}", bound_rate=rate)
        for rate in (0.01, 0.1, 0.25, 0.5, 2.0)
    ),
    *(
        replace(
            CHOSEN,
            name=f"bound rate 0.1, bound prior {prior}, P {step}",
            bound_rate=0.1,
            bound_prior=prior,
            step=step,
        )
        for prior, step in (
            ((0.3, 0.7), 0.02),
            ((0.7, 0.3), 0.02),
            ((0.5, 0.5), 0.01),
            ((0.5, 0.5), 0.03),
        )
    ),
    replace(
        CHOSEN,
        name="the chosen rule, bound rate 0.5, each side's own scale, P 0.01",
        bound_rate=0.5,
        step=0.01,
        split=True,
    ),
    *(
        replace(
            MORNING,
            name=f"bound rate 0.1, {'EWMA as 3rd bound expert, ' if ewma else ''}"
            f"{'width-weighted ' if weighted else ''}P {step}",
            step=step,
            weighted=weighted,
            bound_experts=("", "naive_", "ewma_") if ewma else ("", "naive_"),
            bound_prior=(1 / 3, 1 / 3, 1 / 3) if ewma else (0.5, 0.5),
        )
        for ewma, weighted, step in (
            (False, False, 0.02),
            (False, True, 0.02),
            (False, True, 0.01),
            (False, True, 0.015),
            (False, True, 0.04),
            (True, False, 0.02),
            (True, True, 0.02),
        )
    ),
    *(
        replace(
            MORNING,
            name=f"bound rate 0.1, {'width-weighted ' if weighted else ''}P 0.02, warm {warm}",
            weighted=weighted,
            warm=warm,
        )
        for weighted, warm in ((False, 0.25), (False, 0.5), (True, 0.25), (True, 0.5))
    ),
    *(
        replace(
            WEIGHTED,
            name=f"bound rate 0.1, width-weighted (over the last {recent}) P {step}",
            recent=recent,
            step=step,
        )
        for recent, step in ((90, 0.02), (365, 0.02), (90, 0.01), (365, 0.01))
    ),
    *(
        replace(
            WEIGHTED,
            name=f"bound rate 0.1, {'width-weighted (last 90) ' if weighted else ''}"
            f"log-scale step {step}",
            weighted=weighted,
            step=step,
            multiplicative=True,
        )
        for weighted, step in ((False, 0.02), (True, 0.02), (True, 0.015), (True, 0.03))
    ),
    *(
        replace(WEIGHTED, name=f"{WEIGHTED.name}, 95 % P {step}", step_95=step)
        for step in (0.005, 0.01, 0.015, 0.03)
    ),
    *(
        replace(
            WEIGHTED,
            name=f"width-weighted (last 90) P 0.02 / 95 % P 0.01, bound rate 80 % {rate}",
            step_95=0.01,
            bound_rate_80=rate,
        )
        for rate in (0.01, 0.03, 0.05, 0.2)
    ),
]
# the rule chosen on the afternoon of 2026-12-02: the base of the candidates after it
AFTERNOON = replace(
    WEIGHTED,
    name="width-weighted (last 90) P 0.02 / 95 % P 0.01, bound rate 80 % 0.03",
    step_95=0.01,
    bound_rate_80=0.03,
)
RULES += [
    replace(AFTERNOON, name="the afternoon's rule, DtACI steps 0.0025..0.16", steps=STEP_GRID),
    replace(
        AFTERNOON,
        name="the afternoon's rule, DtACI steps 0.01..0.16",
        steps=STEP_GRID[2:],
    ),
    replace(
        AFTERNOON,
        name="the afternoon's rule, DtACI steps 0.0025..0.04",
        steps=STEP_GRID[:-2],
    ),
    replace(AFTERNOON, name="the afternoon's rule, DtACI steps 0.005..0.08", steps=STEP_GRID[1:-1]),
    replace(AFTERNOON, name="the afternoon's rule, DtACI steps 0.01..0.04", steps=STEP_GRID[2:-2]),
    # 2026-12-07: the served value's LSTM weight only while the LSTM's record beats naive's
    AFTERNOON,
    *(
        replace(
            AFTERNOON,
            name=f"the afternoon's rule, LSTM only while it beats naive (last {gate})",
            gate=gate,
        )
        for gate in (1000, 365, 90)
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("bench/.cache"))
    parser.add_argument("--rules", default=None, help="comma-separated rule numbers (0-based)")
    args = parser.parse_args()
    series = pre_test(args.cache)
    rules = RULES if args.rules is None else [RULES[int(i)] for i in args.rules.split(",")]
    print(
        "pre-test as-of days per series: "
        + ", ".join(f"{name} {frame['as_of'].nunique()}" for name, (frame, _) in series.items())
    )
    reference = {
        name: score(empirical(frame, close), close) for name, (frame, close) in series.items()
    }
    show("naive, empirical 365 intervals (the reference)", reference)
    for rule in rules:
        show(
            rule.name,
            {
                name: score(replay(frame, close, rule), close)
                for name, (frame, close) in series.items()
            },
            reference,
        )


def pre_test(cache: Path) -> dict[str, tuple[pd.DataFrame, pd.Series]]:
    """Each series' cached LSTM forecasts with as_of before its test period, and its closes."""
    out = {}
    files = {DATA.stem: DATA} | {p.stem: p for p in sorted((DATA.parent / "multi").glob("*_d.csv"))}
    for stem, source in files.items():
        frames = []
        for path in sorted(cache.glob(f"{stem}-*.pickle")):
            with path.open("rb") as handle:
                frames.append(pickle.load(handle)[0].forecasts)
        if not frames:
            print(f"  {stem}: no cached walk-forward in {cache}, left out", file=sys.stderr)
            continue
        candles = load_daily(source) if source == DATA else load_series(source)
        close = candles["close"].astype("float64")
        end = (
            TEST_START_BTC if source == DATA else close.index[-1] - pd.DateOffset(years=TEST_YEARS)
        )
        frame = pd.concat(frames).drop_duplicates(["as_of", "horizon"])
        frame = frame[frame["as_of"] < end].sort_values(["as_of", "horizon"])
        if frame["as_of"].nunique() < MIN_AS_OFS:
            print(
                f"  {stem}: {frame['as_of'].nunique()} as-of days before its test period, "
                f"fewer than {MIN_AS_OFS}: left out",
                file=sys.stderr,
            )
            continue
        out[stem] = (frame.reset_index(drop=True), close)
    return out


def with_references(frame: pd.DataFrame, close: pd.Series) -> pd.DataFrame:
    """``frame`` with drift and the naive's empirical bounds of each as_of (point in time)."""
    parts = []
    for as_of, rows in frame.groupby("as_of", sort=True):
        refs = references(close.loc[:as_of], rows["horizon"].to_numpy(dtype=int))
        parts.append(rows.assign(**{c: refs[c].to_numpy() for c in refs.columns}))
    out = pd.concat(parts, ignore_index=True)
    out["actual"] = close.reindex(pd.DatetimeIndex(out["target_time"])).to_numpy()
    return out


_REFS: dict[int, pd.DataFrame] = {}


def _refs(frame: pd.DataFrame, close: pd.Series) -> pd.DataFrame:
    key = id(frame)
    if key not in _REFS:
        data = with_references(frame, close)
        ewma = ewma_bounds(data, close)
        _REFS[key] = data.assign(
            **{
                f"ewma_{b}_{n}": ewma[f"{b}_{n}"].to_numpy()
                for n in LEVELS
                for b in ("lower", "upper")
            }
        )
    return _REFS[key]


def empirical(frame: pd.DataFrame, close: pd.Series) -> pd.DataFrame:
    data = _refs(frame, close)
    return data.assign(
        value=data["naive"],
        **{f"{b}_{n}": data[f"naive_{b}_{n}"] for n in LEVELS for b in ("lower", "upper")},
    )


def replay(frame: pd.DataFrame, close: pd.Series, rule: Rule) -> pd.DataFrame:
    """The served forecast of every as_of under ``rule``, horizon by horizon, in one pass."""
    data = _refs(frame, close)
    experts = list(rule.prior)
    prior = np.array([rule.prior[e] for e in experts])
    columns = {"lstm": "value", "naive": "naive", "drift": "drift"}
    out = []
    for _, rows in data.groupby("horizon", sort=True):
        rows = rows.sort_values("as_of").reset_index(drop=True)
        naive = rows["naive"].to_numpy()
        x = np.log(rows[[columns[e] for e in experts]].to_numpy() / naive[:, None])
        y = np.log(rows["actual"].to_numpy() / naive)
        half = {
            n: np.log(
                rows[f"{'naive_' if rule.width == 'naive' else ''}upper_{n}"].to_numpy()
                / rows[f"{'naive_' if rule.width == 'naive' else ''}lower_{n}"].to_numpy()
            )
            / 2
            for n in LEVELS
        }
        learner = rule.learner(prior.astype(float), rate=rule.rate)
        bound_x = {  # the bound experts: the LSTM's own bounds, the naive's empirical ones, ...
            f"{b}_{n}": np.log(
                np.column_stack([rows[f"{e}{b}_{n}"] for e in rule.bound_experts]) / naive[:, None]
            )
            for n in LEVELS
            for b in ("lower", "upper")
        }
        bound_learners = {
            f"{b}_{n}": Bernstein(
                np.array(rule.bound_prior),
                quantile=(1 - lv) / 2 if b == "lower" else (1 + lv) / 2,
                rate=rule.bound_rate_80 if n == "80" and rule.bound_rate_80 else rule.bound_rate,
            )
            for n, lv in LEVELS.items()
            for b in ("lower", "upper")
        }
        low = {n: np.zeros(len(rows)) for n in LEVELS}
        high = {n: np.zeros(len(rows)) for n in LEVELS}
        scales = {n: 1.0 for n in LEVELS}
        ensembles = {
            n: ScaleSteps(level=level, steps=tuple(s / 2 if n == "95" else s for s in rule.steps))
            for n, level in LEVELS.items()
            if rule.steps
        }
        sides = {(n, b): 1.0 for n in LEVELS for b in ("lower", "upper")}
        widths: dict[str, list[float]] = {n: [] for n in LEVELS}  # the scored bands' widths
        scores: dict[str, list[float]] = {n: [] for n in LEVELS}
        order = np.argsort(rows["target_time"].to_numpy(), kind="stable")
        targets = rows["target_time"].to_numpy()[order]
        as_ofs = rows["as_of"].to_numpy()
        centre = np.zeros(len(rows))
        served = {
            f"{b}_{n}": np.full(len(rows), np.nan) for n in LEVELS for b in ("lower", "upper")
        }
        seen, rounds = 0, 0
        edge: list[float] = []  # per scored round: the LSTM's square loss minus the naive's
        for i, as_of in enumerate(as_ofs):
            while seen < len(order) and targets[seen] <= as_of:
                j = order[seen]
                seen += 1
                if not (np.isfinite(x[j]).all() and np.isfinite(y[j])):
                    continue
                rounds += 1
                learner.update(x[j].tolist(), float(y[j]))
                if rule.gate:
                    lstm, naive_x = x[j][experts.index("lstm")], x[j][experts.index("naive")]
                    edge.append((lstm - y[j]) ** 2 - (naive_x - y[j]) ** 2)
                if rule.interval == "bounds":
                    for key, bl in bound_learners.items():
                        if np.isfinite(bound_x[key][j]).all():
                            bl.update(bound_x[key][j].tolist(), float(y[j]))
                for n, level in LEVELS.items():
                    s = abs(y[j] - centre[j]) / half[n][j]
                    if rule.interval == "bounds" and rule.split:
                        for b, distance in (
                            ("lower", (centre[j] - y[j]) / (centre[j] - low[n][j])),
                            ("upper", (y[j] - centre[j]) / (high[n][j] - centre[j])),
                        ):
                            miss = distance > sides[n, b]
                            sides[n, b] = max(
                                0.0, sides[n, b] + rule.step * (miss - (1 - level) / 2)
                            )
                        continue
                    if rule.interval == "bounds":
                        s = max(
                            (centre[j] - y[j]) / (centre[j] - low[n][j]),
                            (y[j] - centre[j]) / (high[n][j] - centre[j]),
                        )
                        miss = s > scales[n]
                        weight = 1.0
                        if rule.weighted:
                            widths[n].append(high[n][j] - low[n][j])
                            weight = widths[n][-1] / np.mean(widths[n][-rule.recent :])
                        if rule.steps:
                            ensembles[n].update(float(s), float(weight))
                            scales[n] = ensembles[n].scale
                            continue
                        own = rule.step_95 if n == "95" and rule.step_95 else rule.step
                        step = max(own, rule.warm / np.sqrt(rounds))
                        if rule.multiplicative:
                            scales[n] *= np.exp(step * weight * (miss - (1 - level)))
                        else:
                            scales[n] = max(0.0, scales[n] + step * weight * (miss - (1 - level)))
                        continue
                    if not np.isfinite(s):
                        continue
                    if rule.interval == "pid":
                        miss = s > scales[n]
                        scales[n] = max(0.0, scales[n] + rule.step * (miss - (1 - level)))
                    else:
                        scores[n].append(s)
            weights = np.array(learner.weights) if rounds >= 10 else prior / prior.sum()
            if rule.gate and rounds >= 10 and sum(edge[-rule.gate :]) >= 0:
                weights = np.array([float(e == "naive") for e in experts])
            usable = np.isfinite(x[i])
            share = weights * usable
            centre[i] = float(np.where(usable, x[i], 0.0) @ (share / share.sum()))
            for n, level in LEVELS.items():
                if rule.interval == "quantile" and len(scores[n]) >= 30:
                    scale = float(np.quantile(scores[n][-rule.window :], level))
                elif rule.interval == "quantile":
                    scale = 1.0
                else:
                    scale = scales[n]
                if rule.interval == "bounds":
                    lo = _mix(bound_learners[f"lower_{n}"], bound_x[f"lower_{n}"][i])
                    hi = _mix(bound_learners[f"upper_{n}"], bound_x[f"upper_{n}"][i])
                    low[n][i] = min(lo, centre[i] - 1e-9)
                    high[n][i] = max(hi, centre[i] + 1e-9)
                    below, above = (
                        (sides[n, "lower"], sides[n, "upper"]) if rule.split else (scale, scale)
                    )
                    served[f"lower_{n}"][i] = naive[i] * np.exp(
                        centre[i] - below * (centre[i] - low[n][i])
                    )
                    served[f"upper_{n}"][i] = naive[i] * np.exp(
                        centre[i] + above * (high[n][i] - centre[i])
                    )
                    continue
                served[f"lower_{n}"][i] = naive[i] * np.exp(centre[i] - scale * half[n][i])
                served[f"upper_{n}"][i] = naive[i] * np.exp(centre[i] + scale * half[n][i])
        out.append(rows.assign(value=naive * np.exp(centre), **served))
    return pd.concat(out, ignore_index=True)


def _mix(learner: Bernstein, x: np.ndarray) -> float:
    usable = np.isfinite(x)
    share = np.array(learner.weights) * usable
    return float(np.where(usable, x, 0.0) @ (share / share.sum()))


def score(forecasts: pd.DataFrame, close: pd.Series) -> dict[str, float]:
    """RMSE ratio to naive, interval scores ÷ close at as_of, 80 % coverage, and the
    Diebold–Mariano statistic against naive (nan where the forecast is the naive's)."""
    data = forecasts.dropna(subset=["actual"])
    actual = data["actual"].to_numpy()
    base = close.reindex(pd.DatetimeIndex(data["as_of"])).to_numpy()
    out = {
        "ratio": float(
            np.sqrt(np.mean((data["value"] - actual) ** 2) / np.mean((data["naive"] - actual) ** 2))
        )
    }
    for n, level in LEVELS.items():
        lower, upper = data[f"lower_{n}"].to_numpy(), data[f"upper_{n}"].to_numpy()
        alpha = 1 - level
        interval = (
            upper
            - lower
            + 2 / alpha * np.maximum(lower - actual, 0)
            + 2 / alpha * np.maximum(actual - upper, 0)
        )
        out[f"is{n}"] = float(np.nanmean(interval / base))
        out[f"cover{n}"] = float(np.mean((lower <= actual) & (actual <= upper)))
        if n == "80":  # the worst 80 % coverage of a year or a volatility tercile, pp off 80
            inside = pd.Series((lower <= actual) & (actual <= upper), index=data.index)
            years = inside.groupby(pd.DatetimeIndex(data["as_of"]).year).mean()
            terciles = inside.groupby(pd.qcut(data["volatility"], 3, labels=False)).mean()
            out["worst_pp"] = float(100 * pd.concat([years, terciles]).sub(0.8).abs().max())
    plain = data[["as_of", "target_time", "horizon", "value", "naive"]]
    out["dm"] = float(score_forecasts(plain, close).loc[0, "dm_statistic"])
    return out


def show(
    name: str,
    scores: dict[str, dict[str, float]],
    reference: dict[str, dict[str, float]] | None = None,
) -> None:
    frame = pd.DataFrame(scores).T
    line = (
        f"{name:45s} ratio worst {frame['ratio'].max():.4f} mean {frame['ratio'].mean():.4f}"
        f" (≤1: {(frame['ratio'] <= 1.0005).sum()}/{len(frame)})"
        f"  IS80 {frame['is80'].mean():.4f} IS95 {frame['is95'].mean():.4f}"
        f"  cover80 {frame['cover80'].min():.3f}..{frame['cover80'].max():.3f}"
        f" cover95 {frame['cover95'].min():.3f}..{frame['cover95'].max():.3f}"
        f" worst year/tercile {frame['worst_pp'].max():.1f} pp"
        f"  DM max {frame['dm'].max():+.2f} (> 1.96: {(frame['dm'] > 1.96).sum()})"
    )
    if reference is not None:
        ref = pd.DataFrame(reference).T
        both = ((frame["is80"] <= ref["is80"]) & (frame["is95"] <= ref["is95"])).sum()
        line += f"  IS ≤ ref at both: {both}/{len(frame)}"
    print(line)
    print(
        "    "
        + "  ".join(
            f"{k.split('_')[0][:4]}{k.split('_')[1][:6]} {v['ratio']:.4f}"
            f"/{v['is80']:.3f}/{v['is95']:.3f}/{v['worst_pp']:.0f}pp/DM {v['dm']:+.2f}"
            for k, v in scores.items()
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
