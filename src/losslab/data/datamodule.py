"""The LightningDataModule over a `TensorData`: Lightning's data convention, tensor slicing kept.

Loaders are `TensorBatches` (slices of tensors already on the training device), not
DataLoaders: per-sample indexing and collation cost more than the model step for these sizes.
The tensors move to the device once, when the first loader is asked for.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from losslab.data.datasets import TensorBatches, TensorData


class TensorDataModule(pl.LightningDataModule):
    """train / val / test loaders of a TensorData; under DDP each rank trains on its own shard."""

    def __init__(self, data: TensorData) -> None:
        super().__init__()
        self.data = data

    def _on_device(self) -> TensorData:
        if self.trainer is not None:
            self.data = self.data.to(self.trainer.strategy.root_device)
        return self.data

    def train_dataloader(self) -> TensorBatches:
        data = self._on_device()
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:  # DDP: each rank trains on its own shard; validation sees the whole set
            rank = self.trainer.global_rank
            w = None if data.w_train is None else data.w_train[rank::world]
            return TensorBatches(
                data.x_train[rank::world], data.y_train[rank::world], w, data.batch_size, shuffle=True
            )
        return data.train_batches()

    def val_dataloader(self) -> TensorBatches:
        return self._on_device().val_batches()

    def test_dataloader(self) -> TensorBatches:
        return self._on_device().test_batches()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # slices of tensors already on the device
