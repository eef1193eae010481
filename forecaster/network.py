"""The Keras 3 network: ``ensemble`` independent LSTM stacks side by side in one model.

Input ``(batch, window, feature)`` (and, for a global model with ``series_embedding``, each
window's series slot ``(batch, 1)``); output ``(batch, ensemble, horizon)``, one forecast per
member, trained against the same targets (the loss is the mean of the members' MSE, so
the members learn independently); the forecast is their mean. The LSTM layers keep the
defaults that let TensorFlow take the cuDNN kernel on a GPU.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from forecaster.config import ForecasterConfig  # noqa: E402
from forecaster.limits import TimeLimit  # noqa: E402

logger = logging.getLogger("forecaster")
# where the NVIDIA driver shows itself on Linux (a container sees them only when given a GPU)
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


def device() -> str:
    """``"GPU"`` when TensorFlow sees a GPU (training and inference run there), else ``"CPU"``."""
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


@dataclass(frozen=True)
class DeviceReport:
    """Where training runs: ``device`` "GPU" or "CPU", the GPUs TensorFlow can use, and with
    none, why not (``reason``, saying what to check)."""

    device: str
    gpus: tuple[str, ...]
    reason: str = ""

    def describe(self) -> str:
        if self.gpus:
            return f"training runs on GPU ({', '.join(self.gpus)})"
        return f"training runs on CPU: {self.reason}"


def device_report() -> DeviceReport:
    """Whether TensorFlow can train on a GPU here: it lists one and a small op runs on it.

    >>> device_report().describe()   # doctest: +SKIP
    'training runs on CPU: no NVIDIA driver is visible here (...)'
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            with tf.device("/GPU:0"):
                float(tf.reduce_sum(tf.ones((2, 2))))
        except (RuntimeError, tf.errors.OpError) as error:
            return DeviceReport(
                "CPU",
                (),
                f"TensorFlow lists {len(gpus)} GPU(s) but cannot "
                f"use them: {type(error).__name__}: {error}",
            )
        return DeviceReport("GPU", tuple(gpu.name for gpu in gpus))
    return DeviceReport("CPU", (), _no_gpu_reason())


def _no_gpu_reason() -> str:
    """Why TensorFlow lists no GPU, as far as this process can tell."""
    if not tf.test.is_built_with_cuda():
        return (
            f"TensorFlow {tf.__version__} is built without CUDA: install "
            "'tensorflow[and-cuda]' (the Dockerfile's gpu target)"
        )
    if not any(os.path.exists(path) for path in NVIDIA_DRIVER_FILES):
        return (
            "no NVIDIA driver is visible here (no /proc/driver/nvidia/version): install the "
            "driver on the host (nvidia-smi must work there) and give the container a GPU "
            "(docker run --gpus all, or the compose service's device reservation, with the "
            "NVIDIA Container Toolkit)"
        )
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU from TensorFlow"
    return (
        "an NVIDIA driver is there but TensorFlow lists no GPU: are its CUDA libraries "
        "installed (pip install 'tensorflow[and-cuda]') and does the driver support CUDA "
        f"{tf.sysconfig.get_build_info().get('cuda_version', '?')}? Run nvidia-smi to check"
    )


def build_network(config: ForecasterConfig, n_features: int, n_series: int = 0) -> keras.Model:
    """A compiled network for ``config``, its initial weights drawn from ``config.seed``.

    ``n_series`` > 0 with ``config.series_embedding`` > 0: a second input, each window's
    series slot (1..n_series; 0 is "a series not trained on"), looked up in a learned
    embedding of that many dimensions and fed to every LSTM beside each step's features.

    Every initializer and dropout layer gets its own seed from a private stream: left
    unseeded, Keras draws them from Python's global ``random``, which any other thread of
    the process (Prefect's among them) may advance between two layers, and the same
    config would then train to different weights.
    """
    compute = "mixed_float16" if config.mixed_precision else "float32"
    seeds = random.Random(config.seed)

    def seed() -> int:
        return seeds.randrange(2**31)

    inputs = keras.Input(shape=(config.window, n_features), name="windows")
    steps, model_inputs = inputs, inputs
    if config.series_embedding and n_series:
        slots = keras.Input(shape=(1,), dtype="int32", name="series")
        embedded = keras.layers.Embedding(
            n_series + 1,
            config.series_embedding,
            embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed()),
            name="series_embedding",
        )(slots)  # (batch, 1, dim)
        repeated = keras.layers.Reshape((config.series_embedding,))(embedded)
        repeated = keras.layers.RepeatVector(config.window)(repeated)  # (batch, window, dim)
        steps = keras.layers.Concatenate(axis=-1, name="steps")([inputs, repeated])
        model_inputs = [inputs, slots]
    members = []
    for member in range(config.ensemble):
        x = steps
        for layer in range(config.layers):
            x = keras.layers.LSTM(
                config.units,
                return_sequences=layer < config.layers - 1,
                kernel_initializer=keras.initializers.GlorotUniform(seed()),
                recurrent_initializer=keras.initializers.Orthogonal(seed=seed()),
                seed=seed(),
                dtype=compute,
                name=f"m{member}_lstm{layer}",
            )(x)
            if config.dropout:
                x = keras.layers.Dropout(
                    config.dropout, seed=seed(), name=f"m{member}_dropout{layer}"
                )(x)
        x = keras.layers.Dense(
            config.horizon,
            kernel_initializer=keras.initializers.GlorotUniform(seed()),
            dtype="float32",
            name=f"m{member}_out",
        )(x)
        members.append(keras.layers.Reshape((1, config.horizon), name=f"m{member}_row")(x))
    outputs = (
        members[0]
        if len(members) == 1
        else keras.layers.Concatenate(axis=1, name="members")(members)
    )  # (batch, ensemble, horizon)
    network = keras.Model(model_inputs, outputs, name="lstm_forecaster")
    optimizer: keras.optimizers.Optimizer = keras.optimizers.Adam(
        learning_rate=config.learning_rate, global_clipnorm=config.clipnorm
    )
    if config.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    network.compile(optimizer=optimizer, loss="mse")
    return network


class CompiledNetworks:
    """Hands out `build_network`'s network for a retrain, reusing the one it handed out last
    when the config and inputs are the same: reset to the initial weights a fresh build draws
    and to a fresh optimizer's state, it trains to the same weights as a fresh network
    (tests/forecaster/test_compiled_networks.py), without tracing Keras's train, validation
    and predict steps again (about 1.4 s a retrain of the daily LSTM on a CPU).

    The network handed out is the caller's only until the next `fresh`, which resets it: for
    retrains whose model is used only through its artifact (a backfill's, `flows.backfill_pool`),
    one per thread.
    """

    def __init__(self) -> None:
        self._key: tuple[ForecasterConfig, int, int] | None = None
        self._network: keras.Model | None = None
        self._optimizer_start: list[np.ndarray] = []

    def fresh(self, config: ForecasterConfig, n_features: int, n_series: int = 0) -> keras.Model:
        """A compiled network for ``config`` in the state `build_network` gives one."""
        key = (config, n_features, n_series)  # a frozen dataclass: compared field by field
        if key != self._key or self._network is None:
            network = build_network(config, n_features, n_series)
            network.optimizer.build(network.trainable_variables)
            self._optimizer_start = [np.array(v) for v in network.optimizer.variables]
            self._key, self._network = key, network
            return network
        network = self._network
        network.set_weights(build_network(config, n_features, n_series).get_weights())
        for variable, start in zip(network.optimizer.variables, self._optimizer_start, strict=True):
            variable.assign(start)
        return network


def member_targets(targets: np.ndarray, ensemble: int) -> np.ndarray:
    """Targets ``(n, horizon)`` repeated for each member: ``(n, ensemble, horizon)``."""
    return np.repeat(targets[:, None, :], ensemble, axis=1)


def forecast(network: keras.Model, inputs: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """The members' mean forecast ``(n, horizon)`` for inputs ``(n, window, feature)``.

    A network with a series embedding takes ``[windows, slots]``.
    """
    outputs = network.predict_on_batch(inputs)  # (n, ensemble, horizon); a compiled step
    return np.asarray(outputs, dtype="float64").mean(axis=1)


def fine_tune(
    network: keras.Model,
    x: np.ndarray | list[np.ndarray],
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    seed: int,
    limit: TimeLimit | None = None,
) -> list[float]:
    """Train ``epochs`` shuffled passes batch by batch; the mean loss of each epoch.

    ``train_on_batch`` reuses the compiled train step, so a daily one-epoch update costs
    milliseconds where ``fit`` would spend most of its time setting up. ``limit`` is checked
    after every batch (`TrainingTimeout`).
    """
    order_rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = order_rng.permutation(len(y))
        total = 0.0
        for first in range(0, len(y), batch_size):
            batch = order[first : first + batch_size]
            inputs = [part[batch] for part in x] if isinstance(x, list) else x[batch]
            total += float(network.train_on_batch(inputs, y[batch])) * len(batch)
            if limit is not None:
                limit.check(f"update epoch {epoch + 1}/{epochs}, batch {first // batch_size + 1}")
        losses.append(total / len(y))
        logger.info(
            "update epoch %d/%d loss %.4f (%.2fs)",
            epoch + 1,
            epochs,
            losses[-1],
            time.perf_counter() - started,
        )
    return losses


def set_learning_rate(network: keras.Model, learning_rate: float) -> None:
    """Change the optimizer's learning rate in place (keeps its compiled train step)."""
    optimizer = network.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    inner.learning_rate.assign(learning_rate)


class EpochLog(keras.callbacks.Callback):
    """One compact line per epoch on the ``forecaster`` logger (INFO; silent unless enabled)."""

    def __init__(self, label: str, epochs: int) -> None:
        super().__init__()
        self.label, self.epochs = label, epochs
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        logs = logs or {}
        losses = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if "loss" in k)
        logger.info(
            "%s epoch %d/%d %s (%.2fs)",
            self.label,
            epoch + 1,
            self.epochs,
            losses,
            time.perf_counter() - self._started,
        )


class StopAtTimeLimit(keras.callbacks.Callback):
    """Ends ``fit`` with a `TrainingTimeout` after the batch during which ``limit`` ran out."""

    def __init__(self, label: str, epochs: int, limit: TimeLimit) -> None:
        super().__init__()
        self.label, self.epochs, self.limit = label, epochs, limit
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.limit.check(f"{self.label} epoch {self._epoch + 1}/{self.epochs}, batch {batch + 1}")
