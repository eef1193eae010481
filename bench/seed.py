"""Benchmarks 1 and 2 of issue 5: the seed experiment and training speed.

The seed tutorial's problem: 1,273 final daily Bitstamp BTC/USD candles from 2014-12-01,
windows of 7 closes predicting the next (H = 1); the first 1,018 windows train, the last
248 test. Prints test RMSE / MAE / MAPE / direction of
  (a) naive persistence,
  (b) the seed's setup: price levels with a StandardScaler fitted on all data, LSTM 256,
      batch 7, 200 epochs, Adam 1e-3, clipnorm 4,
  (c) the package's default (ForecasterConfig(horizon=1)), trained on the same windows and
      forecasting each test day point-in-time,
then the training wall times, seconds per epoch at batch 7 and at the default batch, and a
FLOP-bound estimate per epoch from a measured matmul throughput.

    nice .venv/bin/python bench/seed.py                 # everything (several minutes on CPU)
    .venv/bin/python bench/seed.py --speed-only         # benchmark 2 only (bench/gpu_check.sh)
    .venv/bin/python bench/seed.py --seed-epochs 20     # a shorter run of (b)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _data import load_daily, seed_period  # noqa: E402

from forecaster import ForecasterConfig, LSTMForecaster  # noqa: E402
from forecaster.backtest import BacktestPolicy, walk_forward  # noqa: E402

WINDOW, N_TRAIN, N_TEST = 7, 1018, 248


def scores(predicted: np.ndarray, actual: np.ndarray, last: np.ndarray) -> dict[str, float]:
    """Test RMSE, MAE, MAPE (%) and direction (share of correct up/down calls vs last close)."""
    error = predicted - actual
    moved = np.sign(predicted - last)
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "mape": float(100 * np.mean(np.abs(error) / actual)),
        "direction": float(np.mean(moved == np.sign(actual - last))) if moved.any() else np.nan,
    }


def _share(value: float) -> str:
    return "n/a (never moves)" if np.isnan(value) else f"{value:.3f}"


def seed_setup(close: np.ndarray, epochs: int, batch_size: int = 7) -> tuple[np.ndarray, float]:
    """(b): the seed's levels + StandardScaler on all data + LSTM 256; test predictions, seconds."""
    import keras
    from sklearn.preprocessing import StandardScaler

    keras.utils.set_random_seed(0)
    scaled = StandardScaler().fit_transform(close[:, None])[:, 0]  # fitted on all data, as the seed
    windows = np.lib.stride_tricks.sliding_window_view(scaled, WINDOW + 1)  # (1266, 8)
    x, y = windows[:, :WINDOW, None], windows[:, WINDOW:]
    model = _seed_network()
    started = time.perf_counter()
    model.fit(x[:N_TRAIN], y[:N_TRAIN], epochs=epochs, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - started
    predicted = model.predict(x[N_TRAIN:], verbose=0)[:, 0]
    mean, std = close.mean(), close.std()
    return predicted * std + mean, seconds


def _seed_network():
    import keras

    model = keras.Sequential(
        [keras.Input((WINDOW, 1)), keras.layers.LSTM(256), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=4.0), loss="mse")
    return model


def seconds_per_epoch(batch_size: int, epochs: int = 3) -> float:
    """Wall seconds per epoch of the seed network on the 1,018 training windows (after warm-up)."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(N_TRAIN, WINDOW, 1)).astype("float32")
    y = np.random.default_rng(1).normal(size=(N_TRAIN, 1)).astype("float32")
    model = _seed_network()
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # traces the train step
    started = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return (time.perf_counter() - started) / epochs


def flop_bound_seconds(units: int = 256, features: int = 1) -> tuple[float, float]:
    """(seconds per epoch if compute-bound, measured GFLOP/s of a float32 matmul).

    Training FLOPs of an LSTM epoch ~ 3 (forward + backward) x windows x steps x
    2 x 4 x units x (units + features), from the four gate matmuls.
    """
    import tensorflow as tf

    a = tf.random.normal((2048, 2048))
    tf.linalg.matmul(a, a).numpy()
    started = time.perf_counter()
    for _ in range(10):
        b = tf.linalg.matmul(a, a)
    b.numpy()
    gflops = 10 * 2 * 2048**3 / (time.perf_counter() - started) / 1e9
    flops = 3 * N_TRAIN * WINDOW * 2 * 4 * units * (units + features)
    return flops / (gflops * 1e9), gflops


def package_default(candles: pd.DataFrame) -> tuple[LSTMForecaster, pd.DataFrame]:
    """(c): fit on the training windows, forecast each test day from candles up to that day."""
    config = ForecasterConfig(horizon=1)
    train = candles.iloc[: N_TRAIN + WINDOW]  # the last training window's target is row 1024
    model = LSTMForecaster(config).fit(train)
    first, last = candles.index[N_TRAIN + WINDOW - 1], candles.index[N_TRAIN + N_TEST + WINDOW - 2]
    result = walk_forward(
        candles,
        config,
        first,
        last,
        BacktestPolicy(retrain_every=10**9, finetune_epochs=0),
        model=model,
    )
    return model, result.forecasts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-only", action="store_true", help="benchmark 2 only")
    parser.add_argument("--seed-epochs", type=int, default=200, help="epochs of (b) (200)")
    args = parser.parse_args()

    from forecaster.network import device

    candles = seed_period(load_daily())
    close = candles["close"].to_numpy()
    actual = close[N_TRAIN + WINDOW :]  # (248,)
    last = close[N_TRAIN + WINDOW - 1 : -1]
    print(f"# bench/seed.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  device {device()}")
    print(
        f"candles {len(candles)} ({candles.index[0]:%Y-%m-%d} .. {candles.index[-1]:%Y-%m-%d}),"
        f" train windows {N_TRAIN}, test windows {len(actual)}"
    )

    seed_pred, seed_seconds = seed_setup(close, args.seed_epochs)
    model, forecasts = package_default(candles)
    default_pred = forecasts["value"].to_numpy()
    assert np.allclose(forecasts["naive"].to_numpy(), last)
    rows = {"(a) naive": scores(last, actual, last)}
    if not args.speed_only:
        rows[f"(b) seed setup, {args.seed_epochs} epochs"] = scores(seed_pred, actual, last)
        rows["(c) package default"] = scores(default_pred, actual, last)
        print("\nbenchmark 1: test figures (248 daily forecasts, H = 1)")
        naive_rmse = rows["(a) naive"]["rmse"]
        for name, row in rows.items():
            print(
                f"  {name:<32} RMSE ${row['rmse']:>9,.2f} ({row['rmse'] / naive_rmse:.3f}x naive)"
                f"  MAE ${row['mae']:>8,.2f}  MAPE {row['mape']:5.2f}%"
                f"  direction {_share(row['direction'])}"
            )
        inside = (forecasts["lower_80"] <= actual) & (actual <= forecasts["upper_80"])
        inside95 = (forecasts["lower_95"] <= actual) & (actual <= forecasts["upper_95"])
        print(
            f"  (c) interval coverage 80% {inside.mean():.3f}, 95% {inside95.mean():.3f};"
            f" config {model.config}"
        )

    print("\nbenchmark 2: training speed")
    print(
        f"  (b) seed setup: {seed_seconds:8.1f} s for {args.seed_epochs} epochs at batch 7"
        f" (test RMSE ${scores(seed_pred, actual, last)['rmse']:,.2f})"
    )
    print(
        f"  (c) default:    {model.train_seconds_:8.1f} s, {model.epochs_trained_} epochs at"
        f" batch {model.config.batch_size}, best epoch "
        f"{model.validation_metrics_['best_epoch']:.0f} on {model.device_}"
        f" (test RMSE ${scores(default_pred, actual, last)['rmse']:,.2f})"
    )
    print(f"  ratio (c)/(b) = {model.train_seconds_ / seed_seconds:.3f}  (target <= 0.05)")
    bound, gflops = flop_bound_seconds()
    for batch in (7, model.config.batch_size):
        print(f"  LSTM 256, batch {batch:>3}: {seconds_per_epoch(batch):.3f} s/epoch")
    print(f"  FLOP-bound estimate: {bound:.4f} s/epoch at {gflops:.0f} GFLOP/s (measured matmul)")


if __name__ == "__main__":
    main()
