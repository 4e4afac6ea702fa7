"""Recovering winners before they ship: speedup targets, distillation with resume, the manifest's recovery group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hwsearch.cli import main
from hwsearch.compress.recover import RecoverySettings, distil
from hwsearch.context import build, resolve
from hwsearch.errors import HwsearchError
from hwsearch.export import export_run, load_index, parse_targets, pick_targets
from hwsearch.export.targets import Point
from hwsearch.families import get_family
from hwsearch.options import CompressOptions
from hwsearch.policy import Policy
from tests.conftest import TINY_TRAIN, TINY_VGG
from tests.synthetic_run import record, write_run

BUDGETS = {"cpu-1t": None}
PRUNED = {"keep": {"features.0": 0.5, "features.4": 0.5}}
LIGHT = {"keep": {"features.8": 0.875}}  # scores about as the dense model does without any recovery
PRUNED_INT8 = {"keep": {"features.0": 0.5, "features.4": 0.5}, "default_precision": "int8"}
FRONT = [Point(1, 0.95, 1.4), Point(2, 0.93, 2.1), Point(3, 0.90, 3.2), Point(4, 0.97, 1.1), Point(5, None, 9.0), Point(6, 0.80, None)]


def test_targets_parse_and_reject_bad_values():
    assert parse_targets("3x, 2x,2X,4.5") == (2.0, 3.0, 4.5)
    for bad in ("1x", "0.5x", "fast", "2x,,3x", "-2x"):
        with pytest.raises(HwsearchError, match="--targets 2x,3x,4x"):
            parse_targets(bad)


def test_each_target_gets_the_most_accurate_point_that_reaches_it():
    picks = {p.target: p for p in pick_targets(FRONT, (1.05, 2.0, 3.0), "cpu-1t", "accuracy")}
    assert picks[1.05].trial == 4  # every scored, measured point reaches 1.05x: the best score wins
    assert picks[2.0].trial == 2 and picks[2.0].speedup == 2.1  # trial 1 (0.95) is only 1.4x
    assert picks[3.0].trial == 3  # trial 5 (9x) has no score, so it is not eligible
    assert "0.9300" in picks[2.0].reason and "cpu-1t" in picks[2.0].reason


def test_a_target_no_point_reaches_says_how_close_the_front_came():
    (pick,) = pick_targets(FRONT, (4.0,), "cpu-1t", "accuracy")
    assert pick.trial is None and pick.score is None
    assert "no front point reaches 4x on cpu-1t" in pick.reason and "trial 3, measured 3.20x" in pick.reason and "lower the target" in pick.reason
    (empty,) = pick_targets([], (2.0,), "cpu-1t", "accuracy")
    assert empty.trial is None and "no front point was measured" in empty.reason


def test_recovery_settings_reject_bad_values():
    for kwargs, flag in (({"steps": 0}, "--recover-steps"), ({"steps": 5, "lr": 2.0}, "--recover-lr"), ({"steps": 5, "batch_size": 0}, "--recover-batch")):
        with pytest.raises(HwsearchError, match=flag):
            RecoverySettings(**kwargs)
    resolved = RecoverySettings(10).resolved(get_family("cnn"))
    assert (resolved.lr, resolved.batch_size) == (0.01, 64)


def test_the_encoder_fine_tunes_at_its_own_rate_unless_told():
    """0.01 (the CNNs' SGD rate) collapsed every MiniLM embedding to one vector: the encoder's default is AdamW's 5e-5."""
    enc, cnn = get_family("encoder"), get_family("cnn")
    assert enc.finetune_lr(CompressOptions()) == 5e-5 and cnn.finetune_lr(CompressOptions()) == 0.01
    assert enc.finetune_lr(CompressOptions(finetune_lr=1e-4)) == 1e-4
    from hwsearch.config import parse_config

    cfg = resolve(parse_config({"task": "digits", "model": "vgg", "devices": {"cpu-1t": {"table": "builtin:cpu-1t"}}}, "x", Path(".")))
    assert cfg.compress.finetune_lr == 0.01 and cfg.to_dict()["compress"]["finetune_lr"] == 0.01


class Stop(Exception):
    pass


def _ctx():
    return build("digits", "vgg", model_options=TINY_VGG, train=TINY_TRAIN.__dict__, options=CompressOptions(finetune_steps=0, bn_recalib_batches=0))


def _student(ctx):
    from hwsearch.compress.realise import compressed_model

    return compressed_model(ctx, Policy.from_dict(PRUNED))


def test_a_killed_recovery_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(tmp_path):
    ctx = _ctx()
    settings = RecoverySettings(12, batch_size=32, checkpoint_s=0.0)
    whole = _student(ctx)
    run = distil(ctx.family, ctx.task, whole, ctx.baseline.model, settings, ctx.options)
    assert run.resumed_from_step == 0 and run.steps == 12 and run.optimizer == "SGD"

    def kill_at_7(step, steps, loss, seconds):
        if step == 7:
            raise Stop

    ckpt = tmp_path / "recovery.ckpt.pt"
    broken = _student(ctx)
    with pytest.raises(Stop):
        distil(ctx.family, ctx.task, broken, ctx.baseline.model, settings, ctx.options, ckpt, {"policy": "p"}, kill_at_7)
    assert ckpt.is_file()
    other = _student(ctx)
    assert distil(ctx.family, ctx.task, other, ctx.baseline.model, settings, ctx.options, ckpt, {"policy": "another"}).resumed_from_step == 0  # another identity starts over
    resumed = _student(ctx)
    ckpt_again = tmp_path / "again.pt"
    with pytest.raises(Stop):
        distil(ctx.family, ctx.task, _student(ctx), ctx.baseline.model, settings, ctx.options, ckpt_again, {"policy": "p"}, kill_at_7)
    run = distil(ctx.family, ctx.task, resumed, ctx.baseline.model, settings, ctx.options, ckpt_again, {"policy": "p"})
    assert run.resumed_from_step == 7  # the checkpoint written after step 7 (the kill came in that step's progress call)
    assert not ckpt_again.exists()
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_vgg):
    recs = [record(0, 0.70, {"cpu-1t": 0.05}, PRUNED_INT8, {}), record(1, 0.74, {"cpu-1t": 0.08}, PRUNED, {}),
            record(2, 0.60, {"cpu-1t": 0.5}, {"default_keep": 1.0}, {}), record(3, 0.72, {"cpu-1t": 0.45}, LIGHT, {})]
    return write_run(tmp_path_factory.mktemp("recoverrun"), "rec", BUDGETS, recs, model_options=TINY_VGG, train=TINY_TRAIN,
                     compress={"finetune_steps": 0, "bn_recalib_batches": 0})


@pytest.fixture(scope="module")
def recovered(run_dir):
    manifests = export_run(run_dir, targets=(1.01, 1000.0), recovery=RecoverySettings(30, batch_size=32), rounds=1)
    return {m.trial: m for m in manifests}


def test_targets_export_the_front_and_recover_only_the_picks(run_dir, recovered):
    assert sorted(recovered) == [0, 1]  # the front; trials 2 (prunes nothing) and 3 are dominated and exported by --trial only
    picks = json.loads((run_dir / "export" / "targets.json").read_text())
    assert picks["device"] == "cpu-1t" and picks["targets"] == ["1.01x", "1000x"]
    first, impossible = picks["picks"]
    assert first["trial"] is not None and impossible["trial"] is None and "no front point reaches 1000x" in impossible["reason"]
    for trial, m in recovered.items():
        assert (m.recovery is not None) == (trial == first["trial"])
    index = load_index(run_dir)
    assert [p["target"] for p in index["targets"]["picks"]] == ["1.01x", "1000x"]
    assert index["targets"]["picks"][0]["final_speedup"] == recovered[first["trial"]].latency["cpu-1t"]["speedup_vs_dense"]


def test_the_manifest_records_the_recovery(run_dir, recovered):
    trial = json.loads((run_dir / "export" / "targets.json").read_text())["picks"][0]["trial"]
    m = recovered[trial]
    r = m.recovery
    assert r["steps"] == 30 and r["batch_size"] == 32 and r["lr"] == 0.01 and r["seconds"] > 0 and r["optimizer"] == "SGD"
    assert set(r["before"]) == set(r["after"]) == {"test_accuracy", "validation_accuracy"}
    assert r["teacher"]["model"] == "vgg" and r["teacher"]["checkpoint"].endswith(".pt") and "KL" in r["loss"]
    assert r["kept"] in ("recovered", "unrecovered")
    if r["kept"] == "recovered":
        assert r["after"]["validation_accuracy"] >= r["before"]["validation_accuracy"] and m.validation_score == r["after"]["validation_accuracy"]
    else:
        assert m.validation_score == r["before"]["validation_accuracy"]
    assert m.ok and json.loads((run_dir / "export" / str(trial) / "manifest.json").read_text())["recovery"] == r
    assert not (run_dir / "export" / str(trial) / "recovery.ckpt.pt").exists() and not list((run_dir / "export" / str(trial)).glob("model.recovered*"))


def test_recovery_lifts_a_pruned_winner_and_a_second_export_reuses_it(run_dir):
    """Trial 1 is pruned without any recovery in the search (its BatchNorm statistics are stale): distillation lifts it."""
    (run_dir / "export" / "1" / "recovery.json").unlink(missing_ok=True)  # the targets' export may have recovered it already
    (m,) = export_run(run_dir, trials=[1], pareto=False, recovery=RecoverySettings(30, batch_size=32), rounds=1)
    r = m.recovery
    assert r["kept"] == "recovered" and r["weights"] == "recovered.pt" and not r["reused_finished_recovery"]
    assert r["after"]["validation_accuracy"] > r["before"]["validation_accuracy"] + 0.2 and m.validation_score == r["after"]["validation_accuracy"]
    assert (run_dir / "export" / "1" / "recovered.pt").is_file()
    (again,) = export_run(run_dir, trials=[1], pareto=False, recovery=RecoverySettings(30, batch_size=32), rounds=1)
    assert again.recovery["reused_finished_recovery"] is True and again.recovery["after"] == r["after"]


def test_a_recovery_that_hurts_is_not_shipped(run_dir):
    """A learning rate far too high wrecks a lightly pruned winner's weights: the unrecovered file ships and the manifest says why."""
    (m,) = export_run(run_dir, trials=[3], pareto=False, recovery=RecoverySettings(15, lr=0.9, batch_size=32), rounds=1)
    r = m.recovery
    assert r["kept"] == "unrecovered" and "lowered the validation score" in r["reason"] and r["weights"] is None
    assert r["after"]["validation_accuracy"] < r["before"]["validation_accuracy"] == m.validation_score


def test_a_winner_that_prunes_nothing_is_not_distilled(run_dir):
    """Its fp32 weights are the teacher's own: the recovery says so and ships the file as built."""
    (m,) = export_run(run_dir, trials=[2], pareto=False, recovery=RecoverySettings(15, batch_size=32), rounds=1)
    r = m.recovery
    assert r["kept"] == "unrecovered" and "prunes nothing" in r["reason"] and r["steps"] == 0 and r["before"] == r["after"]
    assert not (run_dir / "export" / "2" / "recovered.pt").exists()


def test_cli_flags_are_checked_before_any_work(run_dir, capsys):
    for argv, needle in ((["--targets", "1x"], "Speedup target '1x'"), (["--recover-lr", "0.1"], "--recover-lr needs --recover-steps"),
                         (["--device", "cpu-1t"], "give --targets too"), (["--targets", "2x", "--trial", "1"], "does not take --trial"),
                         (["--targets", "2x", "--device", "gpu"], "Device 'gpu' is not one of the run's devices"), (["--rounds", "0"], "--rounds 0")):
        assert main(["export", str(run_dir), *argv]) == 2, argv
        assert needle in capsys.readouterr().err, argv


def test_the_dashboard_shows_recovered_points_beside_the_front(run_dir):
    from hwsearch.dashboard import write_dashboard
    from hwsearch.dashboard.data import load_dashboard_data

    export_run(run_dir, trials=[1], pareto=False, recovery=RecoverySettings(30, batch_size=32), rounds=1)  # reused when already recovered
    m = json.loads((run_dir / "export" / "1" / "manifest.json").read_text())
    data = load_dashboard_data(run_dir)
    (point,) = [r for r in data.recovered if r.trial == 1]
    assert point.before == m["recovery"]["before"]["validation_accuracy"] and point.after == m["recovery"]["after"]["validation_accuracy"]
    assert point.kept == "recovered" and point.steps == 30 and point.predicted_ms["cpu-1t"] == m["latency"]["cpu-1t"]["predicted_ms"]
    (row,) = [w for w in data.winner_rows if w.trial == 1]
    assert row.recovery.startswith("recovered, 30 steps: validation ") and "→" in row.recovery
    page = write_dashboard(run_dir).read_text()
    assert "recovered export (after)" in page and "recovered, 30 steps" in page
