"""LightningModule that trains a Glow flow by maximum likelihood (bits per dimension)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchvision.utils import make_grid, save_image

from dpglow.flow import (
    CHECKPOINT_KEY,
    Glow,
    VariationalDequantizer,
    bits_per_dim,
    dequantize,
    flow_labels,
    to_flow_input,
)
from dpglow.training.conditioning import (
    CONDITIONS,
    GRID_TAG,
    grid_caption,
    label_grid_samples,
)
from dpglow.utils.optim import build_optimizers

log = logging.getLogger(__name__)


def eval_noise_generator(batch_idx: int, device: torch.device | str) -> torch.Generator:
    """The dequantisation noise of evaluation batch ``batch_idx``: fixed, so val/test bits/dim
    are comparable across epochs and runs (and the benchmark reproduces a run's test/bpd)."""
    return torch.Generator(device=device).manual_seed(10_007 + batch_idx)


class GlowModule(pl.LightningModule):
    """Trains the :class:`~dpglow.flow.Glow` ``net`` on uint8 chest X-rays (batches
    ``{"image": uint8 [B, C, H, W], ...}``).

    ``net`` is a partial of :class:`~dpglow.flow.Glow` (``model.net`` with ``_partial_: true``),
    completed here with ``num_conditions = len(condition_pathologies)``, or a flow's plain
    :attr:`~dpglow.flow.Glow.config` dict (what the hyperparameters of a checkpoint hold, so that
    ``GlowModule.load_from_checkpoint(path, weights_only=True)`` rebuilds the same flow).

    Metrics: ``train/bpd``, ``val/bpd``, ``test/bpd`` at ``n_bits``: with uniform dequantisation,
    or with a ``dequantizer`` (a :class:`~dpglow.flow.VariationalDequantizer`, or its config dict)
    trained with the flow, the variational bound (:mod:`dpglow.flow.dequantization`).
    Each validation epoch decodes a fixed set of prior draws at ``sample_temperature`` into an
    image grid (saved under ``<log dir>/samples`` and sent to the loggers that take images).

    ``condition="labels"`` trains the class-conditional flow ``p(x | y)`` (Glow's
    y-conditioning, see :class:`~dpglow.flow.Glow`): ``y`` is the batch's ``"labels"`` over
    ``condition_pathologies`` (which ``train()`` fills with the dataset's pathologies), with NaN
    (unknown) replaced by 0 (absent); the net's ``condition_split_priors`` conditions the split
    priors too. The sample grid then pairs all-zero and one-hot label vectors
    (:func:`~dpglow.training.conditioning.label_grid_samples`).
    """

    def __init__(
        self,
        *,
        net: Callable[..., Glow] | Mapping[str, Any],
        dequantizer: nn.Module | Mapping[str, Any] | None = None,
        condition: str = "none",
        condition_pathologies: Sequence[str] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        n_bits: int = 8,
        sample_temperature: float = 0.7,
        num_samples: int = 16,
        init_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        condition_pathologies = _check_condition(
            condition, condition_pathologies, _net_arguments(net).get("condition_split_priors")
        )  # a plain list (not Hydra's ListConfig): checkpoints load with weights_only
        # The partials stay out of the hyperparameters; the flow's own config (plain data) goes
        # in instead, so a checkpoint rebuilds its model (GlowModule.load_from_checkpoint(path))
        # and holds plain data only (loadable with weights_only=True).
        self.save_hyperparameters(
            ignore=["net", "dequantizer", "optimizer", "scheduler"], logger=False
        )
        self.condition_pathologies: list[str] = condition_pathologies
        self.net = _build_net(net, num_conditions=len(condition_pathologies))
        self.hparams["net"] = dict(self.net.config)
        self.dequantizer = _build_dequantizer(dequantizer, in_channels=self.net.in_channels)
        self.hparams["dequantizer"] = self._dequantizer_config()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.n_bits = n_bits
        self._noise: torch.Generator | None = None
        self._noise_state: torch.Tensor | None = None

    # -- data ---------------------------------------------------------------------------------
    def _noise_generator(self) -> torch.Generator:
        """Generator for dequantisation noise, seeded per rank and saved in checkpoints, so that a
        resumed run draws the same noise as an uninterrupted one."""
        if self._noise is None or self._noise.device != self.device:
            self._noise = torch.Generator(device=self.device)
            self._noise.manual_seed(self.hparams.seed * 1000 + self.global_rank)
            if self._noise_state is not None:
                self._noise.set_state(self._noise_state)
                self._noise_state = None
        return self._noise

    def labels(self, batch: dict) -> torch.Tensor | None:
        """The flow's label vector for ``batch`` (:func:`~dpglow.flow.flow_labels`
        of ``batch["labels"]``), or None for an unconditional flow."""
        if not self.net.num_conditions:
            return None
        if "labels" not in batch:
            raise ValueError(
                "model.condition=labels needs batches with a 'labels' entry [B, "
                f"{self.net.num_conditions}] ({', '.join(self.condition_pathologies)})"
            )
        return flow_labels(batch["labels"])

    def _bpd(
        self, images: torch.Tensor, generator: torch.Generator, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, log_q = dequantize(
            images, n_bits=self.n_bits, generator=generator, dequantizer=self.dequantizer
        )
        log_px = self.net.log_prob(x, y=y) - log_q
        return bits_per_dim(log_px, num_dims=self.net.num_dims, n_bits=self.n_bits)

    def _dequantizer_config(self) -> dict[str, Any] | None:
        return None if self.dequantizer is None else dict(self.dequantizer.config)

    # -- ActNorm initialisation ---------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Runs on every rank before the model is wrapped for DDP; DDP then broadcasts rank 0's
        # parameters and buffers, so all ranks start from one initialisation. A resumed or loaded
        # model has initialized=1 in its buffers and is left alone.
        if stage != "fit" or self.net.actnorm_initialized() or self.trainer.ckpt_path:
            return
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "init_batch"):
            return  # initialised from the first training batch in on_train_start
        images = datamodule.init_batch(self.hparams.init_batch_size)
        # The strategy moves the model to its device only after setup(); initialising there
        # already keeps a 256 px initialisation off the CPU.
        device = self.trainer.strategy.root_device
        self.net.to(device)
        self._initialize_actnorm(images.to(device))

    def on_train_start(self) -> None:
        if self.net.actnorm_initialized():
            return
        images = next(iter(self.trainer.train_dataloader))["image"].to(self.device)
        self._initialize_actnorm(images)
        # The model is already wrapped here: make every rank use rank 0's initialisation.
        state = {k: v for k, v in self.net.state_dict().items() if ".actnorm." in k}
        state = self.trainer.strategy.broadcast(state, src=0)
        self.net.load_state_dict({k: v.to(self.device) for k, v in state.items()}, strict=False)

    def _initialize_actnorm(self, images: torch.Tensor) -> None:
        gen = torch.Generator(device=images.device).manual_seed(self.hparams.seed)
        x = to_flow_input(images, n_bits=self.n_bits, dequantize=True, generator=gen)
        self.net.initialize(x)
        log.info("ActNorm initialised from %d training images", len(images))

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._bpd(batch["image"], self._noise_generator(), self.labels(batch)).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train/bpd became {loss.item()} at step {self.global_step}: lower the learning "
                "rate, lengthen the warm-up or clip gradients harder (trainer.gradient_clip_val)."
            )
        self.log("train/bpd", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _eval_step(self, stage: str, batch: dict, batch_idx: int) -> None:
        generator = eval_noise_generator(batch_idx, self.device)
        bpd = self._bpd(batch["image"], generator, self.labels(batch))
        self.log(f"{stage}/bpd", bpd.mean(), prog_bar=True, batch_size=len(bpd), sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    # -- samples ------------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if self.hparams.num_samples <= 0:
            return
        gen = torch.Generator(device=self.device).manual_seed(self.hparams.seed)
        num, temperature = self.hparams.num_samples, self.hparams.sample_temperature
        name = f"samples_epoch{self.current_epoch:03d}_step{self.global_step:06d}"
        caption = f"T={temperature}, step {self.global_step}"
        if self.net.num_conditions:
            samples = label_grid_samples(self.net, num, temperature=temperature, generator=gen)
            name, labels = f"{name}_{GRID_TAG}", grid_caption(self.condition_pathologies, num)
            caption = f"{caption}; {labels}"
            log.info("sample grid %s.png: %s", name, labels)
        else:
            samples = self.net.sample(num, temperature=temperature, generator=gen)
        grid = make_grid((samples + 0.5).clamp(0, 1), nrow=int(num**0.5))
        out_dir = Path(self.trainer.default_root_dir) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, out_dir / f"{name}.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image("val/samples", [grid], step=self.global_step, caption=[caption])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("val/samples", grid, self.global_step)

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        return build_optimizers(self, self.optimizer_factory, self.scheduler_factory)

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        noise_state = self._noise_generator().get_state()
        checkpoint[CHECKPOINT_KEY] = {
            "net_class": f"{type(self.net).__module__}.{type(self.net).__qualname__}",
            "net_config": dict(self.net.config),
            "n_bits": self.n_bits,
            "noise_state": noise_state,
        }
        if self.dequantizer is not None:
            checkpoint[CHECKPOINT_KEY]["dequantizer_config"] = self._dequantizer_config()
        if self.net.num_conditions:
            # What the flow's label vector means, in order (load_flow returns it).
            checkpoint[CHECKPOINT_KEY]["condition_pathologies"] = list(self.condition_pathologies)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # Under DDP each rank draws its own dequantisation noise; keep every rank's state
            # (this hook runs on all ranks, rank 0 writes the file).
            states = trainer.strategy.all_gather(noise_state.to(self.device))
            checkpoint[CHECKPOINT_KEY]["noise_states"] = states.cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY, {})
        config = saved.get("net_config")
        if config is not None and config != dict(self.net.config):
            diff = {
                k: (config.get(k), self.net.config.get(k))
                for k in {**config, **self.net.config}
                if self.net.config.get(k) != config.get(k)
            }
            raise ValueError(
                "checkpoint architecture does not match the configured model "
                f"(key: (checkpoint, config)): {diff}. Use the model config the checkpoint was "
                "trained with, e.g. model.net.depth=... or model.condition=..., or another "
                "checkpoint."
            )
        stored = saved.get("dequantizer_config")
        if config is not None and stored != self._dequantizer_config():
            raise ValueError(
                f"the checkpoint was trained with dequantizer {stored}, the configured model has "
                f"{self._dequantizer_config()} (None: uniform): set model.dequantizer to match"
            )
        pathologies = saved.get("condition_pathologies", [])
        if config is not None and list(pathologies) != self.condition_pathologies:
            raise ValueError(
                f"the checkpoint's flow is conditioned on {list(pathologies)}, the configured "
                f"model on {self.condition_pathologies}: train on the data it was trained on"
            )
        self._noise_state = saved.get("noise_state")
        states, trainer = saved.get("noise_states"), self._trainer
        if states is not None and trainer is not None and len(states) == trainer.world_size:
            # A row of the stacked states is a view; Generator.set_state needs its own storage.
            self._noise_state = states[trainer.global_rank].clone()
        self._noise = None


def _net_arguments(net: Callable[..., Glow] | Mapping[str, Any]) -> Mapping[str, Any]:
    """The flow arguments ``net`` fixes: a partial's keywords, or the config dict itself."""
    return net if isinstance(net, Mapping) else getattr(net, "keywords", {})


def _build_net(net: Callable[..., Glow] | Mapping[str, Any], *, num_conditions: int) -> Glow:
    """The flow of a partial (completed with ``num_conditions``) or of a config dict (whose
    ``num_conditions``, if any, must be ``num_conditions``)."""
    if isinstance(net, Glow):
        raise TypeError(
            "net is a built Glow: give model.net `_partial_: true` (the module adds num_conditions)"
        )
    if not isinstance(net, Mapping):
        return net(num_conditions=num_conditions)
    config = {k: v for k, v in net.items() if k not in ("_target_", "_partial_")}
    stored = config.setdefault("num_conditions", num_conditions)
    if stored != num_conditions:
        raise ValueError(
            f"net has num_conditions={stored} but condition_pathologies names "
            f"{num_conditions} labels: pass the pathologies the flow was trained with"
        )
    return Glow(**config)


def _build_dequantizer(
    dequantizer: nn.Module | Mapping[str, Any] | None, *, in_channels: int
) -> nn.Module | None:
    """The dequantiser module of a built module, a config dict (a checkpoint's hyperparameters)
    or ``None`` (uniform noise); its channels must be the flow's."""
    if isinstance(dequantizer, Mapping):
        config = {k: v for k, v in dequantizer.items() if k not in ("_target_", "_partial_")}
        dequantizer = VariationalDequantizer(**config)
    if dequantizer is not None and dequantizer.config["in_channels"] != in_channels:
        raise ValueError(
            f"the dequantizer has in_channels={dequantizer.config['in_channels']}, the flow "
            f"{in_channels}: set model.dequantizer.in_channels to the flow's"
        )
    return dequantizer


def _check_condition(
    condition: str, pathologies: Sequence[str] | None, split_priors: bool | None
) -> list[str]:
    """The label names a ``condition`` needs (none: no names), as a plain list."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    names = [str(p) for p in pathologies or []]
    if condition == "none":
        if names or split_priors:
            raise ValueError(
                "condition_pathologies and model.net.condition_split_priors need "
                "model.condition=labels"
            )
        return names
    if not names:
        raise ValueError(
            "model.condition=labels needs labelled data and the label names: train() fills "
            "condition_pathologies with the dataset's pathologies (data=folder has none); "
            "building a GlowModule directly, pass condition_pathologies=[...]"
        )
    return names
