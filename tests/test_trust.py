"""Faithfulness and sanity checks: they must tell a faithful map from a pretty one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cam_core import cli, engine, trust
from cam_core.engine.methods import get_method
from cam_core.engine.targets import TargetSpec, rectangle_mask
from cam_core.errors import Cancelled
from cam_core.model.models import OKABE_ITO, LoadedModel, ModelSpec

BOX = (slice(4, 20), slice(24, 40))  # the only pixels the spot model looks at


class SpotModel(torch.nn.Module):
    """Class 'spot' everywhere iff the box BOX is dark: the perfect map is known exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.std + self.mean
        dark = 1 - rgb[:, :, BOX[0], BOX[1]].mean(dim=(1, 2, 3))
        logit = 20 * (dark - 0.4)
        spot = logit.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(spot), spot], dim=1)


@pytest.fixture
def spot():
    spec = ModelSpec(classes=["background", "spot"], colors=OKABE_ITO[:2])
    return LoadedModel("spot", Path("."), SpotModel().eval(), spec, torch.device("cpu"), 8)


@pytest.fixture
def spot_image():
    image = np.full((64, 64, 3), 235, dtype=np.uint8)
    image[6:18, 26:38] = 20  # a dark square inside the box
    return image


def _scores(loaded, image, maps, seed=0):
    target = TargetSpec("class", 1)
    prediction = engine.predict(loaded, image)
    return {k: v.score for k, v in trust.faithfulness(loaded, image, target, prediction, maps, seed=seed).items()}


def test_a_perfect_oracle_map_beats_random(spot, spot_image):
    oracle = np.zeros((64, 64), np.float32)
    oracle[BOX] = 1.0
    rng = np.random.default_rng(0)
    maps = {"oracle": oracle, **{f"random{i}": rng.random((64, 64)) for i in range(3)}}
    scores = _scores(spot, spot_image, maps)
    random = [scores[f"random{i}"] for i in range(3)]
    assert scores["oracle"] > 0.8, scores
    assert scores["oracle"] > max(random) + 0.5, scores
    assert abs(float(np.mean(random))) < 0.2, scores


def test_ties_are_broken_at_random(spot, spot_image):
    """A map that is 98 % zeros (its 2 % far from what matters) must score near random; ranking
    its zeros by position (as grad-cam's ROAD effectively does) would reach the box early."""
    sparse = np.zeros((64, 64), np.float32)
    sparse[-2:, :40] = 1.0  # 80 pixels, 2 %, in the bottom rows
    assert (sparse == 0).mean() >= 0.98
    by_position = sparse + np.linspace(1e-3, 0, 64 * 64, dtype=np.float32).reshape(64, 64)
    scores = _scores(spot, spot_image, {"sparse": sparse, "by position": by_position})
    assert abs(scores["sparse"]) < 0.15, scores
    assert scores["by position"] > 0.3, scores  # the setting can tell the two apart


def test_the_shared_model_is_never_touched_and_never_held_for_the_whole_run(tiny, image64):
    model = tiny.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    held = []

    def progress(frac, text):
        held.append(tiny.lock.locked())

    target = TargetSpec("class", 1)
    reports = trust.trust(tiny, image64, target, ["decoder.blocks.2"], [get_method("GradCAM")], progress=progress)
    assert reports
    assert held
    assert not any(held), "the model's lock was held between batches"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())

    def cancel(frac, text):
        if frac > 0.3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        trust.trust(tiny, image64, target, ["decoder.blocks.2"], [get_method("GradCAM")], progress=cancel)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not tiny.lock.locked()


def test_the_progress_runs_with_the_work_and_leaves_the_time_left_to_the_caller(tiny, image64):
    from cam_core.trust.checks import _stages

    seen: list[tuple[float, str]] = []
    layer, methods = "decoder.blocks.2", [get_method("GradCAM"), get_method("HiResCAM")]
    trust.trust(tiny, image64, TargetSpec("class", 1), [layer], methods, progress=lambda f, t: seen.append((f, t)))
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs)
    assert fracs[-1] == pytest.approx(1.0)
    assert not [t for _, t in seen if "left" in t]  # one time left on a line: the app's Eta or tqdm's, not a stage's
    # the stages' shares of the bar are their shares of the estimate's work (faithfulness is most of it)
    faith, sane = _stages(tiny.model, [layer], len(methods), {}, True)
    last_faithfulness = max(f for f, t in seen if t.startswith("faithfulness"))
    assert last_faithfulness == pytest.approx(faith / (faith + sane))
    assert last_faithfulness > 0.8  # the fixed split ended faithfulness at 0.8 whatever its work
    assert min(f for f, t in seen if t.startswith("sanity")) > last_faithfulness


def test_image_only_and_target_mask_maps_fail_sanity(tiny, image64):
    target = TargetSpec("mask", 1, rectangle_mask((64, 64), 8, 8, 40, 40))
    results = trust.sanity(
        tiny,
        image64,
        target,
        {(name, "-"): fn for name, fn in trust.REFERENCE_EXPLAINERS.items()},
        layers=["decoder.blocks.2"],
        methods=[get_method("GradCAM")],
    )
    by_name = {r.method: r for r in results}
    for name in trust.REFERENCE_EXPLAINERS:
        assert not by_name[name].passed, by_name[name]
        assert by_name[name].final_rho > 0.99
    grad = by_name["GradCAM"]
    assert len(grad.steps) >= 5
    assert grad.steps[0].startswith("segmentation_head")
    assert grad.passed, grad  # a gradient map follows the weights: randomised, it changes
    assert abs(grad.final_rho) < trust.SANITY_MAX_RHO


def test_spearman_of_constant_maps():
    ones = np.ones((8, 8))
    assert trust.spearman(ones, ones) == 1.0
    # a map that collapsed has no rank correlation with one that varies: NaN, never 0.0 (a "pass")
    assert np.isnan(trust.spearman(ones, np.arange(64.0).reshape(8, 8)))
    assert np.isnan(trust.ssim(ones, np.arange(64.0).reshape(8, 8)))
    assert trust.spearman(np.arange(64.0), -np.arange(64.0)) == pytest.approx(-1.0)


def test_trust_json_has_the_documented_keys(tiny_folder, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    argv = ["trust", str(path), "--model", str(tiny_folder), "--class", "1", "--target", "class"]
    code = cli.main([*argv, "--method", "GradCAM,HiResCAM", "--no-cascade", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(out["results"]) == 2
    from cam_core.trust.checks import TrustRecord

    for entry in out["results"]:
        for key in ("layer", "method", "faithfulness", "random_faithfulness", "sanity_rho", "sanity_pass", "seconds"):
            assert key in entry, key
        TrustRecord.model_validate(entry)  # the schema `schema trust` prints
    assert {e["method"] for e in out["results"]} == {"GradCAM", "HiResCAM"}
    assert all(e["localisation"] is None for e in out["results"])  # no truth for a lone image
    # a folder with masks/ (as `evaluate` reads them): each map is scored against the truth too
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    Image.open(path).save(tmp_path / "data" / "images" / "t.png")
    truth = np.zeros((64, 64), np.uint8)
    truth[10:30, 10:30] = 1
    Image.fromarray(truth).save(tmp_path / "data" / "masks" / "t.png")
    folder = ["trust", "--data", str(tmp_path / "data"), "--model", str(tiny_folder), "--class", "1"]
    assert cli.main([*folder, "--target", "class", "--method", "GradCAM", "--no-cascade", "--json"]) == 0
    per_image = json.loads(capsys.readouterr().out)["per_image"][0]["results"][0]
    assert per_image["localisation"]["pointing_objects"] == 1
    assert 0 <= per_image["localisation"]["mass_on_truth"] <= 1
    assert cli.main([*argv, "--method", "NoSuchCAM"]) == 2
    assert "unknown method 'NoSuchCAM'" in capsys.readouterr().err


def test_trust_refuses_what_it_cannot_do(tiny):
    big = np.zeros((1100, 1000, 3), np.uint8)
    pred = engine.Prediction(np.zeros((2, 1100, 1000), np.float32), np.zeros((1100, 1000), np.uint8))
    with pytest.raises(ValueError, match="1024×1024"):
        trust.faithfulness(tiny, big, TargetSpec("class", 1), pred, {})


def test_a_method_with_passes_of_its_own_is_checked_on_the_copy(tiny, image64):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    target = TargetSpec("class", 1)
    (report,) = trust.trust(tiny, image64, target, ["decoder.blocks.2"], [get_method("ScoreCAM-TopK")], cascade=False)
    assert report.method == "ScoreCAM-TopK"
    assert report.sanity.steps == ["everything"]
    # the score is the one of the map ScoreCAM-TopK gives on the shared model, checked alone
    cam = engine.run_method(tiny, image64, target, get_method("ScoreCAM-TopK"), "decoder.blocks.2").cam
    alone = trust.faithfulness(tiny, image64, target, engine.predict(tiny, image64), {"m": cam})["m"]
    assert report.faithfulness.score == pytest.approx(alone.score, abs=1e-6)
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())


def test_ssim_is_scikit_images_and_works_at_any_map_size():
    from skimage.metrics import structural_similarity

    from cam_core.trust import ssim

    rng = np.random.default_rng(0)
    a, b = ((m - m.min()) / (m.max() - m.min()) for m in (rng.random((64, 48)), rng.random((64, 48))))
    expected = structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)
    for side in (1, 2, 3, 6, 7, 10):  # smaller than the window: a uniform window that fits
        s = ssim(rng.random((side, side + 1)), rng.random((side, side + 1)))
        assert -1.0 <= s <= 1.0


def _sanity(name, rho, raw=None, shown_constant=False):
    """A one-step Sanity with ρ ``rho`` in every view (``raw``: the raw views' ρ instead)."""
    from cam_core.trust.randomisation import Comparison, Sanity

    raw = rho if raw is None else raw
    shown = Comparison([float("nan")], [float("nan")], 0) if shown_constant else Comparison([rho], [rho])
    return Sanity(
        name, "l", ["all"], {"raw": Comparison([raw], [raw]), "|raw|": Comparison([raw], [raw]), "shown": shown}
    )


def test_a_map_that_fails_sanity_never_ranks_first():
    from cam_core.trust.checks import TrustReport
    from cam_core.trust.deletion import FaithfulnessVerdict

    def report(name, score, rho):
        return TrustReport(
            name,
            "l",
            "c",
            "predicted",
            FaithfulnessVerdict(score, 0.0, 0.1, 0.5),
            _sanity(name, rho),
            0.0,
        )

    copies_the_image = report("copies", 0.9, 0.99)  # the most "faithful", and unchanged by random weights
    honest, weak = report("honest", 0.6, 0.05), report("weak", 0.2, 0.1)
    assert not copies_the_image.sanity.passed
    ranked = sorted([copies_the_image, weak, honest], key=TrustReport.rank_key)
    assert [r.method for r in ranked] == ["honest", "weak", "copies"]


def test_the_tile_suggestion_believes_first_never_suggests_dont_trust():
    """#23 item 2: one tile's suggestion by the verdicts' rule: a Believe over a more faithful
    Caution, a Don't trust (here the most faithful map, which copies the image) never."""
    from cam_core.trust import suggest_for_tile

    copies = _report(0.95, 0.40, 0.05, 0.3, _sanity("copies", 0.1, raw=0.97))
    caution = _report(0.90, 0.40, 0.05, 0.89, _sanity("caution", 0.1))
    believe = _report(0.70, 0.40, 0.05, 0.3, _sanity("believe", 0.1))
    better = _report(0.75, 0.40, 0.05, 0.3, _sanity("better", 0.1))
    for r, name in zip((copies, caution, believe, better), ("HiResCAM", "EigenCAM", "GradCAM", "FEM")):
        r.method = name  # methods of the registry (a name it does not know is never suggested)
    assert [r.verdict().level for r in (copies, caution, believe)] == ["dont", "caution", "believe"]
    assert suggest_for_tile([copies, caution, believe]) is believe
    assert suggest_for_tile([copies, caution, believe, better]) is better  # then the most faithful
    assert suggest_for_tile([copies, caution]) is caution
    assert suggest_for_tile([copies]) is None
    baseline = _report(0.99, 0.40, 0.05, 0.3, _sanity("random", 0.1))
    baseline.method = "RandomCAM"  # a reference that beat its peers on this tile: still no explanation
    assert baseline.verdict().level == "believe"
    assert suggest_for_tile([baseline, caution]) is caution


# ---------------------------------------------------------------- #23: sanity that does not rest on a convention

PROBE_TILES = ["test_12_002", "test_8_001", "test_10_013", "test_11_010"]


@pytest.fixture(scope="module")
def four_tile_probe():
    """The issue's probe: built-in model, decoder.blocks.2, predicted-region target, full cascade."""
    from cam_core.data import samples
    from cam_core.data.images import load_image
    from cam_core.model import models

    loaded = models.load(None)
    wanted = [get_method(n) for n in ("GradCAM", "XGradCAM", "HiResCAM")]
    out = {}
    for tile in PROBE_TILES:
        image = load_image(samples.file(tile)).array
        for s in trust.sanity(
            loaded, image, TargetSpec("predicted", None), {}, layers=["decoder.blocks.2"], methods=wanted
        ):
            out[(tile, s.method)] = s
    return out


@pytest.mark.slow
def test_a_map_that_collapses_when_randomised_is_degenerate_not_a_pass(four_tile_probe):
    """GradCAM's randomised map is all zero after ReLU on two tiles: ρ of the displayed maps does
    not exist (before: 0.000 → "pass"); the verdict rests on the raw maps, which vary."""
    for key in [("test_12_002", "GradCAM"), ("test_8_001", "GradCAM"), ("test_12_002", "XGradCAM")]:
        s = four_tile_probe[key]
        assert s.views["shown"].degenerate, (key, s.views["shown"])
        assert s.collapsed_at() is not None  # the step where it collapsed is named
        assert "constant" in s.describe()
        assert not s.views["raw"].degenerate
        assert abs(s.views["raw"].final) < trust.SANITY_MAX_RHO, (key, s.views["raw"].final)
        assert s.verdict == "pass", (key, s.verdict)


@pytest.mark.slow
def test_hirescam_keeps_its_magnitude_under_randomisation_and_fails(four_tile_probe):
    """HiResCAM's |raw| map barely moves when every weight is re-drawn (issue: ρ 0.87–1.00): it
    copies the target region. The displayed map hid this on test_8_001 (ρ 0.00 → "pass")."""
    for tile in PROBE_TILES:
        s = four_tile_probe[(tile, "HiResCAM")]
        assert s.views["|raw|"].final >= 0.8, (tile, s.views["|raw|"].final)
        assert s.verdict == "fail", (tile, s.describe())


def _report(score, random, sd, target, sanity):
    from cam_core.trust.checks import TrustReport
    from cam_core.trust.deletion import FaithfulnessVerdict

    return TrustReport("M", "l", "c", "predicted", FaithfulnessVerdict(score, random, sd, target), sanity, 0.0)


def test_one_verdict_per_map_with_its_reason_and_margins():
    """Believe / Caution / Don't trust from both checks, in one sentence that states the margins."""
    believe = _report(0.80, 0.40, 0.05, 0.60, _sanity("M", 0.1)).verdict()
    assert believe.level == "believe"
    assert believe.sentence().startswith("Believe this map: it passes sanity")
    caution = _report(0.802, 0.40, 0.05, 0.793, _sanity("M", 0.1)).verdict()
    assert caution.level == "caution"
    # the line: +0.802 does not beat the target mask's +0.793 — now with the rule's margin
    assert "no more than the target region itself (+0.79; margin +0.01, it must exceed 0.02)" in caution.reason
    assert "random maps' +0.40 ± 0.05 (margin +0.40; it must exceed 0.05)" in caution.reason
    unfaithful = _report(0.42, 0.40, 0.05, 0.2, _sanity("M", 0.1)).verdict()
    assert unfaithful.level == "dont"
    assert "no more faithful than random maps" in unfaithful.reason
    copies = _report(0.9, 0.4, 0.05, 0.3, _sanity("M", 0.1, raw=0.95)).verdict()
    assert copies.level == "dont"
    assert "raw ρ +0.95" in copies.reason  # the view that failed is named
    collapsed = _sanity("M", 0.1, raw=float("nan"), shown_constant=True)
    assert collapsed.verdict == "degenerate"
    assert _report(0.8, 0.4, 0.05, 0.3, collapsed).verdict().level == "caution"
    judged_on_raw = _sanity("M", 0.1, shown_constant=True)
    assert judged_on_raw.verdict == "pass"  # the displayed map collapsed; the raw maps decide
    assert "constant from step 'all'" in judged_on_raw.describe()
    record = _report(0.8, 0.4, 0.05, 0.3, judged_on_raw).record()
    assert record["sanity_rho"] is None  # no ρ for a constant map, in JSON too
    assert record["sanity_verdict"] == "pass"
    assert record["sanity_collapsed_at"] == "all"
    assert record["verdict"] == "believe"
    assert record["verdict_sentence"].startswith("Believe this map")


def test_localisation_against_the_truth_restates_quantus_for_objects():
    """Relevance mass (split by TP/FN/FP), rank accuracy and the pointing game over true objects,
    on a truth whose answers are known by construction."""
    from cam_core.data.truth import Truth
    from cam_core.trust.localisation import localisation

    labels = np.zeros((60, 80), np.uint8)
    labels[10:20, 10:20] = 1  # object A (100 px)
    labels[40:50, 50:60] = 1  # object B (100 px)
    labels[5:8, 70:78] = 2  # another class: not this target's
    truth = Truth(labels, False, "t.png", "0" * 64)
    predicted = np.zeros_like(labels)
    predicted[10:20, 10:15] = 1  # half of A found (TP 50, FN 50), B missed (FN 100)
    predicted[30:35, 30:40] = 1  # a false positive (50 px)
    cam = np.zeros((60, 80), np.float32)
    cam[12:14, 12:14] = 3.0  # 12 on A's found half
    cam[45, 55] = 4.0  # 4 on B (missed): B's peak is on B
    cam[31, 31] = 2.0  # 2 on the false positive
    cam[0, 0] = 2.0  # 2 on background
    cam[25, 25] = -9.0  # negative evidence counts as none
    loc = localisation(cam, predicted, truth, 1)
    assert loc.mass_on_truth == pytest.approx(16 / 20)
    assert loc.mass_on_tp == pytest.approx(12 / 20)
    assert loc.mass_on_fn == pytest.approx(4 / 20)
    assert loc.mass_on_fp == pytest.approx(2 / 20)
    assert loc.pointing_objects == 2
    assert loc.pointing_hits == 2
    assert loc.rank_accuracy == pytest.approx(5 / 200)  # 5 positive pixels among the top 200 ranked
    # the truth as a map: every mass on it, every top pixel true
    perfect = localisation((labels == 1).astype(np.float32), predicted, truth, 1)
    assert perfect.mass_on_truth == pytest.approx(1.0)
    assert perfect.rank_accuracy == pytest.approx(1.0)
    # a peak beside B, within its ring, is not a hit for B
    beside = cam.copy()
    beside[45, 55] = 0.0
    beside[45, 62] = 9.0
    assert localisation(beside, predicted, truth, 1).pointing_hits == 1
    # a map with no mass: shares undefined, never 0 % by accident
    empty = localisation(np.zeros_like(cam), predicted, truth, 1)
    assert empty.mass_on_truth is None
    assert empty.pointing_hits == 0
    assert "of the map's mass lies on the true objects" in loc.describe()
    assert loc.record()["pointing_rate"] == 1.0


class HaematoxylinModel(torch.nn.Module):
    """Class 1 scores the haematoxylin concentration of each pixel, nothing else: all the evidence
    is haematoxylin by construction."""

    def __init__(self) -> None:
        super().__init__()
        from cam_core.data.stain import HED_FROM_RGB

        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.register_buffer("h_from_od", torch.tensor(HED_FROM_RGB[:, 0], dtype=torch.float32))
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean).clamp_min(1e-6)
        od = -torch.log(rgb).permute(0, 2, 3, 1)
        h = (od @ self.h_from_od)[:, None]
        return torch.cat([torch.zeros_like(h), self.scale * h], dim=1)


def test_stain_evidence_finds_a_haematoxylin_only_model_and_adds_up():
    """Integrated Gradients through the colour deconvolution: a model that reads only
    haematoxylin gets ~100 % haematoxylin evidence; on a real UNet the three channels add up to
    the score's change from the unstained slide (completeness)."""
    from conftest import tiny_unet, wrap

    from cam_core.data import samples
    from cam_core.data.images import load_image
    from cam_core.trust.stain_evidence import stain_evidence

    image = load_image(samples.file("test_12_002")).array[:64, :64]
    spec = ModelSpec(classes=["background", "nucleus"], colors=OKABE_ITO[:2])
    only_h = LoadedModel("h", Path("."), HaematoxylinModel().eval(), spec, torch.device("cpu"), 8)
    ev = stain_evidence(only_h, image, TargetSpec("class", 1), steps=8)
    assert ev.shares()["haematoxylin"] > 0.999, ev
    assert ev.gap < 1e-3  # linear in the concentrations: the Riemann sum is exact
    assert "haematoxylin 100 %" in ev.describe()
    unet = wrap(tiny_unet())
    ev = stain_evidence(unet, image, TargetSpec("class", 1), steps=32)
    assert ev.gap < 0.1, ev  # completeness within 10 % at 32 steps
    assert abs(sum(ev.shares().values()) - 1) < 1e-9


def test_restain_stability_reports_the_map_and_the_prediction_side_by_side(tiny, image64, monkeypatch):
    """Map ρ and Dice per Tellez setting; a re-staining that changes nothing moves neither."""
    from cam_core.data import stain
    from cam_core.trust.stain_evidence import describe_restained, restain_stability

    info = get_method("GradCAM")
    target = TargetSpec("class", 1)
    cam = engine.cam_from_capture(
        engine.capture(tiny, image64, target, ["decoder.blocks.2"]), info, "decoder.blocks.2"
    ).cam
    rows = restain_stability(tiny, image64, target, info, "decoder.blocks.2", cam)
    assert [r.setting for r in rows] == list(stain.TELLEZ_SETTINGS)
    assert all(-1 <= r.map_rho <= 1 for r in rows)
    assert all(r.dice is None or 0 <= r.dice <= 1 for r in rows)
    assert "prediction Dice" in describe_restained(rows)
    monkeypatch.setitem(stain.TELLEZ_SETTINGS, "hed-light", 0.0)  # α = 1, β = 0: the tile itself
    same = restain_stability(tiny, image64, target, info, "decoder.blocks.2", cam)[0]
    assert same.map_rho > 0.999
    assert same.dice in (None, 1.0)
    with pytest.raises(Exception, match="one-pass method"):
        restain_stability(tiny, image64, target, get_method("ScoreCAM"), "decoder.blocks.2", cam)


class CueModel(torch.nn.Module):
    """Nuclei where a pixel is dark (a 1×1 conv: local); their class is "beta" when the tile holds
    green ink anywhere (``reads_ink``) and "alpha" otherwise: a shortcut by construction."""

    def __init__(self, reads_ink: bool) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.features = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.features.weight.fill_(-1.0)
            self.features.bias.fill_(1.2)  # > 0 where the mean of R, G, B is below 0.4
        self.reads_ink = reads_ink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.std + self.mean
        nucleus = 20 * self.features(rgb)
        ink = torch.relu(rgb[:, 1] - rgb[:, 0] - 0.2).amax(dim=(1, 2)).view(-1, 1, 1, 1)  # green over red
        beta = (40 * ink - 1) if self.reads_ink else torch.full_like(ink, -1.0)
        zero = torch.zeros_like(nucleus)
        return torch.cat([zero, nucleus - beta.clamp_min(0), nucleus + beta.clamp_max(0) + beta], dim=1)


def _tissue(seed: int) -> np.ndarray:
    """Pink stroma with purple nuclei (disks), 96² px."""
    rng = np.random.default_rng(seed)
    image = np.empty((96, 96, 3), np.uint8)
    image[:] = (232, 182, 204)
    yy, xx = np.mgrid[:96, :96]
    for cy, cx in rng.integers(8, 88, size=(9, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = (70, 40, 120)
    return image


def test_the_shortcut_audit_flags_a_model_that_reads_ink_and_not_one_that_does_not():
    """#23 item 7: the same marks on the same tiles; only the model whose class follows green ink
    anywhere in the tile is flagged, for the ink dot alone, and its nuclei far from the dot flip."""
    from cam_core.trust import audit

    spec = ModelSpec(classes=["background", "alpha", "beta"], colors=OKABE_ITO[:3])
    tiles = [_tissue(s) for s in range(3)]
    reports = {}
    for reads in (True, False):
        loaded = LoadedModel(
            "cue" if reads else "honest", Path("."), CueModel(reads).eval(), spec, torch.device("cpu"), 8
        )
        assert (engine.predict(loaded, tiles[0]).mask == 1).sum() > 200  # nuclei found, called alpha
        reports[reads] = audit.audit(loaded, tiles, layer="features", infos=[get_method("GradCAM")])
    cheat, honest = reports[True], reports[False]
    assert cheat.flagged() == {"ink dot": ["alpha", "beta"]}, cheat.markdown()
    assert honest.flagged() == {}, honest.markdown()
    dot = {r.cls: r for r in cheat.rows if r.marker == "ink dot"}
    assert dot["beta"].flip > 0.9
    assert dot["beta"].control == 0  # the same footprint only blurred: no ink, nothing moves
    assert dot["beta"].excess == dot["beta"].flip
    assert dot["beta"].tiles == 3
    assert all(r.flip == 0 for r in honest.rows)  # a local model: nothing clear of the mark moves
    assert 0.005 < dot["beta"].area_share < 0.2
    rec = cheat.record()
    assert rec["rule"] == audit.AUDIT_RULE
    assert rec["tiles"] == 3
    assert rec["layer"] == "features"
    assert {"marker", "cls", "flip", "mass", "matters", "looking"} <= set(rec["rows"][0])
    assert "**matters**" in cheat.markdown()
    assert "**matters**" not in honest.markdown()


@pytest.mark.parametrize("name", ["ink dot", "pen stroke", "slide border", "scanner stripe"])
def test_each_audit_mark_is_seeded_and_changes_only_its_footprint(name):
    from scipy import ndimage

    from cam_core.trust import audit

    image = _tissue(0)
    nuclei = image[..., 0] < 100
    a, foot = audit.plant_marker(name, image, nuclei, seed=4)
    b, foot_b = audit.plant_marker(name, image, nuclei, seed=4)
    assert (a == b).all()
    assert (foot == foot_b).all()
    changed = (a != image).any(axis=2)
    assert changed.any()
    assert not (changed & ~foot).any()
    assert 0.003 < foot.mean() < 0.25
    other, _ = audit.plant_marker(name, image, nuclei, seed=5)
    assert name == "slide border" or (other != a).any()  # another seed, another place (a border has 4)
    if name == "ink dot":
        assert not (ndimage.binary_dilation(foot) & nuclei).any()  # off the nuclei


def test_the_audit_names_its_marks():
    from cam_core.errors import UnknownNameError
    from cam_core.trust import audit

    with pytest.raises(UnknownNameError, match="valid audit marks: ink dot, pen stroke, slide border, scanner stripe"):
        audit.get_marker("coffee stain")


def test_audit_command_on_a_folder(tiny_folder, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "data" / "images").mkdir(parents=True)
    for s in range(2):
        Image.fromarray(_tissue(s)).save(tmp_path / "data" / "images" / f"t{s}.png")
    (tmp_path / "data" / "test.txt").write_text("t1\n")
    argv = ["audit", "--data", str(tmp_path / "data"), "--model", str(tiny_folder)]
    assert cli.main([*argv, "--markers", "ink dot,scanner stripe", "--json", "--out", str(tmp_path / "a.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads((tmp_path / "a.json").read_text())
    assert out["tiles"] == 2
    assert out["model"].endswith("tiny_unet")
    assert {r["marker"] for r in out["rows"]} == {"ink dot", "scanner stripe"}
    assert len(out["rows"]) == 2 * 2  # marks × foreground classes
    assert cli.main([*argv, "--split", "test", "--markers", "pen stroke"]) == 0
    text = capsys.readouterr().out
    assert "1 tiles" in text
    assert "| pen stroke | alpha |" in text
    assert "Rule: a mark matters" in text
    assert cli.main([*argv, "--markers", "coffee stain"]) == 2
    assert "unknown audit mark 'coffee stain'" in capsys.readouterr().err
