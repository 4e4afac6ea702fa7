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
