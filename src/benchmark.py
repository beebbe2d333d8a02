"""Speed and memory of glow_32/64/128 (and glow_256 on a GPU): ``python src/benchmark.py``."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

import dpglow.utils.config  # noqa: F401  (registers the config resolvers)

log = logging.getLogger(__name__)


def _model_config(conf_dir: Path, name: str) -> dict:
    # Compose the model group exactly as train.py would, so the benchmark measures the real configs.
    from hydra import compose, initialize_config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("_target_", "optimizer", "scheduler"):
        model.pop(key, None)
    return model


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    import torch

    from dpglow.evaluation.benchmark import machine_description, markdown_table, run_benchmark

    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = list(cfg.models) + (list(cfg.gpu_models) if device.startswith("cuda") else [])
    specs = []
    for name in models:
        model = _model_config(conf_dir, name)
        if cfg.model_overrides:
            model.update(OmegaConf.to_container(cfg.model_overrides, resolve=True))
        specs.append(
            dict(
                name=name,
                model=model,
                device=device,
                batch_size=cfg.batch_size,
                warmup=cfg.warmup,
                repeats=cfg.repeats,
                threads=cfg.threads,
                data_dir=cfg.paths.data_dir if "<" not in str(cfg.paths.data_dir) else None,
            )
        )
    rows = run_benchmark(specs)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "benchmark.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    table = f"Machine: {machine_description()}\n\n{markdown_table(rows)}\n"
    (out / "benchmark.md").write_text(table)
    log.info("benchmark written to %s\n%s", out, table)


if __name__ == "__main__":
    main()
