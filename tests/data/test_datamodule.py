"""ChestXrayDataModule: batches, splits, sampler order, subsets, errors and Hydra configs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import SYNTHETIC
from dpglow.data import (
    ChestXrayDataModule,
    CheXpertSource,
    DataFormatError,
    DatasetNotFoundError,
    FolderSource,
    MedMNISTSource,
    NIHSource,
    PediatricSource,
)
from dpglow.data.datamodule import EpochSeededSampler
from synthetic_data import NIH_IMAGES

CONF_DATA = Path(__file__).resolve().parents[2] / "conf" / "data"


def check_batch(batch: dict, size: int, n_labels: int) -> None:
    assert set(batch) == {"image", "labels", "index"}
    b = len(batch["image"])
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (b, 1, size, size)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (b, n_labels)
    assert batch["index"].dtype == torch.int64 and batch["index"].shape == (b,)


@pytest.fixture
def nih_dm(nih_sample_dir: Path, make_dm: Callable) -> ChestXrayDataModule:
    dm = make_dm(NIHSource, nih_sample_dir, image_size=32, batch_size=16, seed=7)
    dm.setup("fit")
    return dm


def test_nih_batches_and_splits(nih_dm: ChestXrayDataModule, tmp_path: Path) -> None:
    dm = nih_dm
    assert dm.pathologies == NIHSource.pathologies
    splits = dm.splits
    assert list(splits.columns) == ["image_id", "patient_id", "split", "path"]
    assert len(splits) == (NIH_IMAGES if SYNTHETIC else 1000)
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()  # patient-disjoint
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        check_batch(next(iter(loader)), 32, 14)
    n_train = int((splits["split"] == "train").sum())
    assert len(dm.train_dataloader()) == n_train // 16  # last partial batch dropped
    assert len(dm.val_dataloader()) == -(-int((splits["split"] == "val").sum()) // 16)
    # index maps back to the splits table; val/test are in order.
    test_idx = torch.cat([b["index"] for b in dm.predict_dataloader()]).numpy()
    assert (splits["split"].iloc[test_idx] == "test").all()
    assert np.all(np.diff(test_idx) > 0) and len(test_idx) == (splits["split"] == "test").sum()
    labels = torch.cat([b["labels"] for b in dm.test_dataloader()]).numpy()
    records = NIHSource(dm.root).records().set_index("image_id")
    expected = records.loc[splits["image_id"].iloc[test_idx], NIHSource.pathologies].to_numpy()
    np.testing.assert_array_equal(labels, expected)
    # save_splits round trip
    saved = pd.read_csv(dm.save_splits(tmp_path / "out" / "splits.csv"), dtype=str)
    pd.testing.assert_frame_equal(saved, splits.astype(str))


def test_setup_is_idempotent(nih_dm: ChestXrayDataModule) -> None:
    images = nih_dm.dataset("train").images
    nih_dm.setup("test")
    assert torch.equal(nih_dm.dataset("train").images, images)


def test_init_batch(nih_dm: ChestXrayDataModule) -> None:
    batch = nih_dm.init_batch(64)
    assert batch.dtype == torch.uint8 and batch.shape == (64, 1, 32, 32)
    assert torch.equal(batch, nih_dm.init_batch(64))  # seeded
    train = nih_dm.dataset("train").images.flatten(1)
    assert all((train == img.flatten()).all(1).any() for img in batch)  # from the train split
    n_train = len(nih_dm.dataset("train"))
    assert len(nih_dm.init_batch(10**6)) == n_train


def test_sampler_order_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochSeededSampler(50, seed=1), EpochSeededSampler(50, seed=1)
    first = list(a)
    assert sorted(first) == list(range(50))
    for epoch in (3, 1, 2):  # b visits epochs in another order, as a resumed run would
        b.set_epoch(epoch)
        list(b)
    b.set_epoch(0)
    assert list(b) == first and list(b) == first  # iterating does not advance any state
    a.set_epoch(1)
    assert list(a) != first
    assert list(EpochSeededSampler(50, seed=2)) != first


def test_train_loader_order_resumes_identically(
    nih_dm: ChestXrayDataModule, make_dm: Callable
) -> None:
    def epoch_indices(dm: ChestXrayDataModule, epoch: int) -> list[int]:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["index"] for b in loader]).tolist()

    fresh = make_dm(NIHSource, nih_dm.root, image_size=32, batch_size=16, seed=7)
    fresh.setup("fit")
    assert epoch_indices(nih_dm, 0) != epoch_indices(nih_dm, 1)
    assert epoch_indices(fresh, 1) == epoch_indices(nih_dm, 1)


def test_lightning_calls_set_epoch(medmnist_root: Path, make_dm: Callable, tmp_path: Path) -> None:
    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list[int]] = {}

        def training_step(self, batch: dict, _: int) -> torch.Tensor:
            self.seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
            return (self.weight * batch["image"].float().mean()).sum()

        def validation_step(self, batch: dict, _: int) -> None:
            pass

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    dm = make_dm(
        MedMNISTSource,
        medmnist_root,
        source_kwargs={"flag": "pneumoniamnist", "size": 64},
        batch_size=5,
    )
    model = Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    rows = dm.dataset("train").index
    for epoch in (0, 1):
        sampler = EpochSeededSampler(len(rows), dm.seed)
        sampler.set_epoch(epoch)
        assert model.seen[epoch] == rows[list(sampler)].tolist()
    assert model.seen[0] != model.seen[1]


def test_chexpert_labels_keep_nan(tiny_chexpert: Path, make_dm: Callable) -> None:
    dm = make_dm(CheXpertSource, tiny_chexpert, image_size=16, batch_size=2, val_fraction=0.3)
    dm.setup()
    batches = [*dm.train_dataloader(), *dm.val_dataloader(), *dm.test_dataloader()]
    for batch in batches:
        check_batch(batch, 16, 13)
    labels = torch.cat([b["labels"] for b in dm.test_dataloader()])
    assert torch.isnan(labels).any()
    assert set(dm.splits.loc[dm.splits["split"] == "test", "patient_id"]) == {
        "patient64541",
        "patient64542",
    }  # valid.csv is the test split


def test_folder_has_no_labels_and_small_train_keeps_last_batch(
    tmp_path: Path, gray_images: list[Path], make_dm: Callable
) -> None:
    root = tmp_path / "folder"
    root.mkdir()
    for src in gray_images[:6]:
        (root / src.name).write_bytes(src.read_bytes())
    dm = make_dm(
        FolderSource, root, image_size=16, batch_size=16, val_fraction=0.2, test_fraction=0.2
    )
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and len(batches[0]["image"]) == len(dm.dataset("train")) < 16
    check_batch(batches[0], 16, 0)


def test_skip_unreadable(tmp_path: Path, gray_images: list[Path], make_dm: Callable) -> None:
    root = tmp_path / "folder"
    root.mkdir()
    for src in gray_images[:6]:
        (root / src.name).write_bytes(src.read_bytes())
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataFormatError, match=re.escape(str(root / "broken.png"))):
        make_dm(FolderSource, root).setup()
    dm = make_dm(FolderSource, root, skip_unreadable=True)
    dm.setup()
    assert len(dm.splits) == 6 and "broken.png" not in set(dm.splits["image_id"])


@pytest.mark.parametrize("image_size", [64, 32])
def test_medmnist_datamodule(medmnist_root: Path, make_dm: Callable, image_size: int) -> None:
    dm = make_dm(
        MedMNISTSource,
        medmnist_root,
        source_kwargs={"flag": "chestmnist", "image_size": image_size},
        image_size=image_size,
    )
    dm.setup()
    assert dm.source.size == 64  # smallest MedMNIST size >= image_size
    counts = dm.splits["split"].value_counts().to_dict()
    assert counts == {"train": 30, "test": 8, "val": 6}  # the official split, untouched
    check_batch(next(iter(dm.train_dataloader())), image_size, 14)
    if image_size == 64:
        npz = np.load(medmnist_root / "chestmnist_64.npz")
        assert torch.equal(dm.dataset("test").images[:, 0], torch.from_numpy(npz["test_images"]))
    assert not (Path(dm.cache_dir).exists() and any(Path(dm.cache_dir).iterdir()))  # no disk cache


def test_max_images_subset(pediatric_dir: Path, make_dm: Callable) -> None:
    dm = make_dm(PediatricSource, pediatric_dir, max_images=100, seed=3)
    dm.setup()
    assert len(dm.splits) == 100
    assert (dm.splits.groupby("patient_id")["split"].nunique() == 1).all()
    assert dm.splits["split"].value_counts().to_dict() == {"train": 80, "val": 10, "test": 10}
    again = make_dm(PediatricSource, pediatric_dir, max_images=100, seed=3)
    again.setup()
    pd.testing.assert_frame_equal(dm.splits, again.splits)
    # The subset keeps the full dataset's split of every image it contains.
    full = make_dm(PediatricSource, pediatric_dir, seed=3)
    records = full._build_source().records()
    from dpglow.data import make_splits

    split = make_splits(records, val_fraction=0.1, test_fraction=0.1, seed=3)
    full_split = dict(zip(records["image_id"], split, strict=True))
    assert all(
        full_split[i] == s for i, s in zip(dm.splits["image_id"], dm.splits["split"], strict=True)
    )


def test_missing_root_message(tmp_path: Path, make_dm: Callable) -> None:
    missing = tmp_path / "no_such_dataset"
    for root in (str(missing), "<no-data-dir>/pediatric_pneumonia224"):
        dm = make_dm(PediatricSource, root)
        with pytest.raises(DatasetNotFoundError) as err:
            dm.setup()
        msg = str(err.value)
        assert isinstance(err.value, FileNotFoundError)
        for needle in (
            "data.root=/path/to/",
            "paths.data_dir=",
            "export DPGLOW_DATA_DIR=",
            "data=chestmnist data.download=true",
            "data=pneumoniamnist data.download=true",
        ):
            assert needle in msg, needle
    with pytest.raises(DatasetNotFoundError) as err:
        make_dm(PediatricSource, missing).setup()
    assert str(missing) in str(err.value)


def test_download_only_for_medmnist(tmp_path: Path, make_dm: Callable) -> None:
    with pytest.raises(ValueError, match="MedMNIST"):
        make_dm(FolderSource, tmp_path, download=True).setup()


def test_download_without_a_data_folder_uses_medmnists_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_dm: Callable, write_medmnist_npz: Callable
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    write_medmnist_npz(home / ".medmnist", "chestmnist", 64, {"train": 4, "val": 2, "test": 2})
    dm = make_dm(
        MedMNISTSource,
        "<no-data-dir>/medmnist",
        source_kwargs={"flag": "chestmnist", "image_size": 32, "download": True},
        download=True,
    )
    dm.prepare_data()  # the file is there: nothing is fetched
    dm.setup()
    assert dm.source.root == (home / ".medmnist").resolve() and len(dm.splits) == 8


DATA_CONFIGS = sorted(p.stem for p in CONF_DATA.glob("*.yaml") if not p.stem.startswith("_"))
COMMON = {
    "_target_": "dpglow.data.ChestXrayDataModule", "image_size": 32, "batch_size": 16,
    "eval_batch_size": None, "num_workers": 0, "val_fraction": 0.1, "test_fraction": 0.1,
    "seed": 5, "cache_dir": "/cache", "max_images": None, "skip_unreadable": False,
    "download": False,
}  # fmt: skip
# The resolved data nodes as they were before conf/data/_base.yaml (sources without root,
# size and download): every key of them must keep its value.
BEFORE = {
    "chestmnist": {"root": "/data/medmnist", "source": {"flag": "chestmnist"}},
    "chexpert": {"root": "/data/CheXpert-v1.0-small", "source": {"frontal_only": True}},
    "folder": {"root": "/data/chest_folder", "source": {}},
    "nih": {
        "root": "/data/nih_chestxray14_sample64",
        "source": {"csv_name": None, "use_official_split": True},
    },
    "nih_all": {
        "root": "/data/nih_chestxray14_sample64",
        "source": {
            "csv_name": None,
            "use_official_split": True,
            "extra_roots": ["/data/nih_chestxray14_sample256"],
        },
    },
    "pediatric": {"root": "/data/pediatric_pneumonia224", "source": {}},
    "pneumoniamnist": {"root": "/data/medmnist", "source": {"flag": "pneumoniamnist"}},
}
SOURCE_CLASS = {
    "chestmnist": "MedMNISTSource", "chexpert": "CheXpertSource", "folder": "FolderSource",
    "nih": "NIHSource", "nih_all": "NIHSource", "pediatric": "PediatricSource",
    "pneumoniamnist": "MedMNISTSource",
}  # fmt: skip


def compose_data(name: str, *overrides: str, data_dir: str = "/data", cache_dir: str = "/cache"):
    """The root config a task composes around ``data=<name>`` (its image_size, seed, paths)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DATA.parent)):
        return compose(
            overrides=[
                f"+data={name}", "+paths=default", "+image_size=32", "+split_seed=5",
                f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}", *overrides,
            ]
        )  # fmt: skip


def test_every_data_config_is_covered() -> None:
    assert sorted(BEFORE) == DATA_CONFIGS


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_configs_compose_with_base_as_before(name: str) -> None:
    node = OmegaConf.to_container(compose_data(name).data, resolve=True)
    expected = {**COMMON, "root": BEFORE[name]["root"]}
    assert {k: node[k] for k in expected} == expected
    assert set(node) == {*expected, "source"}
    source = node["source"]
    before = {
        "_target_": f"dpglow.data.sources.{SOURCE_CLASS[name]}",
        "_partial_": True,
        **BEFORE[name]["source"],
    }
    assert {k: source.get(k) for k in before} == before
    # What the source now takes from the config explicitly, and nothing else.
    explicit = {"root": node["root"]}
    if SOURCE_CLASS[name] == "MedMNISTSource":
        explicit.update(download=False, size=None, image_size=32)
    assert {k: v for k, v in source.items() if k not in before} == explicit


def _repeated(own: dict, base: dict, prefix: str = "") -> list[str]:
    """Keys of ``own`` (recursively) that merely restate ``base``'s raw value."""
    found = []
    for key, value in own.items():
        if key == "defaults" or key not in base:
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            found += _repeated(value, base[key], f"{prefix}{key}.")
        elif value == base[key]:
            found.append(prefix + key)
    return found


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_configs_keep_only_what_differs_from_base(name: str) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DATA / f"{name}.yaml"))
    base = OmegaConf.to_container(OmegaConf.load(CONF_DATA / "_base.yaml"))
    assert _repeated(raw, base) == [], f"conf/data/{name}.yaml repeats conf/data/_base.yaml"
    # nih_all extends nih, which extends _base.
    assert raw["defaults"] == (["nih"] if name == "nih_all" else ["_base", "_self_"])


def test_root_and_download_overrides_reach_the_source() -> None:
    node = compose_data("chestmnist", "data.root=/elsewhere", "data.download=true").data
    assert node.root == node.source.root == "/elsewhere"
    assert node.download is True and node.source.download is True
    assert compose_data("nih", "data.root=/nih").data.source.root == "/nih"
    assert compose_data("pneumoniamnist", "image_size=100").data.source.image_size == 100


def test_download_on_a_config_without_it_says_medmnist(tmp_path: Path, tiny_nih: Path) -> None:
    cfg = compose_data("nih", f"data.root={tiny_nih}", "data.download=true")
    with pytest.raises(ValueError, match="data=chestmnist or data=pneumoniamnist"):
        hydra.utils.instantiate(cfg.data).setup()


@pytest.mark.parametrize(
    "name", ["nih", "chexpert", "pediatric", "folder", "chestmnist", "pneumoniamnist"]
)
def test_hydra_configs_instantiate(
    name: str, tmp_path: Path, tiny_nih: Path, tiny_chexpert: Path, medmnist_root: Path
) -> None:
    cfg = compose_data(name, cache_dir=str(tmp_path / "cache"))
    assert cfg.data._target_ == "dpglow.data.ChestXrayDataModule"
    assert cfg.data.root.startswith("/data/")
    assert cfg.data.image_size == 32 and cfg.data.seed == 5 and cfg.data.download is False
    roots = {
        "nih": tiny_nih,
        "chexpert": tiny_chexpert,
        "pediatric": None,
        "folder": tiny_nih,
        "chestmnist": medmnist_root,
        "pneumoniamnist": medmnist_root,
    }
    if roots[name] is None:
        return  # needs the real folder; covered by test_pediatric_config_default_root
    cfg.data.root = str(roots[name])
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, ChestXrayDataModule)
    dm.setup()
    assert Path(dm.source.root) == Path(roots[name]).resolve()
    check_batch(next(iter(dm.train_dataloader())), 32, len(dm.pathologies))


def test_pediatric_config_default_root(pediatric_dir: Path, tmp_path: Path) -> None:
    cfg = compose_data(
        "pediatric",
        "image_size=16",
        "split_seed=1",
        "data.max_images=40",
        data_dir=str(pediatric_dir.parent),
        cache_dir=str(tmp_path),
    )
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    assert dm.pathologies == ["Pneumonia"] and len(dm.splits) == 40


@pytest.mark.parametrize(
    ("task", "follows"),
    [
        ("train", "model.net.image_size"),
        ("train_classifier", "model.image_size"),
        ("evaluate", None),
        ("fit_basis", None),
    ],
)
def test_task_configs_name_the_resolution_image_size(task: str, follows: str | None) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DATA.parent)):
        cfg = compose(task, overrides=["paths.data_dir=/data"])
    expected = OmegaConf.select(cfg, follows) if follows else None
    assert cfg.image_size == expected and cfg.data.get("image_size") == expected
    if follows is None:  # set from the flow checkpoint: no dummy model node
        assert "model" not in cfg
        cfg.image_size = 48
        assert cfg.data.image_size == 48


def test_load_split_sets_image_size(tmp_path: Path, gray_images: list[Path]) -> None:
    from dpglow.data.subsets import load_split

    root = tmp_path / "folder"
    root.mkdir()
    for src in gray_images[:10]:
        (root / src.name).write_bytes(src.read_bytes())
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DATA.parent)):
        cfg = compose(
            "evaluate",
            overrides=["data=folder", f"data.root={root}", f"paths.cache_dir={tmp_path}"],
        )
    split = load_split(cfg, image_size=16, split="train")
    assert cfg.image_size == 16 and "model" not in cfg
    assert split.images.shape[1:] == (1, 16, 16) and len(split.images) == 8
