"""A fit's epochs of a fixed number of batches, drawn across every training window.

With ``config.steps_per_epoch`` set, an epoch is ``steps_per_epoch`` batches drawn without
replacement from all the training windows (every series' and every time's), a new draw each
epoch, seeded: the same windows and seed give the same epochs, so a walk-forward and a
backfill fit the same model. The cost of an epoch stays the same however many series and
candles feed it, while every window can be drawn. Early stopping then watches a fixed
seeded sample of at most ``steps_per_epoch * batch_size`` validation windows (the same one
every epoch); the calibration still uses every validation window, once.

>>> epochs = EpochDraws(np.arange(10.0)[:, None], np.arange(10.0), 2, 3, seed=0)
>>> len(epochs), len(set(np.concatenate([epochs[i][1] for i in range(len(epochs))])))
(3, 6)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

Arrays = np.ndarray | list[np.ndarray]


def take(arrays: Arrays, rows: np.ndarray) -> Arrays:
    """``rows`` of an array, or of each array of a list (a network's several inputs)."""
    if isinstance(arrays, list):
        return [array[rows] for array in arrays]
    return arrays[rows]


def row_count(arrays: Arrays) -> int:
    return len(arrays[0]) if isinstance(arrays, list) else len(arrays)


def validation_rows(n: int, count: int, seed: int) -> np.ndarray:
    """The ``min(n, count)`` of ``n`` validation windows early stopping watches (seeded)."""
    if count >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(n, size=count, replace=False))


class EpochDraws(keras.utils.PyDataset):
    """Batches of ``(x, y)`` for `keras.Model.fit`: ``steps`` a epoch, a fresh draw each epoch.

    ``x``: ``(n, window, feature)`` or a list of such inputs; ``y``: the targets ``(n, ...)``.
    Within an epoch no window repeats; fewer windows than ``steps * batch_size`` make every
    window one epoch, shuffled.
    """

    def __init__(self, x: Arrays, y: np.ndarray, batch_size: int, steps: int, seed: int) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        self.epoch = 0
        self._order = self._draw()

    def _draw(self) -> np.ndarray:
        n = row_count(self.x)
        rng = np.random.default_rng([self.seed, 0, self.epoch])
        size = min(n, self.steps * self.batch_size)
        return rng.choice(n, size=size, replace=False)

    def __len__(self) -> int:
        return -(-len(self._order) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[Any, np.ndarray]:
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        inputs = take(self.x, rows)
        # several inputs as a tuple: Keras makes a PyDataset's batches a tf.data signature,
        # which takes no list (a global model with a series embedding failed to fit)
        return (tuple(inputs) if isinstance(inputs, list) else inputs), self.y[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._draw()
