"""Test-only callback for tests/training/test_ddp.py, importable in every rank Lightning launches
(PYTHONPATH=tests/training): ``+callbacks.ddp_probe._target_=ddp_probe.DDPProbe``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytorch_lightning as pl
import torch


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        sha.update(name.encode())
        sha.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


class DDPProbe(pl.Callback):
    """Test-only: records, per rank, a digest of ActNorm's data initialisation (taken before DDP
    wraps the model and broadcasts rank 0's state, so each rank's own initialisation is seen), of
    every parameter and buffer after the first optimizer step (with all ranks' float checksums
    all-gathered through the strategy), the dequantisation generator's state when training starts
    and the sample indices of every training batch."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {"batches": {}}

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Callbacks' setup runs just before the module's setup, which initialises ActNorm.
        net, initialize = pl_module.net, pl_module.net.initialize

        def initialize_and_record(x: torch.Tensor) -> None:
            initialize(x)
            state = {k: v for k, v in net.state_dict().items() if ".actnorm." in k}
            self.record["actnorm_init"] = _digest(state)
            self.record["actnorm_initialized"] = net.actnorm_initialized()

        net.initialize = initialize_and_record

    def on_train_start(self, trainer, pl_module) -> None:
        state = pl_module._noise_generator().get_state()
        self.record["noise_state_at_start"] = hashlib.sha256(state.numpy().tobytes()).hexdigest()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        epoch = str(trainer.current_epoch)
        self.record["batches"].setdefault(epoch, []).extend(batch["index"].tolist())
        if "after_step1" in self.record or trainer.global_step != 1:
            return
        state = pl_module.state_dict()
        checksum = torch.stack([v.double().sum() for _, v in sorted(state.items())])
        gathered = trainer.strategy.all_gather(checksum)  # [world_size, num_tensors]
        self.record["after_step1"] = _digest(state)
        self.record["gathered_checksums"] = gathered.tolist()
        self.record["world_size"] = trainer.world_size

    def on_train_end(self, trainer, pl_module) -> None:
        path = self.out_dir / f"probe_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record))
