"""``RefinerModule``: train a :class:`~dpglow.refiner.net.Refiner` on public data only.

The refiner learns to map the flow's prior samples (at ``temperature``; public: they depend on
the public flow and fresh noise only) toward the real training images, against a
:class:`~dpglow.refiner.net.PatchDiscriminator` (non-saturating GAN losses), with a
self-regularisation term that keeps each refined image close to its input (SimGAN):

    loss_refiner = BCE(D(R(x)), real) + self_regularization * mean |R(x) - x| (in 8-bit levels)
    loss_discriminator = BCE(D(real image), real) + BCE(D(R(x)), fake)

Validation scores what the evaluation scores: :func:`dpglow.metrics.discriminator_auc` of the
refined samples of a second, fixed pool against the validation images (``val/realism_auc``, and
``val/realism_gap`` = ``|AUC - 0.5|``, which checkpoints select on), beside the same for the
unrefined pool (``val/realism_auc_unrefined``) and the mean change in 8-bit levels
(``val/change_levels``). Released images reach the refiner only at privatize / evaluation time,
as its input: it is post-processing.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from dpglow.flow import load_flow, to_flow_input, to_uint8
from dpglow.metrics import discriminator_auc
from dpglow.refiner.checkpoint import REFINER_KEY
from dpglow.refiner.net import PatchDiscriminator, Refiner

log = logging.getLogger(__name__)


def _check(value: float, name: str, *, low: float = 0.0, strict: bool = True) -> float:
    value = float(value)
    if not (value > low if strict else value >= low) or value != value:
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return value


class RefinerModule(pl.LightningModule):
    """Adversarial training of a refiner for the prior samples of the flow at ``flow_ckpt_path``.

    ``pool_size`` prior samples (uint8, drawn once at the start of fitting with ``seed``) are
    what the refiner trains on, ``val_pool_size`` others (``seed + 1``) what validation scores.
    The flow is frozen and not saved with the refiner; its SHA-256 is.
    """

    def __init__(
        self,
        *,
        flow_ckpt_path: str,
        net: dict[str, Any] | None = None,
        discriminator_channels: int = 32,
        temperature: float = 1.0,
        self_regularization: float = 0.02,
        lr: float = 2.0e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        pool_size: int = 2048,
        val_pool_size: int = 512,
        pool_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # Plain containers (not Hydra's DictConfig / ListConfig): checkpoints load with
        # weights_only=True.
        net, betas = dict(net or {}), tuple(float(b) for b in betas)
        self.save_hyperparameters()
        self.automatic_optimization = False
        _check(temperature, "temperature")
        _check(self_regularization, "self_regularization", strict=False)
        _check(lr, "lr")
        for name, value in (("pool_size", pool_size), ("val_pool_size", val_pool_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 5:
                raise ValueError(f"{name} must be an integer >= 5 (the discriminator's folds)")
        flow, info = load_flow(flow_ckpt_path)
        if flow.num_conditions:
            raise ValueError(
                f"{flow_ckpt_path} is a conditional flow: its prior samples need labels. Train "
                "the refiner on the samples of an unconditional flow"
            )
        # A plain attribute, not a submodule: frozen, and left out of the refiner's checkpoint.
        self.__dict__["flow"] = flow.requires_grad_(False)
        self.flow_info = info
        self.n_bits = info["n_bits"]
        self.net = Refiner(**{"in_channels": flow.in_channels, **net})
        self.discriminator = PatchDiscriminator(
            in_channels=flow.in_channels, channels=discriminator_channels
        )
        self.pool: torch.Tensor | None = None
        self.val_pool: torch.Tensor | None = None
        self._val_images: list[torch.Tensor] = []

    def configure_optimizers(self):
        hp = self.hparams
        make = lambda params: torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas))  # noqa: E731
        return make(self.net.parameters()), make(self.discriminator.parameters())

    @torch.no_grad()
    def _draw(self, n: int, seed: int) -> torch.Tensor:
        flow = self.flow.to(self.device).eval()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        chunks = []
        for start in range(0, n, self.hparams.pool_batch_size):
            count = min(self.hparams.pool_batch_size, n - start)
            x = flow.sample(count, temperature=self.hparams.temperature, generator=generator)
            chunks.append(to_uint8(x, n_bits=self.n_bits).cpu())
        return torch.cat(chunks)

    def on_fit_start(self) -> None:
        if self.pool is None:
            hp = self.hparams
            log.info("drawing %d + %d prior samples at T=%g", hp.pool_size, hp.val_pool_size,
                     hp.temperature)  # fmt: skip
            self.pool = self._draw(hp.pool_size, hp.seed)
            self.val_pool = self._draw(hp.val_pool_size, hp.seed + 1)
            self.flow.to("cpu")
        self._pick = torch.Generator(device="cpu").manual_seed(self.hparams.seed + 2)

    def _bce(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_refiner, opt_discriminator = self.optimizers()
        real = to_flow_input(batch["image"], n_bits=self.n_bits, dequantize=True)
        index = torch.randint(len(self.pool), (len(real),), generator=self._pick)
        samples = to_flow_input(self.pool[index].to(self.device), n_bits=self.n_bits)
        refined = self.net(samples)

        loss_d = self._bce(self.discriminator(real), True)
        loss_d = loss_d + self._bce(self.discriminator(refined.detach()), False)
        opt_discriminator.zero_grad()
        self.manual_backward(loss_d)
        opt_discriminator.step()

        adversarial = self._bce(self.discriminator(refined), True)
        change = (refined - samples).abs().mean() * 2**self.n_bits
        loss_r = adversarial + self.hparams.self_regularization * change
        opt_refiner.zero_grad()
        self.manual_backward(loss_r)
        opt_refiner.step()
        self.log_dict(
            {"train/loss_d": loss_d, "train/loss_adv": adversarial, "train/change_levels": change},
            prog_bar=True,
        )

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._val_images.append(batch["image"].cpu())

    def on_validation_epoch_end(self) -> None:
        images, self._val_images = self._val_images, []
        if self.trainer.sanity_checking or self.val_pool is None or not images:
            return
        real = torch.cat(images)
        if len(real) < 5:
            raise ValueError(f"{len(real)} validation images: the realism AUC needs at least 5")
        refined = torch.cat(
            [self.net.refine(chunk.to(self.device), n_bits=self.n_bits).cpu()
             for chunk in self.val_pool.split(64)]
        )  # fmt: skip
        auc = discriminator_auc(real, refined, seed=0, paired=False)
        change = (refined.float() - self.val_pool.float()).abs().mean().item()
        metrics = {
            "val/realism_auc": auc,
            "val/realism_gap": abs(auc - 0.5),
            "val/realism_auc_unrefined": discriminator_auc(
                real, self.val_pool, seed=0, paired=False
            ),
            "val/change_levels": change,
        }
        self.log_dict(metrics)
        log.info("validation: %s", {k: round(v, 4) for k, v in metrics.items()})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[REFINER_KEY] = {
            "net_config": dict(self.net.config),
            "image_size": int(self.flow.image_size),
            "n_bits": int(self.n_bits),
            "flow_sha256": self.flow_info["sha256"],
            "flow_path": self.flow_info["path"],
            "temperature": float(self.hparams.temperature),
        }
