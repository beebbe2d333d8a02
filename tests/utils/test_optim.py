"""The learning-rate schedule: warm-up, cosine decay, and a cosine that ends where the run does."""

from __future__ import annotations

import math

import pytest

from dpglow.training.task import train
from dpglow.utils.optim import WarmupCosine


def test_warmup_then_cosine_to_the_floor():
    schedule = WarmupCosine(warmup_steps=4, total_steps=14, min_factor=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0  # the decay starts after the warm-up
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(14) == pytest.approx(0.1) and schedule(100) == pytest.approx(0.1)
    assert WarmupCosine(warmup_steps=4)(1000) == 1.0  # no total: constant after the warm-up


def test_auto_total_steps_is_the_runs_length(compose_train, tmp_path):
    cfg = compose_train(
        "data=pediatric",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "model.scheduler.warmup_steps=2",
        "model.scheduler.total_steps=auto",
        "model.scheduler.min_factor=0.25",
        "test=false",
        output_dir=tmp_path / "run",
    )
    _, objects = train(cfg)
    scheduler = objects["trainer"].lr_scheduler_configs[0].scheduler
    assert scheduler.lr_lambdas[0].total_steps == 6  # 2 epochs x 3 batches
    base = cfg.model.optimizer.lr
    # After the run's last step the rate sits on the floor: the cosine ended with the run.
    assert scheduler.get_last_lr()[0] == pytest.approx(0.25 * base)


def test_auto_total_steps_needs_a_run_of_known_length(compose_train, tmp_path):
    cfg = compose_train(
        "data=pediatric",
        "trainer.max_epochs=-1",
        "trainer.max_steps=-1",
        "trainer.max_time=00:00:00:05",
        "model.scheduler.total_steps=auto",
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ValueError, match=r"trainer\.max_steps"):
        train(cfg)
