"""The JSON metadata of a fitted `LSTMForecaster`: everything it learned besides the weights.

`fitted_state` writes it into an artifact (`forecaster.artifact.pack`), `restore_state` sets
the fitted attributes back. Keys a newer model added are optional on reading, so artifacts
of older versions still load: ``series`` (a global model's series, empty for one series),
``skipped_series``, ``calibration``, ``series_calibration``, ``series_metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.pooled import SeriesCalibration
from forecaster.transforms import WindowTransform

if TYPE_CHECKING:
    from forecaster.model import LSTMForecaster


def fitted_state(model: LSTMForecaster) -> dict[str, Any]:
    """The model's config and fitted attributes as a JSON-ready dict (weights excluded)."""
    import keras
    import tensorflow as tf

    from forecaster import __version__

    return {
        "config": model.config.to_dict(),
        "transform": model.transform_.to_state(),
        "quantiles": {str(level): q.tolist() for level, q in model.quantiles_.items()},
        "shrinkage": model.shrinkage_.tolist(),
        "period_ns": int(model.period_.value),
        "training_range": [t.isoformat() for t in model.training_range_],
        "n_windows": model.n_windows_,
        "device": model.device_,
        "train_seconds": model.train_seconds_,
        "epochs_trained": model.epochs_trained_,
        "validation_metrics": model.validation_metrics_,
        "history": model.history_,
        "series": list(model.series_),
        "skipped_series": model.skipped_series_,
        "calibration": model.calibration_,
        "series_calibration": {
            key: own.to_state() for key, own in model.series_calibration_.items()
        },
        "series_metrics": model.series_metrics_,
        "versions": {
            "forecaster": __version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }


def restore_state(model: LSTMForecaster, meta: dict[str, Any]) -> None:
    """Set the fitted attributes from `fitted_state` output; KeyError/ValueError on a mismatch."""
    model.transform_ = WindowTransform.from_state(meta["transform"])
    model.quantiles_ = {
        float(level): np.asarray(q, dtype="float64") for level, q in meta["quantiles"].items()
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
    model.series_ = tuple(meta.get("series", ()))
    model.skipped_series_ = dict(meta.get("skipped_series", {}))
    model.calibration_ = dict(meta.get("calibration", {}))
    model.series_calibration_ = {
        key: SeriesCalibration.from_state(state)
        for key, state in meta.get("series_calibration", {}).items()
    }
    model.series_metrics_ = dict(meta.get("series_metrics", {}))
