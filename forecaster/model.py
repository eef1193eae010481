"""`LSTMForecaster`: fit, fine-tune and forecast a windowed LSTM on candles.

>>> model = LSTMForecaster(ForecasterConfig(horizon=3)).fit(candles)   # doctest: +SKIP
>>> model.predict(candles).columns.tolist()                            # doctest: +SKIP
['as_of', 'target_time', 'horizon', 'value', 'lower_80', 'upper_80', 'lower_95', 'upper_95']
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from forecaster import artifact
from forecaster.config import ForecasterConfig
from forecaster.intervals import residual_quantiles, shrinkage
from forecaster.network import (
    EpochLog,
    build_network,
    device,
    fine_tune,
    forecast,
    member_targets,
    set_learning_rate,
)
from forecaster.transforms import WindowTransform
from forecaster.validation import as_candles, cut_at, infer_period, require_length, target_times
from forecaster.windowing import feature_matrix, required_columns, sliding, split_counts

logger = logging.getLogger("forecaster")
KIND = "LSTMForecaster"


class LSTMForecaster:
    """A windowed LSTM forecasting ``close`` for t+1..t+horizon, with conformal intervals.

    ``__init__`` only stores the config; everything learned ends in ``_``. After training
    (early-stopped on the newest ``validation_fraction`` of the windows), the validation
    windows calibrate two things per horizon: ``shrinkage_``, the factor in [0, 1] on the
    network's move away from the naive forecast, and ``quantiles_``, the split-conformal
    interval half-widths (scaled by each window's relative volatility at forecast time).
    """

    def __init__(self, config: ForecasterConfig | None = None) -> None:
        if config is not None and not isinstance(config, ForecasterConfig):
            raise TypeError(f"config must be a ForecasterConfig, got {type(config).__name__}")
        self.config = config if config is not None else ForecasterConfig()

    def __repr__(self) -> str:
        fitted = f", trained on {self.training_range_}" if self.is_fitted else ""
        return f"LSTMForecaster({self.config}{fitted})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "network_")

    # training ---------------------------------------------------------------------------

    def fit(self, candles: pd.DataFrame | pd.Series) -> LSTMForecaster:
        """Train from scratch on every window of ``candles`` (the newest part validates)."""
        cfg = self.config
        frame = self._candles(candles, same_period=False)
        require_length(frame, cfg.window + cfg.horizon, "fitting (window + horizon)")
        raw = feature_matrix(frame, cfg.features, cfg.target)  # (time, feature)
        blocks = sliding(raw, cfg.window + cfg.horizon)  # (n, window + horizon, feature)
        n_train, n_validation = split_counts(len(blocks), cfg.validation_fraction, cfg.horizon)
        train, validation = blocks[:n_train], blocks[-n_validation:]
        transform = WindowTransform.fit(train, cfg.window, cfg.target, cfg.features)
        x_train, y_train = transform.inputs(train[:, : cfg.window]), transform.targets(
            train, cfg.window
        )
        x_val, y_val = transform.inputs(validation[:, : cfg.window]), transform.targets(
            validation, cfg.window
        )

        keras.utils.set_random_seed(cfg.seed)  # the order fit shuffles the windows in
        network = build_network(cfg, raw.shape[1])
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.patience, restore_best_weights=True
        )
        started = time.perf_counter()
        history = network.fit(
            x_train,
            member_targets(y_train, cfg.ensemble),
            validation_data=(x_val, member_targets(y_val, cfg.ensemble)),
            epochs=cfg.max_epochs,
            batch_size=cfg.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[stopper, EpochLog("fit", cfg.max_epochs)],
        )
        self.train_seconds_ = time.perf_counter() - started

        self.network_ = network
        self.transform_ = transform
        self.period_ = infer_period(frame.index)
        self.training_range_ = (frame.index[0], frame.index[-1])
        self.n_windows_ = len(blocks)
        self.device_ = device()
        self.history_ = {k: [float(x) for x in v] for k, v in history.history.items()}
        self.epochs_trained_ = len(self.history_["loss"])
        raw = forecast(network, x_val)  # (n_validation, horizon)
        windows = validation[:, : cfg.window]
        anchor = transform.anchor(windows)
        self.shrinkage_ = shrinkage(raw, y_val, anchor)  # (horizon,)
        scaled = anchor + self.shrinkage_ * (raw - anchor)
        scores = (scaled - y_val) / transform.spread(windows)[:, None]
        self.quantiles_ = residual_quantiles(scores, cfg.interval_levels)
        self.validation_metrics_ = self._validation_metrics(scaled, y_val, validation, stopper)
        logger.info(
            "fitted on %d windows (%s .. %s) in %.1fs on %s, %d epochs, validation %s",
            self.n_windows_, *self.training_range_, self.train_seconds_, self.device_,
            self.epochs_trained_,
            " ".join(f"{k} {v:.4g}" for k, v in self.validation_metrics_.items()),
        )
        return self

    def update(
        self,
        candles: pd.DataFrame | pd.Series,
        epochs: int = 5,
        learning_rate: float | None = None,
    ) -> LSTMForecaster:
        """Fine-tune from the current weights on the newest ``finetune_windows`` windows.

        The fitted transform and intervals stay as they are; the learning rate defaults
        to ``config.finetune_learning_rate``.
        """
        self._check_fitted()
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
        if learning_rate is not None and not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        cfg = self.config
        frame = self._candles(candles)
        length = cfg.window + cfg.horizon
        require_length(frame, length, "fine-tuning (window + horizon)")
        if epochs == 0:
            return self
        recent = frame.iloc[-(cfg.finetune_windows + length - 1) :]
        blocks = sliding(feature_matrix(recent, cfg.features, cfg.target), length)
        x = self.transform_.inputs(blocks[:, : cfg.window])
        y = member_targets(self.transform_.targets(blocks, cfg.window), cfg.ensemble)
        set_learning_rate(self.network_, learning_rate or cfg.finetune_learning_rate)
        losses = self.history_.setdefault("finetune_loss", [])
        started = time.perf_counter()
        losses += fine_tune(self.network_, x, y, epochs, cfg.batch_size, cfg.seed + len(losses))
        self.train_seconds_ += time.perf_counter() - started
        first, last = self.training_range_
        self.training_range_ = (first, max(last, frame.index[-1]))
        return self

    # forecasting ------------------------------------------------------------------------

    def predict(self, candles: pd.DataFrame | pd.Series, as_of: Any = None) -> pd.DataFrame:
        """Forecasts for as_of + 1..horizon periods, using candles up to ``as_of`` only.

        ``as_of`` defaults to the last candle. Columns: as_of, target_time, horizon, value
        and lower_/upper_ bounds for each interval level.
        """
        self._check_fitted()
        cfg = self.config
        frame = self._candles(cut_at(candles, as_of))
        require_length(frame, cfg.window, "a forecast (window)")
        windows = sliding(feature_matrix(frame.iloc[-cfg.window :], cfg.features, cfg.target),
                          cfg.window)  # (1, window, feature)
        scaled = self._calibrated(windows)  # (1, horizon)
        spread = self.transform_.spread(windows)[:, None]
        as_of_time = frame.index[-1]
        horizons = np.arange(1, cfg.horizon + 1)
        result = pd.DataFrame(
            {
                "as_of": as_of_time,
                "target_time": target_times(as_of_time, horizons, self.period_, frame.index),
                "horizon": horizons,
                "value": self.transform_.to_price(scaled, windows)[0],
            }
        )
        for level, lower, upper in cfg.interval_names:
            q = self.quantiles_[level] * spread
            result[lower] = self.transform_.to_price(scaled - q, windows)[0]
            result[upper] = self.transform_.to_price(scaled + q, windows)[0]
        return result

    # storage ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The model as one checksummed artifact (``.keras`` file + JSON metadata)."""
        self._check_fitted()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            self.network_.save(path)
            model_bytes = path.read_bytes()
        return artifact.pack(model_bytes, self._metadata())

    @classmethod
    def from_bytes(cls, blob: bytes, source: str = "artifact") -> LSTMForecaster:
        """Rebuild a model from `to_bytes`; ArtifactError when corrupted or mismatched."""
        model_bytes, meta = artifact.unpack(blob, KIND, source)
        try:
            model = cls(ForecasterConfig.from_dict(meta["config"]))
            model.transform_ = WindowTransform.from_state(meta["transform"])
            model.quantiles_ = {
                float(level): np.asarray(q, dtype="float64")
                for level, q in meta["quantiles"].items()
            }
            model.shrinkage_ = np.asarray(meta["shrinkage"], dtype="float64")
            model.period_ = pd.Timedelta(int(meta["period_ns"]), unit="ns")
            model.training_range_ = tuple(pd.Timestamp(t) for t in meta["training_range"])
            model.n_windows_ = int(meta["n_windows"])
            model.device_ = str(meta["device"])
            model.train_seconds_ = float(meta["train_seconds"])
            model.epochs_trained_ = int(meta["epochs_trained"])
            model.validation_metrics_ = {k: float(v) for k, v in meta["validation_metrics"].items()}
            model.history_ = meta["history"]
        except (KeyError, TypeError, ValueError) as error:
            raise artifact.ArtifactError(f"{source}: metadata does not match ({error})") from error
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            path.write_bytes(model_bytes)
            try:
                model.network_ = keras.saving.load_model(path)
            except Exception as error:  # Keras raises many types for a bad file
                raise artifact.ArtifactError(
                    f"{source}: the Keras model does not load ({type(error).__name__}: {error})"
                ) from error
        cfg = model.config
        expected = (None, cfg.window, len(cfg.features))
        if tuple(model.network_.input_shape) != expected:
            raise artifact.ArtifactError(
                f"{source}: network input {model.network_.input_shape} does not match the "
                f"config's {expected}"
            )
        return model

    def save(self, path: str | Path) -> Path:
        """Write `to_bytes` to ``path`` (any suffix; ``.lstm.zip`` reads well)."""
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> LSTMForecaster:
        """Read a file written by `save`; ArtifactError when it is corrupted."""
        return cls.from_bytes(Path(path).read_bytes(), source=str(path))

    # helpers ----------------------------------------------------------------------------

    def _candles(
        self, candles: pd.DataFrame | pd.Series, same_period: bool = True
    ) -> pd.DataFrame:
        frame = as_candles(candles, required_columns(self.config.features))
        period = infer_period(frame.index)
        known = getattr(self, "period_", None) if same_period else None
        if known is not None and period is not None and period != known:
            raise ValueError(
                f"candles are spaced {period} apart but the model was trained on {known} candles; "
                "pass candles of the series it was trained on"
            )
        return frame

    def _calibrated(self, windows: np.ndarray) -> np.ndarray:
        """Scaled forecasts ``(n, horizon)``: the network's, shrunk toward naive."""
        raw = forecast(self.network_, self.transform_.inputs(windows))
        anchor = self.transform_.anchor(windows)
        return anchor + self.shrinkage_ * (raw - anchor)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("this LSTMForecaster is not fitted yet; call fit(candles) first")

    def _validation_metrics(
        self,
        scaled: np.ndarray,
        y_val: np.ndarray,
        validation: np.ndarray,
        stopper: keras.callbacks.EarlyStopping,
    ) -> dict[str, float]:
        """Loss (scaled space) and price RMSE/MAE against naive on the validation windows."""
        window = self.config.window
        transform = self.transform_
        predicted = transform.to_price(scaled, validation[:, :window])  # (n, horizon)
        raw_future = validation[:, window:, 0]
        actual = np.exp(raw_future) if transform.target == "logreturn" else raw_future
        naive = transform.last_close(validation[:, :window])[:, None]
        rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
        naive_rmse = float(np.sqrt(np.mean((naive - actual) ** 2)))
        return {
            "loss": float(np.mean((scaled - y_val) ** 2)),
            "rmse": rmse,
            "mae": float(np.mean(np.abs(predicted - actual))),
            "naive_rmse": naive_rmse,
            "skill": 1.0 - rmse / naive_rmse if naive_rmse > 0 else float("nan"),
            "shrinkage": float(self.shrinkage_.mean()),
            "best_epoch": float(stopper.best_epoch + 1),
            "n_windows": float(len(validation)),
        }

    def _metadata(self) -> dict[str, Any]:
        import tensorflow as tf

        from forecaster import __version__

        return {
            "kind": KIND,
            "config": self.config.to_dict(),
            "transform": self.transform_.to_state(),
            "quantiles": {str(level): q.tolist() for level, q in self.quantiles_.items()},
            "shrinkage": self.shrinkage_.tolist(),
            "period_ns": int(self.period_.value),
            "training_range": [t.isoformat() for t in self.training_range_],
            "n_windows": self.n_windows_,
            "device": self.device_,
            "train_seconds": self.train_seconds_,
            "epochs_trained": self.epochs_trained_,
            "validation_metrics": self.validation_metrics_,
            "history": self.history_,
            "versions": {
                "forecaster": __version__,
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
                "numpy": np.__version__,
                "pandas": pd.__version__,
            },
        }
