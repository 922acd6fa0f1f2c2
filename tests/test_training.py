"""Tests for lmisa_lite.training: config parsing, the loop's variants, determinism, resume and checkpoints."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils.case import Case
from lmisa_lite import checkpoint as checkpoint_module
from lmisa_lite import training as training_module
from lmisa_lite.networks import count_parameters
from lmisa_lite.training import (
    HISTORY_KEYS,
    TrainConfig,
    update_average,
    load_checkpoint,
    resolve_device,
    train,
)

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def disc_case(seed: int, *, invert: bool = False, size: int = SIZE, depth: int | None = None) -> Case:
    """A bright (or, with ``invert``, dark) noisy disc and its label: a toy two-modality pair."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:size, :size] if depth is None else np.mgrid[:size, :size, :depth]
    centre = rng.uniform(size / 3, 2 * size / 3, len(grid))
    radius = rng.uniform(size / 8, size / 5)
    label = (sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius**2).astype(np.uint8)
    image = (-1.0 if invert else 1.0) * label + 0.1 * rng.normal(size=label.shape)
    modality = "mri" if invert else "ct"
    return Case(image.astype(np.float32), label, (1.0,) * label.ndim, f"disc{seed}", modality)


@pytest.fixture(scope="module")
def domains() -> tuple[list[Case], list[Case], list[Case]]:
    source = [disc_case(i) for i in range(4)]
    target = [disc_case(100 + i, invert=True) for i in range(4)]
    val = [disc_case(200 + i) for i in range(2)]
    return source, target, val


def tiny(**changes) -> TrainConfig:
    base = dict(steps=2, batch_size=1, image_size=(SIZE, SIZE), base_filters=4, depth=3, progress=False,
                device="cpu", val_every=1)
    return TrainConfig(**{**base, **changes})


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


# ---- config ------------------------------------------------------------------------------------------------
def test_overrides_convert_to_field_types():
    config = TrainConfig.from_overrides([
        "steps=7", "resume=true", "out_dir=/tmp/run", "amp=none", "image_size=64,64", "betas=(0.5, 0.9)",
        "lr=3e-4", "num_classes=3", "use_mlngm=off",
    ])
    assert config.steps == 7 and config.resume is True and config.out_dir == "/tmp/run"
    assert config.amp is None and config.image_size == (64, 64) and config.betas == (0.5, 0.9)
    assert config.lr == pytest.approx(3e-4) and config.num_classes == 3 and config.use_mlngm is False
    assert config.with_overrides(["amp=true"], seed=5).amp is True
    assert TrainConfig().with_overrides(["spatial_dims=3", "image_size=64,64,32"]).image_size == (64, 64, 32)


@pytest.mark.parametrize("item, words", [
    ("stepz=3", ["stepz", "steps"]),
    ("steps=abc", ["steps", "integer"]),
    ("resume=maybe", ["resume", "true or false"]),
    ("image_size=64", ["image_size", "2 sizes"]),
    ("image_size=60,60", ["image_size", "multiple of 8"]),
    ("steps", ["key=value"]),
    ("betas=0.5", ["betas"]),
])
def test_overrides_reject_bad_input_with_clear_message(item, words):
    with pytest.raises(ValueError) as err:
        TrainConfig.from_overrides([item])
    for word in words:
        assert word in str(err.value)


def test_config_checks_fields():
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="liver")
    assert TrainConfig(task="liver", num_classes=3).resolved_num_classes == 3
    assert TrainConfig(task="heart").resolved_num_classes == 5
    with pytest.raises(ValueError, match="out_dir"):
        TrainConfig(resume=True)
    with pytest.raises(ValueError, match="spatial_dims"):
        TrainConfig(spatial_dims=4)
    with pytest.raises(ValueError, match="norm='layer'"):
        TrainConfig(norm="layer")
    with pytest.raises(ValueError, match="ema_decay=1"):
        TrainConfig(ema_decay=1)


def test_config_dict_round_trip_is_json():
    config = TrainConfig(steps=9, image_size=(64, 64), out_dir="runs/x", amp=False)
    data = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({**data, "bogus": 1})


def test_checkpoint_from_before_norm_and_ema_loads_as_batch_norm_without_average(domains, tmp_path):
    source, target, val = domains
    result = train(tiny(norm="batch", ema_decay=0, out_dir=tmp_path), source, target, val=val)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    del raw["config"]["norm"], raw["config"]["ema_decay"], raw["ema"]
    torch.save(raw, tmp_path / "old.pt")
    model, config = load_checkpoint(tmp_path / "old.pt")
    assert config.norm == "batch" and model.norm == "batch" and config.ema_decay == 0
    assert_same_weights(model, result.model)
    assert TrainConfig().norm == "instance"


def test_update_average_moves_weights_and_copies_buffers():
    average, current = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        average.weight.fill_(1.0)
        current.weight.fill_(3.0)
        current.running_mean.fill_(7.0)
    update_average(average, current, 0.75)
    assert torch.allclose(average.weight, torch.full((3,), 1.5))
    assert torch.equal(average.running_mean, current.running_mean)


def test_weight_average_is_what_is_returned_and_saved_and_does_not_change_training(domains, tmp_path):
    source, target, val = domains
    runs = {}
    for decay in (0.0, 0.9):
        out = tmp_path / str(decay)
        result = train(tiny(steps=4, ema_decay=decay, out_dir=out), source, target, val=val)
        runs[decay] = result, torch.load(out / "last.pt", weights_only=True)
    (plain, plain_state), (averaged, averaged_state) = runs[0.0], runs[0.9]
    assert plain_state["ema"] is None
    assert plain_state["model"].keys() == averaged_state["model"].keys()
    for key, value in plain_state["model"].items():  # the average only watches the training
        assert torch.equal(value, averaged_state["model"][key]), key
    assert all(torch.equal(v, plain_state["model"][k]) for k, v in plain.model.state_dict().items())
    assert all(torch.equal(v, averaged_state["ema"][k]) for k, v in averaged.model.state_dict().items())
    assert not all(torch.equal(v, averaged_state["model"][k]) for k, v in averaged.model.state_dict().items())
    val_losses = [torch.tensor(run.history["val_loss"]) for run in (plain, averaged)]
    assert not torch.equal(*val_losses)
    assert count_parameters(averaged.model) == count_parameters(plain.model) > 0
    assert count_parameters(averaged.best_model) == count_parameters(plain.model)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu0")


# ---- the loop ----------------------------------------------------------------------------------------------
VARIANTS = {
    # name: (config changes, terms that must be recorded, terms that must be NaN)
    "full": ({}, ["loss_seg", "loss_rec", "loss_adv", "loss_critic", "gp", "wasserstein"], []),
    "no_reconstruction": ({"use_reconstruction": False}, ["loss_seg", "loss_adv", "loss_critic"],
                          ["loss_rec"]),
    "no_shape": ({"use_shape_constraint": False}, ["loss_seg", "loss_rec"],
                 ["loss_adv", "loss_critic", "gp", "wasserstein"]),
    "source_only_raw": ({"use_mlngm": False, "use_reconstruction": False, "use_shape_constraint": False},
                        ["loss_seg"], ["loss_rec", "loss_adv", "loss_critic", "gp", "wasserstein"]),
    "oracle": ({"supervise_target": True}, ["loss_seg", "loss_rec", "loss_adv"], []),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_records_its_loss_terms(domains, name):
    changes, present, absent = VARIANTS[name]
    source, target, val = domains
    result = train(tiny(steps=1, **changes), source, target, val=val)
    history = result.history
    assert set(history) == set(HISTORY_KEYS) and all(len(v) == 1 for v in history.values())
    for key in present + ["loss_g", "val_loss", "val_dice", "lr"]:
        assert math.isfinite(history[key][0]), key
    for key in absent:
        assert math.isnan(history[key][0]), key
    assert (result.critic is None) == ("loss_adv" in absent)
    row = {k: v[0] for k, v in history.items()}
    expected = 40 * row["loss_seg"]
    expected += 0 if math.isnan(row["loss_rec"]) else 40 * row["loss_rec"]
    expected += 0 if math.isnan(row["loss_adv"]) else result.config.adv_weight * row["loss_adv"]
    assert row["loss_g"] == pytest.approx(expected, rel=1e-5)
    if "loss_critic" in present:
        assert row["loss_critic"] == pytest.approx(-row["wasserstein"] + 10 * row["gp"], rel=1e-5, abs=1e-6)


def test_oracle_needs_target_labels(domains):
    source, target, _ = domains
    unlabelled = [Case(c.image, None, c.spacing, c.case_id, c.modality) for c in target]
    with pytest.raises(ValueError, match="no label"):
        train(tiny(steps=1, supervise_target=True), source, unlabelled)
    train(tiny(steps=1), source, unlabelled)  # target labels are not needed otherwise


def test_rejects_unusable_cases(domains):
    source, target, _ = domains
    with pytest.raises(ValueError, match="no label"):
        train(tiny(steps=1), [Case(source[0].image, None, (1.0, 1.0), "u", "ct")], target)
    with pytest.raises(ValueError, match="3D"):
        train(tiny(steps=1, spatial_dims=3, image_size=(16, 16, 16)), source, target)
    with pytest.raises(ValueError, match="target"):
        train(tiny(steps=1), source, [])


def test_callbacks_see_every_step(domains):
    source, target, val = domains
    seen = []
    result = train(tiny(steps=3, val_every=2), source, target, val=val,
                   callbacks=[lambda step, row, model: seen.append((step, dict(row), model.training))])
    assert [s for s, _, _ in seen] == [0, 1, 2]
    assert all(training for _, _, training in seen)
    assert [math.isnan(row["val_loss"]) for _, row, _ in seen] == [True, False, False]  # step 1, and the last
    assert seen[-1][1]["loss_g"] == result.history["loss_g"][-1]


def test_lr_decays_at_fixed_interval(domains):
    source, target, _ = domains
    result = train(tiny(steps=5, lr_decay_every=2, use_shape_constraint=False, use_reconstruction=False),
                   source, target)
    assert result.history["lr"] == pytest.approx([1e-3, 1e-3, 8e-4, 8e-4, 6.4e-4])


def test_same_seed_same_weights_other_seed_differs(domains):
    source, target, _ = domains
    a = train(tiny(steps=2), source, target)
    b = train(tiny(steps=2), source, target)
    c = train(tiny(steps=2, seed=1), source, target)
    assert_same_weights(a.model, b.model)
    assert_same_weights(a.critic, b.critic)
    assert a.history["loss_g"] == b.history["loss_g"]
    assert not torch.equal(a.model.stem.weight, c.model.stem.weight)


def test_resume_gives_the_same_weights_as_one_run(domains, tmp_path):
    source, target, val = domains
    # val_every=3: the shorter run's closing validation (after step 2) is also a scheduled one
    straight = train(tiny(steps=6, val_every=3, out_dir=tmp_path / "a"), source, target, val=val)
    first = train(tiny(steps=3, val_every=3, out_dir=tmp_path / "b"), source, target, val=val)
    assert len(first.history["step"]) == 3
    resumed = train(tiny(steps=6, val_every=3, out_dir=tmp_path / "b", resume=True), source, target, val=val)
    assert_same_weights(straight.model, resumed.model)
    assert_same_weights(straight.critic, resumed.critic)
    assert resumed.history["step"] == list(range(6))
    for key in ("loss_g", "loss_critic", "lr"):
        assert resumed.history[key] == straight.history[key]
    np.testing.assert_array_equal(resumed.history["val_loss"], straight.history["val_loss"])
    assert resumed.best_step == straight.best_step


def test_resume_rejects_another_architecture(domains, tmp_path):
    source, target, _ = domains
    train(tiny(steps=1, out_dir=tmp_path), source, target)
    with pytest.raises(ValueError, match="base_filters"):
        train(tiny(steps=2, out_dir=tmp_path, resume=True, base_filters=8), source, target)


def test_resume_without_checkpoint_starts_fresh(domains, tmp_path):
    source, target, _ = domains
    with pytest.warns(UserWarning, match="step 0"):
        result = train(tiny(steps=1, out_dir=tmp_path, resume=True), source, target)
    assert result.history["step"] == [0]


def test_checkpoints_are_loadable_and_best_is_lowest_val_loss(domains, tmp_path):
    source, target, val = domains
    result = train(tiny(steps=4, out_dir=tmp_path, checkpoint_every=2), source, target, val=val)
    assert result.last_checkpoint == tmp_path / "last.pt" and result.best_checkpoint == tmp_path / "best.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary files left
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["step"] == 4 and raw["config"] == result.config.to_dict()
    model, config = load_checkpoint(tmp_path / "last.pt")
    assert config == result.config and not model.training and model.patch_size == (SIZE, SIZE)
    assert_same_weights(model, result.model)
    val_loss = result.history["val_loss"]
    assert result.best_step == int(np.nanargmin(val_loss))
    best, _ = load_checkpoint(tmp_path / "best.pt")
    assert_same_weights(best, result.best_model)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == result.best_step + 1


def test_no_files_without_out_dir(domains, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source, target, val = domains
    result = train(tiny(steps=1), source, target, val=val)
    assert result.last_checkpoint is None and result.best_checkpoint is None and result.best_model is not None
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = checkpoint_module.save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint_module.save_checkpoint({"step": 2}, path)
    assert checkpoint_module.read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        load_checkpoint(tmp_path / "other.pt")


def test_3d_patches_and_2d_model_on_volumes():
    source = [disc_case(i, size=32, depth=16) for i in range(2)]
    target = [disc_case(50 + i, invert=True, size=32, depth=16) for i in range(2)]
    result = train(tiny(steps=1, spatial_dims=3, image_size=(16, 16, 16), flip_augment=True, batch_size=2),
                   source, target, val=source[:1])
    assert math.isfinite(result.history["val_dice"][0]) and result.model.patch_size == (16, 16, 16)
    result = train(tiny(steps=1), source, target, val=source[:1])  # a 2D model on the slices
    assert math.isfinite(result.history["loss_g"][0])


@pytest.mark.slow
def test_loss_goes_down_on_a_learnable_toy(domains):
    source, target, val = domains
    # 8 filters: with 4, the full method's shared body spends its capacity on reconstruction first.
    result = train(tiny(steps=40, val_every=10, base_filters=8), source, target, val=val)
    seg = result.history["loss_seg"]
    assert np.mean(seg[-5:]) < 0.5 * np.mean(seg[:5])
    assert result.history["val_dice"][-1] > result.history["val_dice"][9]


@pytest.mark.parametrize("uniform", [True, False])
def test_3d_critic_real_maps_are_placed_as_the_target_patches(monkeypatch, uniform):
    # Small discs in big volumes: a patch centred on the disc always holds it, a uniformly placed one often not.
    source = [disc_case(i, size=40, depth=20) for i in range(2)]
    target = [disc_case(50 + i, invert=True, size=40, depth=20) for i in range(2)]
    seen = []
    real_update = training_module.critic_update

    def recording(config, critic, opt, real, *args, **kwargs):
        seen.append(real.clone())
        return real_update(config, critic, opt, real, *args, **kwargs)

    monkeypatch.setattr(training_module, "critic_update", recording)
    train(tiny(steps=6, spatial_dims=3, image_size=(12, 12, 8), batch_size=2, foreground_share=1.0,
               critic_real_uniform=uniform), source, target)
    holds_organ = [bool((real[i] > 0).any()) for real in seen for i in range(len(real))]
    assert len(holds_organ) == 12
    if uniform:  # drawn like the target's patches: some hold no disc
        assert not all(holds_organ)
    else:  # the labelled batch's own labels: every patch is centred on the disc
        assert all(holds_organ)
