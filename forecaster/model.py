"""`LSTMForecaster`: fit, fine-tune and forecast a windowed LSTM on candles.

>>> model = LSTMForecaster(ForecasterConfig(horizon=3)).fit(candles)   # doctest: +SKIP
>>> model.predict(candles).columns.tolist()                            # doctest: +SKIP
['as_of', 'target_time', 'horizon', 'value', 'lower_80', 'upper_80', 'lower_95', 'upper_95']
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from forecaster import artifact
from forecaster.config import ForecasterConfig
from forecaster.holes import fill_window, find_holes
from forecaster.intervals import residual_quantiles, shrinkage
from forecaster.limits import TimeLimit
from forecaster.network import (
    CompiledNetworks,
    EpochLog,
    StopAtTimeLimit,
    build_network,
    device,
    fine_tune,
    forecast,
    member_targets,
    set_learning_rate,
)
from forecaster.pooled import (
    MIN_SERIES_CALIBRATION,
    SeriesBlocks,
    SeriesCalibration,
    calibrate,
    common_period,
    group_blocks,
    own_slices,
    validation_scores,
)
from forecaster.sampling import EpochDraws, take, validation_rows
from forecaster.state import fitted_state, restore_state
from forecaster.transforms import WindowTransform
from forecaster.validation import as_candles, cut_at, infer_period, require_length, target_times
from forecaster.windowing import (
    block_starts,
    feature_matrix,
    required_columns,
    sliding,
    training_split,
)

logger = logging.getLogger("forecaster")
KIND = "LSTMForecaster"
Candles = pd.DataFrame | pd.Series
# With a series embedding, this share of a global fit's training windows is shown as slot 0,
# "a series not trained on": the slot a new series of the group forecasts with.
UNKNOWN_SLOT_SHARE = 0.125


class LSTMForecaster:
    """A windowed LSTM forecasting ``close`` for t+1..t+horizon, with conformal intervals.

    ``__init__`` only stores the config; everything learned ends in ``_``. After training
    (early-stopped on the newest ``validation_fraction`` of the windows), the validation
    windows calibrate two things per horizon: ``shrinkage_``, the factor in [0, 1] on the
    network's move away from the naive forecast, and ``quantiles_``, the split-conformal
    interval half-widths (scaled by each window's relative volatility at forecast time).

    Holes (missing candle times) are allowed: a window and its targets are always
    ``window + horizon`` consecutive periods inside one contiguous stretch, so training,
    fine-tuning and the calibration use every stretch and never span a hole. A forecast
    whose input window misses a few candles fills them (see `forecaster.holes`: the last
    close carried forward with zero volume, at most ``config.max_filled``, reported in the
    ``filled`` column); more is a `HoleError`. Target times are always as_of + h periods.
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

    def fit(
        self,
        candles: Candles | Mapping[str, Candles],
        *,
        time_limit: float | None = None,
        networks: CompiledNetworks | None = None,
    ) -> LSTMForecaster:
        """Train from scratch on every window of ``candles`` (the newest part validates).

        ``candles`` is one series' candles, or ``{series key: candles}`` of several series
        of one timeframe for one global model (see `forecaster.pooled`): ``series_`` are the
        series trained on, ``skipped_series_`` those with too little history (and why),
        ``calibration_`` says per series whether its intervals are its own or pooled.
        With ``config.series_embedding``, a global model also learns a vector per series
        (a series it was not trained on forecasts with the slot of "any series").
        ``time_limit`` (seconds): checked after every batch, a fit still running then stops
        with a `TrainingTimeout` and the model stays as it was. ``networks``: where the network
        comes from, reset, instead of a new build (the same fit; see `CompiledNetworks` for
        when it may be used).
        """
        limit = TimeLimit.of(time_limit)
        cfg = self.config
        grouped = isinstance(candles, Mapping)
        if grouped:
            frames = self._frames(candles, same_period=False)
            period = common_period(frames)
            parts, skipped = group_blocks(frames, cfg, period)
        else:
            frame = self._candles(candles, same_period=False)
            require_length(frame, cfg.window + cfg.horizon, "fitting (window + horizon)")
            period = infer_period(frame.index)
            try:
                parts, skipped = [self._one_series(frame, period)], {}
            except ValueError as error:
                raise ValueError(f"{error}{_holes_note(frame.index, period)}") from None
        train = np.concatenate([part.train for part in parts])  # (n, L, feature)
        validation = np.concatenate([part.validation for part in parts])  # (n_val, L, feature)
        transform = WindowTransform.fit(train, cfg.window, cfg.target, cfg.features)
        x_train, y_train = (
            transform.inputs(train[:, : cfg.window]),
            transform.targets(train, cfg.window),
        )
        x_val, y_val = (
            transform.inputs(validation[:, : cfg.window]),
            transform.targets(validation, cfg.window),
        )
        n_slots = len(parts) if grouped and cfg.series_embedding else 0
        if n_slots:
            slots = _slots([len(part.train) for part in parts])
            unknown = np.random.default_rng(cfg.seed).random(len(slots)) < UNKNOWN_SLOT_SHARE
            x_train = _with_slots(x_train, np.where(unknown, 0, slots))
            x_val = _with_slots(x_val, _slots([len(part.validation) for part in parts]))

        keras.utils.set_random_seed(cfg.seed)  # the order fit shuffles the windows in
        network = (networks.fresh if networks else build_network)(cfg, train.shape[2], n_slots)
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.patience, restore_best_weights=True
        )
        started = time.perf_counter()
        data, watched = self._epochs(x_train, y_train, x_val, y_val)
        history = network.fit(
            **data,
            validation_data=watched,
            epochs=cfg.max_epochs,
            verbose=0,
            callbacks=[stopper, EpochLog("fit", cfg.max_epochs)]
            + ([StopAtTimeLimit("fit", cfg.max_epochs, limit)] if limit else []),
        )
        self.train_seconds_ = time.perf_counter() - started

        self.network_ = network
        self.transform_ = transform
        self.period_ = period
        self.training_range_ = (min(part.first for part in parts), max(part.last for part in parts))
        self.n_windows_ = sum(part.n_windows for part in parts)
        self.device_ = device()
        self.history_ = {k: [float(x) for x in v] for k, v in history.history.items()}
        self.epochs_trained_ = len(self.history_["loss"])
        self._calibrate(parts, validation, x_val, y_val, stopper, grouped=grouped)
        self.skipped_series_ = skipped
        logger.info(
            "fitted on %d windows (%s .. %s) in %.1fs on %s, %d epochs, validation %s",
            self.n_windows_,
            *self.training_range_,
            self.train_seconds_,
            self.device_,
            self.epochs_trained_,
            " ".join(f"{k} {v:.4g}" for k, v in self.validation_metrics_.items()),
        )
        return self

    def _epochs(
        self, x_train: Any, y_train: np.ndarray, x_val: Any, y_val: np.ndarray
    ) -> tuple[dict[str, Any], tuple[Any, np.ndarray]]:
        """``fit``'s training data and the validation windows early stopping watches.

        Every window each epoch; with ``config.steps_per_epoch``, that many batches drawn
        across all of them and a fixed sample of validation windows (`forecaster.sampling`).
        """
        cfg = self.config
        targets = member_targets(y_train, cfg.ensemble)
        if cfg.steps_per_epoch is None:
            data = {"x": x_train, "y": targets, "batch_size": cfg.batch_size, "shuffle": True}
            return data, (x_val, member_targets(y_val, cfg.ensemble))
        draws = EpochDraws(x_train, targets, cfg.batch_size, cfg.steps_per_epoch, cfg.seed)
        rows = validation_rows(len(y_val), cfg.steps_per_epoch * cfg.batch_size, cfg.seed)
        # shuffle=False: the draws are in a seeded random order already; Keras would shuffle a
        # PyDataset's batches with Python's global `random`, which other threads (Prefect's)
        # advance, and the same fit came out otherwise now and then
        data = {"x": draws, "shuffle": False}
        return data, (take(x_val, rows), member_targets(y_val[rows], cfg.ensemble))

    def _one_series(self, frame: pd.DataFrame, period: pd.Timedelta | None) -> SeriesBlocks:
        """The training and validation blocks of a single series (the single-series fit)."""
        cfg = self.config
        starts = block_starts(frame.index, period, cfg.window + cfg.horizon)
        train_at, validation_at = training_split(
            starts, cfg.window, cfg.horizon, cfg.validation_fraction
        )
        raw = feature_matrix(frame, cfg.features, cfg.target)  # (time, feature)
        blocks = sliding(raw, cfg.window + cfg.horizon)  # (time - L + 1, L, feature)
        return SeriesBlocks(
            "",
            blocks[train_at],
            blocks[validation_at],
            len(starts),
            frame.index[0],
            frame.index[-1],
        )

    def _calibrate(
        self,
        parts: list[SeriesBlocks],
        validation: np.ndarray,
        x_val: np.ndarray | list[np.ndarray],
        y_val: np.ndarray,
        stopper: keras.callbacks.EarlyStopping,
        grouped: bool,
    ) -> None:
        """Pooled shrinkage and intervals; a group's series also get their own where they can."""
        cfg, transform = self.config, self.transform_
        windows = validation[:, : cfg.window]  # (n_val, window, feature)
        raw = forecast(self.network_, x_val)  # (n_val, horizon)
        anchor, spread = transform.anchor(windows), transform.spread(windows)
        pooled = calibrate(raw, y_val, anchor, spread, cfg.interval_levels)
        self.shrinkage_, self.quantiles_ = pooled.shrinkage, pooled.quantiles
        self.series_ = tuple(part.key for part in parts) if grouped else ()
        self.series_calibration_: dict[str, SeriesCalibration] = {}
        self.calibration_: dict[str, str] = {}
        self.series_metrics_: dict[str, dict[str, float]] = {}
        scaled = anchor + pooled.shrinkage * (raw - anchor)
        best_epoch = stopper.best_epoch + 1
        self.validation_metrics_ = validation_scores(
            transform, scaled, y_val, validation, pooled.shrinkage, best_epoch, relative=grouped
        )
        if not grouped:
            return
        slices = own_slices(parts)
        counts = {part.key: len(part.validation) for part in parts}
        factors = {
            key: shrinkage(raw[rows], y_val[rows], anchor[rows])
            if counts[key] >= MIN_SERIES_CALIBRATION
            else pooled.shrinkage
            for key, rows in slices.items()
        }
        # every row shrunk by its series' factor; the shared intervals come from them all
        own_scaled = np.empty_like(scaled)  # (n_val, horizon)
        for key, rows in slices.items():
            own_scaled[rows] = anchor[rows] + factors[key] * (raw[rows] - anchor[rows])
        scores = (own_scaled - y_val) / spread[:, None]  # (n_val, horizon)
        shared = residual_quantiles(scores, cfg.interval_levels)
        for key, rows in slices.items():
            if counts[key] < MIN_SERIES_CALIBRATION:
                chosen, self.calibration_[key] = pooled, "pooled"
            elif counts[key] < cfg.series_interval_windows and len(parts) > 1:
                chosen = SeriesCalibration(factors[key], shared)
                self.calibration_[key] = "pooled intervals"
            else:
                chosen = SeriesCalibration(
                    factors[key], residual_quantiles(scores[rows], cfg.interval_levels)
                )
                self.calibration_[key] = "series"
            if chosen is not pooled:
                self.series_calibration_[key] = chosen
            self.series_metrics_[key] = validation_scores(
                transform,
                own_scaled[rows],
                y_val[rows],
                validation[rows],
                chosen.shrinkage,
                best_epoch,
            )

    def update(
        self,
        candles: Candles | Mapping[str, Candles],
        epochs: int | None = None,
        learning_rate: float | None = None,
        *,
        time_limit: float | None = None,
    ) -> LSTMForecaster:
        """Fine-tune from the current weights on the newest ``finetune_windows`` windows.

        The fitted transform and intervals stay as they are; ``epochs`` and the learning rate
        default to ``config.finetune_epochs`` and ``config.finetune_learning_rate``.
        ``update_windows_`` is how many windows it used (fewer than ``finetune_windows`` on a short
        or holed history), ``last_update_loss_`` its last epoch's training loss. Given ``{series
        key: candles}``, it takes each series' newest windows (a series new to the model too; one
        without a window is left out) and trains on them together: with N =
        ``config.group_finetune_windows`` (by default ``finetune_windows``), the newest N // k
        windows of each of the k series (at least one, at most ``finetune_windows``). ``time_limit``
        (seconds) bounds it as it bounds `fit`; a fine-tune stopped by it leaves the network part-
        trained: load the model again.
        """
        limit = TimeLimit.of(time_limit)
        self._check_fitted()
        if epochs is None:
            epochs = self.config.finetune_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
        if learning_rate is not None and not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        cfg = self.config
        length = cfg.window + cfg.horizon
        if isinstance(candles, Mapping):
            frames = self._frames(candles)
            budget = cfg.group_finetune_windows or cfg.finetune_windows
            each = max(1, min(cfg.finetune_windows, budget // len(frames)))
            recent = {key: self._recent_blocks(frame, each) for key, frame in frames.items()}
            recent = {key: blocks for key, blocks in recent.items() if len(blocks)}
            if not recent:
                raise ValueError(
                    f"no series has {length} consecutive candles (window + horizon) to "
                    f"fine-tune on ({', '.join(frames)})"
                )
            blocks = np.concatenate(list(recent.values()))  # (n, window + horizon, feature)
            slots = np.concatenate([np.full(len(b), self._slot(key)) for key, b in recent.items()])
            newest = max(frames[key].index[-1] for key in recent)
            self.update_series_ = tuple(recent)
        else:
            frame = self._candles(candles)
            require_length(frame, length, "fine-tuning (window + horizon)")
            blocks = self._recent_blocks(frame, cfg.finetune_windows)
            if len(blocks) == 0:
                raise ValueError(
                    f"no {length} consecutive candles (window + horizon) to fine-tune on"
                    f"{_holes_note(frame.index, self.period_)}"
                )
            slots = np.zeros(len(blocks))
            newest = frame.index[-1]
        if epochs == 0:
            return self
        self.update_windows_ = len(blocks)
        x = self._inputs(blocks[:, : cfg.window], slots)
        y = member_targets(self.transform_.targets(blocks, cfg.window), cfg.ensemble)
        set_learning_rate(self.network_, learning_rate or cfg.finetune_learning_rate)
        losses = self.history_.setdefault("finetune_loss", [])
        started = time.perf_counter()
        losses += fine_tune(
            self.network_, x, y, epochs, cfg.batch_size, cfg.seed + len(losses), limit
        )
        self.last_update_loss_ = losses[-1]
        self.train_seconds_ += time.perf_counter() - started
        first, last = self.training_range_
        self.training_range_ = (first, max(last, newest))
        return self

    def _recent_blocks(self, frame: pd.DataFrame, count: int) -> np.ndarray:
        """The newest ``count`` blocks ``(n, window + horizon, feature)`` of a series."""
        cfg = self.config
        length = cfg.window + cfg.horizon
        starts = block_starts(frame.index, self.period_, length)[-count:]
        if len(starts) == 0:
            return np.zeros((0, length, len(cfg.features)))
        recent = frame.iloc[starts[0] :]  # the newest windows' candles
        return sliding(feature_matrix(recent, cfg.features, cfg.target), length)[starts - starts[0]]

    # forecasting ------------------------------------------------------------------------

    def predict(
        self,
        candles: Candles,
        as_of: Any = None,
        max_filled: int | None = None,
        series: str | None = None,
    ) -> pd.DataFrame:
        """Forecasts for as_of + 1..horizon periods, using candles up to ``as_of`` only.

        ``as_of`` defaults to the last candle. Columns: as_of, target_time, horizon, value,
        lower_/upper_ bounds for each interval level, and ``filled``: how many of the
        window's candles were missing and filled (at most ``max_filled``, by default
        ``config.max_filled``; more is a `HoleError`). ``series``: whose candles these are,
        for a global model's per-series calibration (unknown or None: the pooled one).
        """
        self._check_fitted()
        cfg = self.config
        frame = self._candles(cut_at(candles, as_of))
        require_length(frame, 1, "a forecast")
        limit = cfg.max_filled if max_filled is None else max_filled
        recent, filled = fill_window(frame, self.period_, cfg.window, limit)
        windows = sliding(
            feature_matrix(recent, cfg.features, cfg.target), cfg.window
        )  # (1, window, feature)
        calibration = self.calibration_for(series)
        scaled = self._calibrated(
            windows, calibration.shrinkage, np.array([self._slot(series)])
        )  # (1, horizon)
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
            q = calibration.quantiles[level] * spread
            result[lower] = self.transform_.to_price(scaled - q, windows)[0]
            result[upper] = self.transform_.to_price(scaled + q, windows)[0]
        result["filled"] = filled
        return result

    # storage ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The model as one checksummed artifact (``.keras`` file + JSON metadata)."""
        self._check_fitted()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            self.network_.save(path)
            model_bytes = path.read_bytes()
        return artifact.pack(model_bytes, {"kind": KIND, **fitted_state(self)})

    @classmethod
    def from_bytes(cls, blob: bytes, source: str = "artifact") -> LSTMForecaster:
        """Rebuild a model from `to_bytes`; ArtifactError when corrupted or mismatched."""
        model_bytes, meta = artifact.unpack(blob, KIND, source)
        try:
            model = cls(ForecasterConfig.from_dict(meta["config"]))
            restore_state(model, meta)
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
        shape = tuple(model.network_.inputs[0].shape)
        if shape != expected:
            raise artifact.ArtifactError(
                f"{source}: network input {shape} does not match the config's {expected}"
            )
        if model.embedded_:
            rows = model.network_.get_layer("series_embedding").input_dim
            if rows != len(model.series_) + 1:
                raise artifact.ArtifactError(
                    f"{source}: the series embedding has {rows} rows but the metadata names "
                    f"{len(model.series_)} series (one row each, and one for any other series)"
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

    def _frames(
        self, candles: Mapping[str, Candles], same_period: bool = True
    ) -> dict[str, pd.DataFrame]:
        """Each series' checked candles; a ValueError names the series."""
        if not candles:
            raise ValueError("no series given: pass {series key: candles} of one series at least")
        frames = {}
        for key, one in candles.items():
            try:
                frames[str(key)] = self._candles(one, same_period)
            except ValueError as error:
                raise ValueError(f"{key}: {error}") from None
        return frames

    def _candles(self, candles: Candles, same_period: bool = True) -> pd.DataFrame:
        frame = as_candles(candles, required_columns(self.config.features))
        period = infer_period(frame.index)
        known = getattr(self, "period_", None) if same_period else None
        if known is not None and period is not None and period != known:
            raise ValueError(
                f"candles are spaced {period} apart but the model was trained on {known} candles; "
                "pass candles of the series it was trained on"
            )
        return frame

    @property
    def embedded_(self) -> bool:
        """Whether the network learned a vector per series (a second input: the slot)."""
        return len(self.network_.inputs) > 1

    def _slot(self, series: str | None) -> int:
        """``series``' row in the embedding: 1 + its place in ``series_``, 0 when unknown."""
        return self.series_.index(series) + 1 if series in self.series_ else 0

    def _inputs(self, windows: np.ndarray, slots: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Network inputs for raw windows: ``[(n, window, feature), (n, 1)]`` when embedded."""
        x = self.transform_.inputs(windows)
        return _with_slots(x, slots) if self.embedded_ else x

    def calibration_for(self, series: str | None) -> SeriesCalibration:
        """The shrinkage and intervals ``series`` forecasts with: its own, or the pooled ones."""
        own = getattr(self, "series_calibration_", {}).get(series) if series else None
        return own or SeriesCalibration(self.shrinkage_, self.quantiles_)

    def _calibrated(self, windows: np.ndarray, factor: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Scaled forecasts ``(n, horizon)``: the network's, shrunk toward naive by ``factor``."""
        raw = forecast(self.network_, self._inputs(windows, slots))
        anchor = self.transform_.anchor(windows)
        return anchor + factor * (raw - anchor)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("this LSTMForecaster is not fitted yet; call fit(candles) first")


def _slots(counts: list[int]) -> np.ndarray:
    """Slot 1 for the first series' ``counts[0]`` windows, 2 for the next series', ..."""
    return np.repeat(np.arange(1, len(counts) + 1), counts)


def _with_slots(x: np.ndarray, slots: np.ndarray) -> list[np.ndarray]:
    """The two inputs of an embedded network: windows and each window's series slot ``(n, 1)``."""
    return [x, np.asarray(slots, dtype="int32")[:, None]]


def _holes_note(index: pd.DatetimeIndex, period: pd.Timedelta | None) -> str:
    """`` (the candles have N holes: ...)`` for an error message, or nothing."""
    holes = find_holes(index, period)
    if not holes:
        return ""
    shown = ", ".join(str(hole) for hole in holes[:3])
    more = f" and {len(holes) - 3} more" if len(holes) > 3 else ""
    return f" (the candles have {len(holes)} hole(s): {shown}{more}; windows never span a hole)"
