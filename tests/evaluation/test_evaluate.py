"""evaluate.py end to end on real X-rays with tiny models, the sanity checks of the protocol, and
the pieces around it (checkpoint discovery, leakage refusal, caching, the report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, compose_run, run_entry
from dpglow.data.subsets import LabelledImages, load_split
from dpglow.evaluation.inputs import LeakageError, check_no_leakage
from dpglow.evaluation.report import NoRowsError, build_report, load_rows
from dpglow.evaluation.rows import p2_columns
from dpglow.evaluation.task import evaluate
from dpglow.metrics import ldp_auc_ceiling
from dpglow.utils.discovery import MissingCheckpointError, find_latest
from evaluation.conftest import DATA

REQUIRED_COLUMNS = [
    # settings and the accounting record
    "mechanism", "epsilon", "epsilon_per_image", "epsilon_per_element", "epsilon_label",
    "epsilon_latent", "delta", "d", "noise_scale", "private", "levels", "postprocess",
    "temperature", "flow_depth", "flow_num_levels", "flow_hidden_channels",
    # U1, P1, P2, fidelity
    "u1/auc_orig_mean", "u1/auc_priv_mean", "u1/retention", "u1/auc_priv_Pneumonia",
    "p1/pixel_top1", "p1/pixel_top5", "p1/embed_top1", "p1/embed_top5", "p1/chance_top1",
    "p2/embed_top1", "p2/embed_map", "p2/chance_map", "p2/constant_top1", "p2/orig_embed_map",
    "fidelity/psnr", "fidelity/ssim", "fidelity/cosine", "fidelity/frechet",
    # realism
    "realism/auc", "realism/prior_auc", "realism/control_auc",
]  # fmt: skip


def _args(models: dict, out: Path) -> list[str]:
    return [
        *DATA,
        f"paths.log_dir={models['log_dir']}",
        f"paths.cache_dir={models['cache']}",
        "eval.batch_size=64",
        f"hydra.sweep.dir={out}",
        f"hydra.run.dir={out}",
    ]


@pytest.fixture
def run_eval(eval_models, tmp_path):
    """run_eval(*overrides) -> row: one evaluation job in this process."""

    def _run(*overrides: str, out: Path | None = None) -> dict:
        out = out or tmp_path / "run"
        cfg = compose_run("evaluate", [*_args(eval_models, out), *overrides], out)
        return evaluate(cfg)[0]

    return _run


def test_multirun_merges_rows_plot_and_grid(eval_models, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_entry(
        "evaluate.py",
        "-m",
        "epsilon=1,inf",
        "privacy=laplace_l1,dp_pix",
        "noise_seed=0",
        *_args(eval_models, sweep),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = result.stdout + result.stderr
    # No checkpoint was named: the newest of this data's runs were found and announced.
    assert "newest trained flow" in logs and "newest trained classifier" in logs
    frame = pd.read_csv(sweep / "results.csv")
    assert len(frame) == 5  # the no-privacy baseline + 4 jobs
    assert not [c for c in REQUIRED_COLUMNS if c not in frame], frame.columns.tolist()
    jobs = frame[frame["mechanism"] != "original (no privacy)"]
    assert sorted(jobs["mechanism"]) == ["dp_pix", "dp_pix", "laplace_l1", "laplace_l1"]
    assert (jobs["private"] == False).all()  # noqa: E712  (noise_seed: reproducible = not private)
    for name in ("results.md", "privacy_utility.png", "image_grid.png"):
        assert (sweep / name).stat().st_size > 0
    assert "| laplace_l1 |" in (sweep / "results.md").read_text()
    # Original scores/embeddings once per sweep; one privatized set per setting.
    assert len(list((sweep / "cache" / "originals").glob("*.pt"))) == 1
    assert len(list((sweep / "cache" / "privatized").glob("*.pt"))) == 4

    # report.py rebuilds the same table from the rows.
    merged = (sweep / "results.csv").read_text()
    (sweep / "results.csv").unlink()
    rebuilt = run_entry("report.py", str(sweep))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (sweep / "results.csv").read_text() == merged


def test_identity_at_infinite_epsilon(run_eval):
    row = run_eval("privacy=laplace_l1", "epsilon=inf", "privacy.postprocess=none")
    assert row["noise"] == "none" and math.isinf(row["epsilon_per_image"])
    assert row["u1/retention"] == pytest.approx(1.0, abs=0.05)
    assert row["p1/pixel_top1"] > 0.95 and row["p1/embed_top1"] > 0.9
    assert row["fidelity/psnr"] > 40 and row["fidelity/ssim"] > 0.99
    # The release is the originals: each pair shares a fold, so the discriminator cannot do
    # better than a coin. The tiny flow's prior samples, by contrast, are told apart easily.
    assert row["realism/auc"] == pytest.approx(0.5, abs=0.02)
    assert row["realism/prior_auc"] > 0.9
    assert abs(row["realism/control_auc"] - 0.5) < 0.25


def test_tiny_epsilon_links_at_chance(run_eval):
    row = run_eval(
        "privacy=laplace_l1", "epsilon=0.001", "privacy.postprocess=none", "noise_seed=0"
    )
    n = row["n_images"]
    assert row["p1/chance_top1"] == pytest.approx(1 / n)
    for space in ("pixel", "embed"):
        # Random outputs: ~chance (5/n at top-5); a real link would be near 1.
        assert row[f"p1/{space}_top5"] < 5 / n + 0.25
        assert row[f"p1/{space}_top1"] < 1 / n + 0.15
    assert abs(row["u1/auc_priv_mean"] - 0.5) < 0.3


def test_privatized_set_is_reused_when_only_the_attacker_changes(run_eval, tmp_path, caplog):
    out = tmp_path / "shared"
    first = run_eval("epsilon=100", "eval.linkage_ks=[1,5]", out=out)
    with caplog.at_level("INFO"):
        second = run_eval("epsilon=100", "eval.linkage_ks=[1,3]", out=out)
    assert "reusing privatized" in caplog.text and "reusing originals" in caplog.text
    assert "p1/pixel_top3" in second and "p1/pixel_top3" not in first
    assert second["fidelity/psnr"] == first["fidelity/psnr"]  # the very same privatized images
    third = run_eval("epsilon=200", out=out)
    assert third["fidelity/psnr"] != first["fidelity/psnr"]


def test_u2_trains_on_privatized_images(run_eval):
    row = run_eval(
        "privacy=dp_pix",
        "epsilon=inf",
        "eval.train_on_privatized=true",
        "eval.u2.max_epochs=1",
        "eval.u2.max_images=64",
    )
    assert row["u2/n_train"] == 64
    # dp_pix at eps=inf releases the originals: both classifiers see the same images and seed.
    assert row["u2/auc_train_priv_mean"] == pytest.approx(row["u2/auc_train_orig_mean"])


def test_classifier_on_shuffled_labels_scores_chance(run_eval, eval_models):
    from dpglow.evaluation.utility import train_and_test

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            config_name="evaluate",
            overrides=[f"paths.cache_dir={eval_models['cache']}", "data.max_images=1200"],
        )
    train = load_split(cfg, image_size=32, split="train")
    test = load_split(cfg, image_size=32, split="test")
    settings = cfg.eval.u2.copy()
    settings.max_epochs, settings.lr = 3, 3e-3
    kwargs = dict(
        pathologies=test.pathologies,
        architecture={"image_size": 32, "growth_rate": 8, "block_config": (2, 2)},
        settings=settings,
        device=torch.device("cpu"),
    )
    true = train_and_test(train.images, train.labels, test.images, test.labels, seed=0, **kwargs)
    shuffled = []
    for seed in range(4):
        order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
        result = train_and_test(
            train.images, train.labels[order], test.images, test.labels, seed=seed, **kwargs
        )
        shuffled.append(result["mean"])
    # One shuffled-label classifier is a random function of the images, and pneumonia is a strong
    # axis of image variation, so single runs scatter (0.39..0.72 seen); their mean is chance.
    assert true["mean"] > 0.8 and true["mean"] > max(shuffled) + 0.05
    assert abs(sum(shuffled) / len(shuffled) - 0.5) < 0.15


def test_uninformative_outputs_reidentify_no_better_than_a_constant_ranking():
    gen = torch.Generator().manual_seed(0)
    patients = ["a"] * 6 + ["b"] * 2 + ["c"] * 2 + ["d", "e"]
    n = len(patients)
    test = LabelledImages(
        images=torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8),
        labels=torch.zeros(n, 1),
        pathologies=["x"],
        patients=patients,
        paths=[str(i) for i in range(n)],
    )
    orig_emb = torch.randn(n, 16, generator=gen)
    # Every released image is the same: the attacker's ranking is one fixed order.
    private = test.images[:1].expand(n, -1, -1, -1).clone()
    row = p2_columns(test, private, orig_emb[:1].expand(n, -1).clone(), orig_emb, {})
    assert row["p2/n_queries"] == 10 and row["p2/constant_top1"] == 6 / 10
    assert row["p2/embed_top1"] <= row["p2/constant_top1"]
    assert row["p2/pixel_top1"] <= row["p2/constant_top1"]


def test_evaluation_on_training_images_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {"image_id": ["a"], "patient_id": ["p"], "split": ["train"], "path": [str(tmp_path / "a")]}
    ).to_csv(run / "splits.csv", index=False)
    test = LabelledImages(
        images=torch.zeros(1, 1, 8, 8, dtype=torch.uint8),
        labels=torch.zeros(1, 1),
        pathologies=["x"],
        patients=["p"],
        paths=[str((tmp_path / "a").resolve())],
    )
    with pytest.raises(LeakageError, match="training or validation split"):
        check_no_leakage(test, {"flow": run})
    check_no_leakage(test, {"flow": None})  # unverifiable: a warning, not an error


def _fake_run(root: Path, name: str, source: str, *, finished: bool) -> Path:
    run = root / "train" / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        f"data:\n  source:\n    _target_: {source}\n  root: ${{paths.data_dir}}/x\n"
    )
    (run / "checkpoints" / "last.ckpt").write_bytes(b"0")
    if finished:
        (run / "summary.json").write_text(json.dumps({"metrics": {}}))
    return run / "checkpoints" / "last.ckpt"


def test_discovery_picks_the_newest_finished_run_of_the_same_data(tmp_path):
    import os

    ped, nih = "dpglow.data.sources.PediatricSource", "dpglow.data.sources.NIHSource"
    old = _fake_run(tmp_path, "a", ped, finished=True)
    new = _fake_run(tmp_path, "b", ped, finished=True)
    unfinished = _fake_run(tmp_path, "c", ped, finished=False)
    other = _fake_run(tmp_path, "d", nih, finished=True)
    for i, path in enumerate([old, new, unfinished, other]):
        os.utime(path, (1000 + i, 1000 + i))
    assert find_latest("train", log_dir=tmp_path, data_target=ped).checkpoint == new
    assert find_latest("train", log_dir=tmp_path, data_target=nih).checkpoint == other
    with pytest.raises(MissingCheckpointError, match=r"python src/train_classifier\.py"):
        find_latest("train_classifier", log_dir=tmp_path, data_target=ped)


def test_missing_models_say_which_command_makes_them(tmp_path, data_dir):
    result = run_entry("evaluate.py", f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    assert result.returncode != 0
    assert "python src/train.py" in result.stderr


def test_report_without_rows_says_what_to_pass(tmp_path):
    with pytest.raises(NoRowsError, match=r"evaluate\.py"):
        load_rows(tmp_path)
    result = run_entry("report.py", str(tmp_path))
    assert result.returncode == 2 and "evaluate.py" in result.stderr


# One evaluation row as row.json holds it, with the columns the report reads.
REPORT_ROW = {
    "mechanism": "laplace_l1", "epsilon_per_image": 1.0, "epsilon_per_element": 1.0, "d": 4,
    "levels": "all", "postprocess": "none", "temperature": 1.0, "cell": math.nan,
    "classifier": "c", "data": "PediatricSource", "n_images": 10, "u1/auc_orig_mean": 0.9,
    "u1/auc_priv_mean": 0.7, "u1/retention": 0.5, "p1/pixel_top1": 0.1,
    "p1/embed_top1": 0.2, "p1/chance_top1": 0.1, "p1/chance_top5": 0.5,
}  # fmt: skip


def test_report_labels_series_that_vary(tmp_path):
    for i, (eps, levels) in enumerate([(1.0, "all"), (10.0, "all"), (1.0, "3")]):
        (tmp_path / str(i)).mkdir()
        row = REPORT_ROW | {"epsilon_per_image": eps, "levels": levels}
        (tmp_path / str(i) / "row.json").write_text(json.dumps(row))
    frame = build_report(tmp_path)
    assert frame["mechanism"].iloc[0] == "original (no privacy)"
    assert frame["u1/retention"].iloc[0] == 1.0
    assert sorted(frame["series"].iloc[1:]) == ["levels=3", "levels=all", "levels=all"]
    assert (tmp_path / "privacy_utility.png").stat().st_size > 0


def test_report_labels_flows_with_per_level_depths_and_widths(tmp_path):
    for name, depth in (("a", [24, 8, 8, 8]), ("b", 16)):
        (tmp_path / name).mkdir()
        row = REPORT_ROW | {"flow_depth": depth, "flow_hidden_channels": [64, 128, 128, 128]}
        (tmp_path / name / "row.json").write_text(json.dumps(row))
    frame = build_report(tmp_path)
    assert sorted(frame["series"].iloc[1:]) == ["flow_depth=16", "flow_depth=[24, 8, 8, 8]"]
    assert "[24, 8, 8, 8]" in (tmp_path / "results.csv").read_text()


def test_report_reads_rows_written_under_the_old_column_names(tmp_path, caplog):
    old = {"mechanism": "laplace_l1", "eps_per_image": 2.0, "eps_label": 0.0, "flow_width": 128}
    new = {"mechanism": "laplace_l1", "epsilon_per_image": 5.0, "flow_hidden_channels": 64}
    for name, row in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "row.json").write_text(json.dumps(row))
    with caplog.at_level("WARNING"):
        frame = load_rows(tmp_path).set_index("job")
    assert (
        frame.loc["old", "epsilon_per_image"] == 2.0 and frame.loc["new", "epsilon_per_image"] == 5
    )
    assert (
        frame.loc["old", "flow_hidden_channels"] == 128 and frame.loc["old", "epsilon_label"] == 0
    )
    assert not {"eps_per_image", "eps_label", "flow_width"} & set(frame.columns)
    assert "eps_label, eps_per_image, flow_width" in caplog.text


def test_optuna_search_runs_trials(eval_models, tmp_path):
    sweep = tmp_path / "optuna"
    result = run_entry(
        "evaluate.py",
        "-m",
        "hparams_search=frontier_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        *_args(eval_models, sweep),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(sweep / "results.csv")
    assert len(frame) == 3
    # Every trial is scored on the validation split, never on the test images.
    assert (frame["split"].iloc[1:] == "val").all() and frame["label_fraction"].iloc[
        1:
    ].notna().all()
    assert " val images. retention" in (sweep / "results.md").read_text()
    assert "best_params" in (sweep / "optimization_results.yaml").read_text()


def test_subspace_label_channel_and_public_references(run_eval, eval_models):
    # The basis is fitted on the flow's training split and saved in its run folder on first use.
    row = run_eval("privacy=subspace", "epsilon=inf", "privacy.postprocess=none", "noise_seed=0")
    assert row["mechanism"] == "subspace" and row["k"] == 1 and row["basis"] == "supervised"
    assert math.isinf(row["epsilon_per_image"]) and row["d"] == 1
    bases = list((eval_models["flow"].parent.parent / "bases").glob("*-supervised-k1-l1.pt"))
    assert len(bases) == 1 and len(row["basis_sha256"]) == 64
    # Composition: both parts of the budget are in the row and add up to the per-image epsilon.
    row = run_eval(
        "privacy=label_channel", "privacy.label_fraction=0.7", "epsilon=3", "noise_seed=0"
    )
    assert row["mechanism"] == "label_channel" and row["labels"] == "Pneumonia"
    assert row["labeler"] == "classifier:labeler"  # the release classifier, found by discovery
    assert row["epsilon_per_image"] == pytest.approx(3.0)
    assert row["epsilon_label"] == pytest.approx(2.1) and row["epsilon_latent"] == pytest.approx(
        0.9
    )
    # Public-only references: prior samples (epsilon 0) and the labels alone.
    prior = run_eval("privacy=prior", "noise_seed=0")
    assert prior["epsilon_per_image"] == 0.0 and prior["d"] == 0 and prior["private"]
    assert prior["p1/pixel_top1"] < 0.1
    # The default below max_label_epsilon: the labels alone.
    label_only = run_eval("epsilon=3", "noise_seed=0")
    assert label_only["mechanism"] == "label_channel" and label_only["epsilon_latent"] == 0.0
    # a release classifier's decisions are right less often than the truth: below the ceiling
    assert 0 < label_only["u1/labeler_bound"] <= label_only["u1/retention_ceiling"] + 1e-9
    capped = run_eval("epsilon=10", "noise_seed=0")
    assert capped["epsilon_label"] == 6.0 and capped["epsilon_latent"] == pytest.approx(4.0)


def test_settings_search_scores_on_the_validation_split(run_eval):
    val = run_eval("privacy=laplace_l1", "epsilon=10", "eval.split=val", "noise_seed=0")
    test = run_eval("privacy=laplace_l1", "epsilon=10", "noise_seed=0")
    assert val["split"] == "val" and test["split"] == "test"
    assert (
        val["n_images"] != test["n_images"] or val["u1/auc_orig_mean"] != test["u1/auc_orig_mean"]
    )
    with pytest.raises(ValueError, match=r"eval\.split"):
        run_eval("eval.split=train")


def test_the_holders_own_labels_are_rendered_for_the_release_classifier(run_eval, eval_models):
    # labeler.kind=dataset: the evaluated data's own label table; the newest release classifier
    # on this data rates the rendering candidates and is named (path and SHA-256) in the row
    row = run_eval("privacy.labeler.kind=dataset", "epsilon=5", "noise_seed=0")
    assert row["labeler"].startswith("dataset:PediatricSource")
    assert Path(row["render_classifier"]).parent == eval_models["labeler"].parent  # its run
    assert len(row["render_classifier_sha256"]) == 64
    # recovery: that classifier's AUC against the true labels, on originals and on releases; at
    # epsilon 5 (0.7 % of labels flipped) the releases, rendered for it, carry the true labels
    assert 0.5 < row["recovery/auc_orig_mean"] <= 1.0
    assert row["recovery/auc_priv_mean"] > 0.8
    assert row["recovery/retention"] == pytest.approx(
        (row["recovery/auc_priv_mean"] - 0.5) / (row["recovery/auc_orig_mean"] - 0.5)
    )
    # the labeler's bound: the holder's labels are the truth, so a perfect rendering of their
    # randomized response is the LDP ceiling itself
    assert row["u1/labeler_auc_bound_Pneumonia"] == pytest.approx(ldp_auc_ceiling(5.0))
    assert row["u1/labeler_bound"] == pytest.approx(row["u1/retention_ceiling"])
    assert row["u1/fraction_of_labeler_bound"] == pytest.approx(
        row["u1/retention"] / row["u1/labeler_bound"]
    )


def test_a_label_set_release_counts_as_the_label_part_of_the_budget():
    from dpglow.evaluation.rows import epsilon_split

    for mechanism in ("randomized_response", "label_set_response"):
        assert epsilon_split({"mechanism": mechanism, "epsilon_per_image": 3.0}) == (3.0, 0.0)
    assert epsilon_split({"mechanism": "laplace_l1", "epsilon_per_image": 3.0}) == (0.0, 3.0)
    parts = {"labels": {"epsilon_per_image": 6.0}, "latent": {"epsilon_per_image": 4.0}}
    assert epsilon_split({"mechanism": "composed", "parts": parts}) == (6.0, 4.0)
