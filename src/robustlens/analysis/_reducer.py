"""The streaming-reducer protocol every analysis follows.

A reducer keeps only running sums: ``update(...)`` adds a batch, ``merge(other)`` adds
another reducer's sums (from more batches, a resumed run or another worker), and
``result()`` returns a tidy DataFrame. The result is the same however the data was split.
``state_dict()`` / ``load_state_dict()`` give the sums as plain tensors for checkpoints.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

import pandas as pd
import torch


@runtime_checkable
class Reducer(Protocol):
    def merge(self, other: Self) -> Self: ...

    def result(self) -> pd.DataFrame: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...
