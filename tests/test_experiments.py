"""Tests for lmisa_lite.experiments: arguments, profiles, variant configs, tables and a tiny full ablation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmisa_lite.experiments import (
    DATA_KEYS,
    PROFILES,
    UNSEEN_MODALITY,
    VARIANTS,
    ablation_table,
    evaluate_unseen,
    parse_direction,
    profile_settings,
    run_ablation,
    summarize_ablation,
    variant_config,
)
from lmisa_lite.networks import LMISANet
from lmisa_lite.training import load_checkpoint

# The smallest ablation that still trains every variant: 32 x 32 phantoms, 2 steps, 4 filters, 3 levels.
TINY = {
    "steps": 2,
    "image_size": 32,
    "n_train": 2,
    "n_val": 1,
    "n_test": 1,
    "base_filters": 4,
    "depth": 3,
    "batch_size": 1,
    "val_every": 1,
}
FLAGS = ("use_mlngm", "use_reconstruction", "use_shape_constraint", "supervise_target")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---- arguments and profiles --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("ct2mri", ("ct", "mri")),
        ("mri2ct", ("mri", "ct")),
        ("ct->mri", ("ct", "mri")),
        ("CT->MRI", ("ct", "mri")),
        ("MR -> CT", ("mri", "ct")),
        ("mr2ct", ("mri", "ct")),
        ("ct_to_mri", ("ct", "mri")),
        ("CT→MRI", ("ct", "mri")),
    ],
)
def test_parse_direction(text, expected):
    assert parse_direction(text) == expected


@pytest.mark.parametrize("text", ["ct2ct", "pet2ct", "ct", "", "ct2mri2ct", None, "mri-ct"])
def test_parse_direction_rejects_other_text(text):
    with pytest.raises(ValueError, match="direction"):
        parse_direction(text)


def test_profiles_grow_from_quick_to_paper_and_hold_every_data_key():
    for name, settings in PROFILES.items():
        assert set(DATA_KEYS) <= set(settings), name
        variant_config("lmisa", "heart", profile=name)  # every profile makes a valid config
    for key in ("n_train", "n_test", "steps"):
        assert PROFILES["quick"][key] < PROFILES["standard"][key] < PROFILES["paper"][key], key
    assert PROFILES["standard"]["image_size"] == 128


def test_overrides_change_settings_and_unknown_or_reserved_keys_raise():
    assert profile_settings("quick", overrides={"steps": 3, "lr": 5e-4})["steps"] == 3
    assert PROFILES["quick"]["steps"] != 3  # the profile itself is untouched
    with pytest.raises(ValueError, match="overrides"):
        profile_settings("quick", overrides={"stepz": 3})
    with pytest.raises(ValueError, match="overrides"):
        profile_settings("quick", overrides={"use_mlngm": False})
    with pytest.raises(ValueError, match="overrides"):
        profile_settings("quick", overrides={"n_train": 0})
    with pytest.raises(ValueError, match="profile"):
        profile_settings("fast")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_configs_carry_the_variant_flags(variant):
    config = variant_config(variant, "kidney", profile="quick", overrides={"image_size": 48}, seed=3)
    assert {f: getattr(config, f) for f in FLAGS} == VARIANTS[variant]
    assert config.image_size == (48, 48) and config.seed == 3 and config.task == "kidney"


def test_crop_sets_the_training_size_and_is_checked():
    assert variant_config("lmisa", "kidney", profile="quick", overrides={"crop": 48}).image_size == (48, 48)
    assert variant_config("lmisa", "kidney", profile="quick").image_size == (64, 64)
    heart = profile_settings("standard", task="heart")
    kidney = profile_settings("standard", task="kidney")
    assert heart["crop"] is not None and heart["crop"] != kidney["crop"]  # the task's own setting
    assert heart["steps"] == kidney["steps"]  # the rest is the profile's
    assert variant_config("lmisa", "heart").image_size == (heart["crop"],) * 2
    assert variant_config("lmisa", "kidney").image_size == (128, 128)
    assert "tasks" not in heart
    with pytest.raises(ValueError, match="task"):
        profile_settings("standard", task="liver")
    for bad in (4, 65, 32.0, True):
        with pytest.raises(ValueError, match="crop"):
            profile_settings("quick", overrides={"crop": bad})


def test_variant_flags_follow_the_ablation_design():
    assert VARIANTS["source_only_raw"] == {
        "use_mlngm": False,
        "use_reconstruction": False,
        "use_shape_constraint": False,
        "supervise_target": False,
    }
    assert VARIANTS["lmisa"] == {
        "use_mlngm": True,
        "use_reconstruction": True,
        "use_shape_constraint": True,
        "supervise_target": False,
    }
    assert VARIANTS["oracle"]["supervise_target"] and VARIANTS["oracle"]["use_mlngm"]
    assert not any(VARIANTS[v]["supervise_target"] for v in VARIANTS if v != "oracle")


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"task": "liver"}, "task"),
        ({"direction": "ct2pet"}, "direction"),
        ({"dims": 4}, "dims"),
        ({"profile": "fast"}, "profile"),
        ({"variants": ["lmisa", "cyclegan"]}, "variants"),
        ({"variants": []}, "variants"),
        ({"seed": -1}, "seed"),
        ({"out_dir": None}, "out_dir"),
        ({"overrides": {"batch": 2}}, "overrides"),
        ({"jobs": 0}, "jobs"),
        ({"jobs": 1.5}, "jobs"),
    ],
)
def test_run_ablation_rejects_bad_arguments_by_name(tmp_path, changes, name):
    arguments = {
        "task": "kidney",
        "direction": "ct2mri",
        "profile": "quick",
        "out_dir": tmp_path,
        "progress": False,
    }
    with pytest.raises(ValueError, match=name):
        run_ablation(**{**arguments, **changes})
    assert not (tmp_path / "results.csv").exists()


# ---- unseen domain -----------------------------------------------------------------------------------------
def test_unseen_modality_is_never_a_training_modality():
    for (task, direction), modality in UNSEEN_MODALITY.items():
        assert modality not in parse_direction(direction), (task, direction)


def test_evaluate_unseen_scores_each_model_on_the_unseen_contrast():
    torch.manual_seed(0)
    models = {name: LMISANet(num_classes=5, base_filters=4, depth=3) for name in ("lmisa", "source_only_raw")}
    df = evaluate_unseen(models, "heart", direction="MRI->CT", n=2, seed=5, shape=(32, 32), device="cpu")
    assert set(df["modality"]) == {UNSEEN_MODALITY["heart", "mri2ct"]}
    assert set(df["domain"]) == {"unseen"} and list(dict.fromkeys(df["variant"])) == list(models)
    assert len(df) == 2 * 2 * 4  # models x cases x structures
    assert set(df["class"]) == {"MYO", "LAC", "LVC", "AA"}


def test_evaluate_unseen_rejects_missing_or_seen_modalities():
    models = {"m": LMISANet(base_filters=4, depth=3)}
    with pytest.raises(ValueError, match="modality"):
        evaluate_unseen(models, "kidney", n=1)
    with pytest.raises(ValueError, match="modality"):
        evaluate_unseen(models, "kidney", modality="mri", direction="ct2mri", n=1)
    with pytest.raises(ValueError, match="modality"):
        evaluate_unseen(models, "kidney", modality="pet", n=1)
    with pytest.raises(ValueError, match="models"):
        evaluate_unseen({}, "kidney", modality="mri_t2", n=1)


# ---- tables from a synthetic per-case table ----------------------------------------------------------------
def fake_cases(classes: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for variant in ("lmisa", "source_only_raw"):  # deliberately not in VARIANTS order
        for domain in ("target", "unseen"):
            for case in range(3):
                for label, name in enumerate(classes, 1):
                    rows.append(
                        dict(
                            variant=variant,
                            domain=domain,
                            case_id=f"c{case}",
                            modality="mri",
                            label=label,
                            **{"class": name},
                            dice=rng.uniform(),
                            assd=rng.uniform(1, 9),
                        )
                    )
    return pd.DataFrame(rows)


def test_ablation_table_has_one_row_per_variant_and_dice_then_assd_columns():
    cases = fake_cases(["MYO", "LAC", "LVC", "AA"])
    summary = summarize_ablation(cases)
    table = ablation_table(summary, domain="unseen")
    assert list(table.index) == ["lmisa", "source_only_raw"]  # order of appearance, not re-sorted
    shown = [c for c in table.columns if not c.endswith(("_std", "_nan"))]
    assert shown == [f"{m} {c}" for m in ("Dice", "ASSD") for c in ("MYO", "LAC", "LVC", "AA", "mean")]
    part = cases[(cases["variant"] == "lmisa") & (cases["domain"] == "unseen") & (cases["class"] == "LAC")]
    assert table.loc["lmisa", "Dice LAC"] == pytest.approx(100 * part["dice"].mean())
    assert table.loc["lmisa", "ASSD LAC_std"] == pytest.approx(part["assd"].std(ddof=0))


def test_single_structure_tables_have_no_mean_columns():
    table = ablation_table(summarize_ablation(fake_cases(["kidney"])))
    assert [c for c in table.columns if not c.endswith(("_std", "_nan"))] == ["Dice kidney", "ASSD kidney"]
    with pytest.raises(ValueError, match="domain"):
        ablation_table(summarize_ablation(fake_cases(["kidney"])), domain="source")


# ---- the whole ablation, tiny ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return run_ablation(
        "kidney", "CT->MRI", profile="quick", out_dir=out, overrides=TINY, progress=False, device="cpu"
    ), out


@pytest.mark.slow
def test_every_variant_trains_and_is_scored_on_target_and_unseen(tiny_ablation):
    result, _out = tiny_ablation
    assert list(result.models) == list(VARIANTS)
    counts = result.cases.groupby(["variant", "domain"]).size()
    assert len(counts) == 2 * len(VARIANTS) and (counts == TINY["n_test"]).all()  # one structure per case
    assert set(result.cases.loc[result.cases["domain"] == "target", "modality"]) == {"mri"}
    assert set(result.cases.loc[result.cases["domain"] == "unseen", "modality"]) == {"mri_t2"}
    assert result.unseen_modality == "mri_t2" and (result.source, result.target) == ("ct", "mri")
    assert result.cases["dice"].between(0, 1).all()
    for variant, model in result.models.items():
        assert isinstance(model, LMISANet) and model.depth == 3
        assert len(result.histories[variant]) == TINY["steps"]


@pytest.mark.slow
def test_stored_configs_carry_the_variant_flags(tiny_ablation):
    result, out = tiny_ablation
    for variant, flags in VARIANTS.items():
        assert {f: getattr(result.configs[variant], f) for f in FLAGS} == flags
        stored = json.loads((out / variant / "run.json").read_text())["config"]
        assert {f: stored[f] for f in FLAGS} == flags
        _, config = load_checkpoint(result.paths[variant])
        assert {f: getattr(config, f) for f in FLAGS} == flags
        assert config.steps == TINY["steps"] and config.image_size == (32, 32)


@pytest.mark.slow
def test_files_tables_and_chart(tiny_ablation):
    result, out = tiny_ablation
    back = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(back, result.cases, check_dtype=False)
    assert {"variant", "domain", "case_id", "class", "dice", "assd"} <= set(back.columns)
    text = (out / "results.md").read_text()
    assert text == result.table
    target, unseen = text.split("**Target domain")[1].split("**Unseen domain")
    for part in (target, unseen):
        rows = [line for line in part.splitlines() if line.startswith("| ")]
        assert rows[0] == "| variant | Dice kidney | ASSD kidney |"
        assert [r.split(" | ")[0][2:] for r in rows[2:]] == list(VARIANTS)
    assert (out / "dice_by_variant.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.png"))  # no temporary files left behind
    for variant in VARIANTS:
        assert result.paths[variant].name in ("best.pt", "last.pt") and result.paths[variant].is_file()


@pytest.mark.slow
def test_a_second_identical_run_reuses_every_variant(tiny_ablation):
    result, out = tiny_ablation
    again = run_ablation(
        "kidney",
        "ct2mri",
        profile="quick",
        out_dir=out,
        overrides=TINY,
        progress=False,
        device="cpu",
        variants=["lmisa", "source_only_raw"],
    )
    assert again.reused == ["lmisa", "source_only_raw"]
    assert list(again.models) == ["lmisa", "source_only_raw"]
    expected = result.cases[result.cases["variant"].isin(again.reused)]
    pd.testing.assert_frame_equal(
        again.cases.sort_values(["variant", "domain"]).reset_index(drop=True),
        expected.sort_values(["variant", "domain"]).reset_index(drop=True),
        check_dtype=False,
    )
    for variant in again.reused:
        for a, b in zip(
            again.models[variant].state_dict().values(), result.models[variant].state_dict().values()
        ):
            assert torch.equal(a.cpu(), b.cpu())
    # A different configuration in the same folder is trained afresh, not mistaken for the stored one.
    changed = run_ablation(
        "kidney",
        "ct2mri",
        profile="quick",
        out_dir=out,
        overrides={**TINY, "lr": 5e-4},
        progress=False,
        device="cpu",
        variants=["source_only_raw"],
        unseen=False,
    )
    assert changed.reused == [] and set(changed.cases["domain"]) == {"target"}
    assert "Unseen domain" not in (Path(out) / "results.md").read_text()


@pytest.mark.slow
def test_seeds_train_every_variant_per_seed_and_report_the_spread(tmp_path):
    chosen = ["source_only_mlngm", "lmisa"]
    result = run_ablation("kidney", "ct2mri", profile="quick", out_dir=tmp_path, overrides=TINY, progress=False,
                          device="cpu", variants=chosen, seeds=(0, 1), unseen=False)
    assert result.seeds == [0, 1] and set(result.runs) == {(v, k) for v in chosen for k in (0, 1)}
    for (variant, k), run in result.runs.items():
        assert run["config"].seed == k and (tmp_path / f"seed{k}" / variant / "run.json").is_file()
    # each seed draws its own test subjects
    ids = result.cases.groupby("seed")["case_id"].apply(set)
    assert not ids[0] & ids[1]
    per_seed = result.per_seed
    assert len(per_seed) == 4 and set(per_seed["seed"]) == {0, 1}
    one = result.cases[(result.cases["variant"] == "lmisa") & (result.cases["seed"] == 1)]
    want = per_seed.query("variant == 'lmisa' and seed == 1")["dice"].item()
    assert want == pytest.approx(one["dice"].mean() * 100)  # one structure: the mean over cases
    assert "Over seeds" in result.table and "Paired per-seed differences" in result.table
    back = pd.read_csv(tmp_path / "results_by_seed.csv")
    assert back[["variant", "seed"]].values.tolist() == per_seed[["variant", "seed"]].values.tolist()
    assert list(result.models) == chosen and result.configs["lmisa"].seed == 0  # the first seed's runs
    with pytest.raises(ValueError, match="seeds"):
        run_ablation("kidney", "ct2mri", profile="quick", out_dir=tmp_path, seeds=(1, 1))


@pytest.mark.slow
def test_runs_in_worker_processes_give_the_runs_of_one_process(tmp_path):
    chosen = ["source_only_mlngm", "lmisa"]
    options = dict(profile="quick", overrides=TINY, progress=False, device="cpu", variants=chosen, seeds=(0, 1),
                   unseen=False)
    alone = run_ablation("kidney", "ct2mri", out_dir=tmp_path / "one", **options)
    together = run_ablation("kidney", "ct2mri", out_dir=tmp_path / "two", jobs=2, **options)
    assert list(together.runs) == list(alone.runs)  # in the order of the work, whichever finished first
    for key, run in alone.runs.items():
        other = together.runs[key]
        assert not other["reused"] and other["config"].with_overrides(out_dir=None) == run["config"].with_overrides(
            out_dir=None)
        for (name, a), b in zip(run["model"].state_dict().items(), other["model"].state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=f"{key} {name}")
    pd.testing.assert_frame_equal(together.per_seed, alone.per_seed, atol=0.5, check_exact=False)
    assert (tmp_path / "two" / "seed1" / "lmisa" / "run.json").is_file()


def test_paired_differences_and_spread_over_seeds():
    from lmisa_lite.reports import over_seeds, paired_differences, seeds_markdown

    per_seed = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3, "domain": ["target"] * 6,
                             "seed": [0, 1, 2] * 2, "dice": [50.0, 60.0, 70.0, 55.0, 59.0, 80.0]})
    spread = over_seeds(per_seed).set_index("variant")
    assert spread.loc["a", "dice"] == 60.0 and spread.loc["a", "dice_sd"] == pytest.approx(10.0)
    (row,) = paired_differences(per_seed).to_dict("records")
    assert (row["variant"], row["versus"], row["wins"], row["per_seed"]) == ("b", "a", 2, [5.0, -1.0, 10.0])
    assert row["mean"] == pytest.approx(14 / 3)
    text = seeds_markdown(per_seed)
    assert "| `b` | `a` | target | +4.7 ± 5.5 | 2/3 | +5.0, -1.0, +10.0 |" in text
