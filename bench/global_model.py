"""Issue 14: one global model for every daily series vs one model per series, side by side.

The daily series of ../shared/data/ and ../shared/data/multi/ are walked forward over their
last --days days (default two years), point in time: at each as-of day every model sees the
candles up to that day only. Both sides follow the same policy: a retrain every
--retrain-every days (from scratch on the newest --train-candles candles of each series, all
when unset), a fine-tune of --finetune-epochs on the days between. Local: one model per
series. Global: one model on every series' windows (`LSTMForecaster.fit({series: candles})`),
each series forecast with its own calibration. Printed per series and pooled: the RMSE ratio
to naive persistence and the 80 % / 95 % interval scores (in % of the as-of close, so series
pool without one price level drowning the others), and training seconds per retrain day and
per fine-tune day (local: all series' trainings together).

    .venv/bin/python bench/global_model.py --days 3 --config '{"max_epochs": 2}'   # smoke
    nice .venv/bin/python bench/global_model.py                                    # full run
    nice .venv/bin/python bench/global_model.py --group-train-candles 2000         # group cap
    nice .venv/bin/python bench/global_model.py --retrain-every 28 --train-candles 1000 \
        --group-train-candles 5000 \
        --group-config '{"validation_fraction": 0.36, "patience": 3}'              # the service's

``--group-config`` overrides the global model's config only, as the service's group settings
do (``group_validation_fraction`` and ``group_patience`` are the global model's
``validation_fraction`` and ``patience``).

A side alone (``--side local``) with ``--save FILE`` keeps its forecasts and seconds;
``--combine A B`` reports saved sides side by side, so each can run when the machine is free;
two sides are also compared day by day (`paired`: the second against the first, Diebold–Mariano
on the squared error and on each interval score), to tell a difference from the fit's noise.
``--end DAY`` moves the walk (e.g. before the test years, to choose a setting there).
``--served`` scores what the service would serve instead of the LSTM's own forecasts: each
side's forecasts of each series replayed through the served aggregate (`forecaster.aggregate.
serve`, point in time from the walk's first as-of, as bench/walkforward.py does), the figures
issue 26's "no worse at N = 96" target names (also with ``--combine``).
``--members N`` grows the global model's group to N series with renamed, price-scaled copies
of the real ones (as bench/many_series.py does); every side still forecasts and scores the
real series only, so figures at two N compare the same members' days. Each global retrain's
fit epochs are timed (from the forecaster's epoch log), so the report says whether an epoch
costs more as the group grows (issue 26.4: ``{"steps_per_epoch": 50}`` in --group-config).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _compare import served_replay  # noqa: E402
from _data import DATA, load_daily, load_series  # noqa: E402

from forecaster import ForecasterConfig, HoleError, LSTMForecaster  # noqa: E402
from forecaster.aggregate import BOUNDS  # noqa: E402
from forecaster.backtest import newest_candles  # noqa: E402
from forecaster.scores import diebold_mariano, interval_score  # noqa: E402

MULTI = DATA.parent / "multi"
SCORED = ["as_of", "target_time", "horizon", "value", *BOUNDS]


class EpochSeconds(logging.Handler):
    """The seconds of each fit epoch, from the forecaster's epoch log lines (`EpochLog`)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("%s epoch") and record.args and record.args[0] == "fit":
            self.seconds.append(float(record.args[-1]))


FIT_EPOCHS = EpochSeconds()
logging.getLogger("forecaster").addHandler(FIT_EPOCHS)
logging.getLogger("forecaster").setLevel(logging.INFO)
logging.getLogger("forecaster").propagate = False


def daily_series() -> dict[str, pd.DataFrame]:
    """Every daily series of the shared data, keyed by series."""
    frames = {DATA.name.removesuffix(".csv"): load_daily(DATA)}
    for path in sorted(MULTI.glob("*_d.csv")):
        frames[path.name.removesuffix(".csv")] = load_series(path)
    return frames


def with_copies(frames: dict[str, pd.DataFrame], members: int) -> dict[str, pd.DataFrame]:
    """``frames`` and renamed, price-scaled copies of them, ``members`` series in all.

    Copy j of a series is ``<key>_copy<j>`` with every price x (1 + j / 10), as
    bench/many_series.py makes a larger catalogue from the real files: a scale-free model
    sees the same returns, so the group's size grows and its information does not.
    """
    keys = list(frames)
    grown = dict(frames)
    for n in range(len(keys), members):
        key, copy = keys[n % len(keys)], n // len(keys)
        scaled = frames[key].copy()
        scaled[["open", "high", "low", "close"]] *= 1 + copy / 10
        grown[f"{key}_copy{copy}"] = scaled
    return grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=730, help="as-of days walked (the test)")
    parser.add_argument("--end", default=None, help="the last as-of day (default: the newest)")
    parser.add_argument("--retrain-every", type=int, default=7)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument(
        "--train-candles",
        type=int,
        default=None,
        help="per-series cap: retrain on each series' newest N candles",
    )
    parser.add_argument(
        "--group-train-candles",
        type=int,
        default=None,
        help="the global model's cap: N candles in all, N // k per series",
    )
    parser.add_argument(
        "--members",
        type=int,
        default=None,
        help="the global model's group: the real series plus renamed, price-scaled copies, "
        "N in all (each side forecasts and scores the real series only)",
    )
    parser.add_argument("--side", choices=("both", "local", "global"), default="both")
    parser.add_argument("--save", type=Path, default=None, help="pickle the forecasts here")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, help="saved sides")
    parser.add_argument(
        "--served",
        action="store_true",
        help="score the served aggregate of each side's forecasts, not the LSTM's own",
    )
    parser.add_argument("--config", default="{}", help="ForecasterConfig overrides as JSON")
    parser.add_argument(
        "--group-config",
        default="{}",
        help="overrides of the global model only, as JSON, as the service's group settings do "
        '(its daily defaults: \'{"steps_per_epoch": 50, "patience": 3}\', every series\' '
        "whole history, a retrain every 7 days)",
    )
    parser.add_argument(
        "--retrain-cost",
        action="store_true",
        help="time one retrain only: each local model, and the global one on 1, 2, 4, ... series",
    )
    args = parser.parse_args()
    frames = daily_series()
    if args.combine:
        combine(args.combine, frames, served=args.served)
        return
    config = ForecasterConfig.from_dict(ForecasterConfig().to_dict() | json.loads(args.config))
    group_config = ForecasterConfig.from_dict(config.to_dict() | json.loads(args.group_config))
    # every series has this day and the horizon after it: every forecast is scored
    newest = min(frame.index[-1] for frame in frames.values()) - pd.Timedelta(days=config.horizon)
    end = newest if args.end is None else min(pd.Timestamp(args.end, tz=newest.tz), newest)
    group = frames if args.members is None else with_copies(frames, args.members)
    if args.retrain_cost:
        seen = {key: frame.loc[:end] for key, frame in group.items()}
        retrain_cost(
            seen, len(frames), config, group_config, args.train_candles, args.group_train_candles
        )
        return
    days = pd.date_range(end=end, periods=args.days, freq="D")
    sides = ("local", "global") if args.side == "both" else (args.side,)
    header = (
        f"# bench/global_model.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"{len(frames)} daily series (the global model's group: {len(group)}), "
        f"as-of {days[0]:%Y-%m-%d} .. {days[-1]:%Y-%m-%d}, "
        f"{'/'.join(sides)}, retrain every {args.retrain_every}, fine-tune "
        f"{args.finetune_epochs} epoch(s), train_candles {args.train_candles}, "
        f"group_train_candles {args.group_train_candles}\nconfig {config}\n"
        f"global model's overrides {args.group_config}"
    )
    print(header)
    rows, seconds = [], {side: [] for side in sides}
    local: dict[str, LSTMForecaster] = {}
    shared: LSTMForecaster | None = None
    for step, as_of in enumerate(days):
        seen_group = {key: frame.loc[:as_of] for key, frame in group.items()}
        seen_group = {key: frame for key, frame in seen_group.items() if len(frame)}
        seen = {key: frame for key, frame in seen_group.items() if key in frames}
        retrain = step % args.retrain_every == 0
        if "local" in sides:
            started = time.perf_counter()
            for key, frame in seen.items():
                if retrain or key not in local:
                    try:
                        local[key] = LSTMForecaster(config).fit(
                            newest_candles(frame, args.train_candles)
                        )
                    except ValueError as error:
                        print(
                            f"  {as_of:%Y-%m-%d} {key}: local fit skipped: {error}", file=sys.stderr
                        )
                else:
                    local[key].update(frame, epochs=args.finetune_epochs)
            seconds["local"].append((retrain, time.perf_counter() - started, 0, 0.0))
        if "global" in sides:
            started = time.perf_counter()
            epochs, mark = 0, len(FIT_EPOCHS.seconds)
            if retrain or shared is None:
                cut = newest_candles(
                    seen_group,
                    args.train_candles,
                    args.group_train_candles,
                    group_config.min_history,
                )
                shared = LSTMForecaster(group_config).fit(cut)
                epochs = shared.epochs_trained_
            else:
                shared.update(seen_group, epochs=args.finetune_epochs)
            in_epochs = sum(FIT_EPOCHS.seconds[mark:])
            seconds["global"].append((retrain, time.perf_counter() - started, epochs, in_epochs))
        for key, frame in seen.items():
            for side, model, name in (("local", local.get(key), None), ("global", shared, key)):
                if model is None or side not in sides:
                    continue
                try:
                    forecast = model.predict(frame, series=name)
                except (HoleError, ValueError):
                    continue
                rows.append(
                    forecast.assign(series=key, side=side, last=float(frame["close"].iloc[-1]))
                )
        print(
            f"  {as_of:%Y-%m-%d} {'retrain' if retrain else 'finetune'}: "
            + " ".join(f"{side} {seconds[side][-1][1]:.1f}s" for side in sides),
            file=sys.stderr,
            flush=True,
        )
    forecasts = pd.concat(rows, ignore_index=True)
    if args.save is not None:
        args.save.write_bytes(pickle.dumps((header, forecasts, seconds)))
    report(served_forecasts(forecasts, frames) if args.served else forecasts, frames, seconds)


def served_forecasts(forecasts: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each side's forecasts of each series replaced by the service's served aggregate of them."""
    out = []
    for (key, side), group in forecasts.groupby(["series", "side"], sort=True):
        close = frames[key]["close"].astype("float64")
        lstm = group.drop(columns=["series", "side"]).rename(columns={"last": "naive"})
        replay, seconds = served_replay(lstm, close)
        print(f"  served {key} {side}: {seconds:.0f} s", file=sys.stderr, flush=True)
        out.append(replay[SCORED].assign(series=key, side=side, last=replay["naive"]))
    return pd.concat(out, ignore_index=True)


def combine(paths: list[Path], frames: dict[str, pd.DataFrame], *, served: bool = False) -> None:
    """Report saved sides together; a side saved twice (two caps) is named by its file."""
    saved = [pickle.loads(path.read_bytes()) for path in paths]
    sides = [side for _, _, seconds in saved for side in seconds]
    rows, timings = [], {}
    for path, (header, forecasts, seconds) in zip(paths, saved, strict=True):
        print(header)
        names = {
            side: side if sides.count(side) == 1 else f"{side}:{path.stem}" for side in seconds
        }
        rows.append(forecasts.assign(side=forecasts["side"].map(names)))
        timings |= {names[side]: timing for side, timing in seconds.items()}
    forecasts = pd.concat(rows, ignore_index=True)
    report(served_forecasts(forecasts, frames) if served else forecasts, frames, timings)


def retrain_cost(
    seen: dict[str, pd.DataFrame],
    real: int,
    config: ForecasterConfig,
    group_config: ForecasterConfig,
    train_candles: int | None,
    group_train_candles: int | None,
) -> None:
    """Seconds of one retrain: every local model, then the global one on 1, 2, 4, ... series.

    Interleaved (local, global, local, ...) so that the machine's load falls on both sides.
    The first ``real`` series of ``seen`` are the real ones, the only ones fitted locally.
    """
    print(f"\none retrain as of {max(f.index[-1] for f in seen.values()):%Y-%m-%d}")
    keys = list(seen)
    counts = sorted({*(2**i for i in range(len(keys).bit_length())), len(keys)})
    local, epochs, shared = [], [], {}
    for i in range(max(real, len(counts))):
        if i < real:
            started = time.perf_counter()
            model = LSTMForecaster(config).fit(newest_candles(seen[keys[i]], train_candles))
            local.append(time.perf_counter() - started)
            epochs.append(model.epochs_trained_)
        if i < len(counts):
            group = {k: seen[k] for k in keys[: counts[i]]}
            cut = newest_candles(
                group, train_candles, group_train_candles, group_config.min_history
            )
            started, mark = time.perf_counter(), len(FIT_EPOCHS.seconds)
            model = LSTMForecaster(group_config).fit(cut)
            shared[counts[i]] = (
                time.perf_counter() - started,
                sum(map(len, cut.values())),
                model.epochs_trained_,
                float(np.median(FIT_EPOCHS.seconds[mark:])),
            )
    one = float(np.mean(local))
    print(
        f"local: {len(local)} trainings, mean {one:.1f} s ({np.mean(epochs):.1f} epochs), "
        f"together {sum(local):.1f} s"
    )
    for k, (seconds, candles, n_epochs, per_epoch) in shared.items():
        print(
            f"global on {k} series ({candles} candles, {n_epochs} epochs): {seconds:.1f} s "
            f"(median epoch {per_epoch:.2f} s) = {seconds / one:.2f}x one local training"
        )


def report(forecasts: pd.DataFrame, frames: dict[str, pd.DataFrame], seconds: dict) -> None:
    """Per series and pooled: RMSE ratio to naive, interval scores; training seconds."""
    actual = (
        pd.concat(
            [
                frame["close"].rename("actual").to_frame().assign(series=key)
                for key, frame in frames.items()
            ]
        )
        .reset_index()
        .rename(columns={"time": "target_time"})
    )
    scored = forecasts.merge(actual, on=["series", "target_time"], how="inner")
    rel = {
        name: scored[name] / scored["last"]
        for name in ("value", "actual", "lower_80", "upper_80", "lower_95", "upper_95")
    }
    scored = scored.assign(
        err=(rel["value"] - rel["actual"]) ** 2,
        naive_err=(1 - rel["actual"]) ** 2,
        is80=100 * interval_score(rel["lower_80"], rel["upper_80"], rel["actual"], level=0.8),
        is95=100 * interval_score(rel["lower_95"], rel["upper_95"], rel["actual"], level=0.95),
    )
    width = max(6, *map(len, forecasts["side"].unique()))
    print(
        f"\n{'series':24} {'side':{width}} {'n':>6} {'rmse/naive':>10} {'IS80 %':>8} {'IS95 %':>8}"
    )
    for (key, side), group in [
        *scored.groupby(["series", "side"]),
        *(((" pooled", s), g) for s, g in scored.groupby("side")),
    ]:
        ratio = np.sqrt(group["err"].mean() / group["naive_err"].mean())
        print(
            f"{key:24} {side:{width}} {len(group):6d} {ratio:10.4f} {group['is80'].mean():8.3f} "
            f"{group['is95'].mean():8.3f}"
        )
    sides = sorted(scored["side"].unique())
    if len(sides) == 2:
        paired(scored, *sides)
    print()
    for side, timings in seconds.items():
        retrain = [s for r, s, *_ in timings if r]
        tune = [s for r, s, *_ in timings if not r]
        fits = [t[2:] for t in timings if t[0] and len(t) > 2]  # (r, s) in older saves
        epochs = sum(n for n, _ in fits)
        per_epoch = (
            f", {epochs} fit epochs of {sum(s for _, s in fits) / epochs:.2f} s" if epochs else ""
        )
        print(
            f"{side} training: retrain day {np.mean(retrain) if retrain else 0:.1f} s "
            f"(n={len(retrain)}{per_epoch}), fine-tune day {np.mean(tune) if tune else 0:.2f} s "
            f"(n={len(tune)})"
        )


def paired(scored: pd.DataFrame, first: str, second: str) -> None:
    """Is ``second`` worse than ``first`` beyond chance? Diebold–Mariano on each pooled loss.

    Each as-of's losses are averaged over the series and horizons both sides forecast, so the
    test sees one paired difference a day (h-step errors overlap: lags up to the horizon − 1).
    """
    keys = ["series", "as_of", "target_time"]
    both = scored[scored["side"] == first].merge(
        scored[scored["side"] == second], on=keys, suffixes=("_a", "_b")
    )
    horizon = int(scored["horizon"].max())
    print(f"\n{second} against {first}, paired on {len(both)} forecasts (DM > 0: {second} worse)")
    for loss in ("err", "is80", "is95"):
        daily = both.groupby("as_of")[[f"{loss}_a", f"{loss}_b"]].mean()
        test = diebold_mariano(
            daily[f"{loss}_b"].to_numpy(), daily[f"{loss}_a"].to_numpy(), horizon=horizon
        )
        change = daily[f"{loss}_b"].mean() / daily[f"{loss}_a"].mean() - 1
        dm = (
            f"DM {test.statistic:+.2f} (p {test.p_value:.3f}, {test.n} days)"
            if np.isfinite(test.statistic)
            else f"no DM test ({test.n} days: too few)"
        )
        print(f"  {loss:5} mean {100 * change:+.3f} %, {dm}")


if __name__ == "__main__":
    main()
