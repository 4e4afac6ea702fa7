"""Measurement routed to the device: a device whose config names ``ray_resources`` is timed on the Ray
node that has them (here a second node on 127.0.0.1 carrying ``{"edge-board": 1}``, started in its own
process by tests/ray_cluster_proc.py), with plain data back; a device without resources is timed here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hwsearch import context
from hwsearch.config import DeviceSpec, parse_config
from hwsearch.errors import HwsearchError
from hwsearch.export import verify
from hwsearch.export.winners import Device
from hwsearch.latency import check
from hwsearch.runtime.remote import Router, timer_for
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, Timing, time_model
from tests.ray_cluster import loopback_cluster
from tests.test_ray_loopback import _is_loopback, _listening

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent / "latency_tables" / "cpu-1t"
EDGE = {"edge-board": 1}
TIMING = MeasureSettings(warmup=3, min_runs=20, min_time_s=0.02)


def _table_key(resources) -> dict:
    return {"devices": {"edge": {"table": str(SHIPPED), "ray_resources": resources}}, "ray_address": "127.0.0.1:6379"}


def test_ray_resources_in_the_config_are_checked_with_one_line_errors(tmp_path: Path) -> None:
    cfg = parse_config(_table_key({"edge-board": 1}), "x", tmp_path)
    assert cfg.devices[0].ray_resources == {"edge-board": 1.0}
    assert cfg.to_dict()["devices"]["edge"]["ray_resources"] == {"edge-board": 1.0}  # config.json keeps it, and reads back the same
    assert parse_config(cfg.to_dict(), "x", tmp_path).devices == cfg.devices
    assert "ray_resources" not in parse_config({"devices": {"cpu": {"table": str(SHIPPED)}}}, "x", tmp_path).to_dict()["devices"]["cpu"]
    for bad, says in [({"edge-board": 0}, "ray_resources.edge-board' has value 0"), ({}, "non-empty table"), ([1], "non-empty table"),
                      ({"edge-board": True}, "a number > 0"), ({"": 1}, "non-empty strings"), ("edge-board", "non-empty table")]:
        with pytest.raises(HwsearchError) as err:
            parse_config(_table_key(bad), "x", tmp_path)
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(HwsearchError, match='names ray_resources, which only a Ray cluster has, but ray_address is ""') as err:
        parse_config({"devices": {"edge": {"table": str(SHIPPED), "ray_resources": EDGE}}}, "x", tmp_path)
    assert "\n" not in str(err.value)
    assert timer_for("cpu", None) is time_model and isinstance(timer_for("edge", EDGE, "127.0.0.1:1"), Router)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A small real ONNX model: a conv net exported from torch by the project's exporter."""
    import torch

    from hwsearch.runtime.onnx_export import export

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    return export(net, torch.randn(1, 1, 16, 16), tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-node loopback cluster in its own process; the second node carries ``edge-board``. Stopped by PID (its own process group)."""
    before = _listening()
    with loopback_cluster(tmp_path_factory.mktemp("cluster"), EDGE) as (_, info):
        yield info
        new = _listening() - before
        assert [a for a in new if not _is_loopback(a[0])] == []  # nothing of the cluster or the routed measurements beyond loopback


def _edge_node(address: str) -> str:
    """The node id of the cluster's node that has ``edge-board`` (asked of Ray itself)."""
    import ray

    from hwsearch.runtime.remote import join_cluster

    join_cluster(address)
    try:
        (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "edge-board" in n["Resources"]]
        return node
    finally:
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_a_routed_measurement_runs_on_the_node_with_the_resource(cluster, model_file: Path) -> None:
    import ray

    edge = _edge_node(cluster["address"])
    router = Router("edge", EDGE, cluster["address"])
    settings = SessionSettings(threads=1)
    try:
        got = [router(model_file, settings, TIMING) for _ in range(2)]
        assert ray.is_initialized()  # joined on first use, kept for the next file
    finally:
        router.close()
    assert not ray.is_initialized()  # it left the cluster it joined; the cluster runs on
    assert all(type(t) is Timing and all(type(getattr(t, f)) in (float, int) for f in ("p10_us", "median_us", "p90_us", "runs")) for t in got)
    assert all(0 < t.p10_us <= t.median_us <= t.p90_us and t.runs >= TIMING.min_runs for t in got)
    where = router.where()
    assert json.loads(json.dumps(where)) == where  # plain data
    assert where["routed"] and where["nodes"] == [edge] and where["measurements"] == 2 and where["resources"] == {"edge-board": 1.0}
    for placement in router.placements:  # in a worker process of the second node's raylet, not here, not on the head
        assert placement["node_id"] == edge and placement["pid"] != os.getpid()
        assert placement["ppid"] == cluster["raylets"]["second"] != cluster["raylets"]["head"]
    local = time_model(model_file, settings, TIMING)  # the same file timed here: the same order of magnitude
    assert 0.2 < got[0].p10_us / local.p10_us < 5.0


@pytest.mark.ray
@pytest.mark.slow
def test_a_resource_no_node_has_is_a_one_line_error(cluster, model_file: Path) -> None:
    import ray

    router = Router("gpu", {"gpu-board": 1}, cluster["address"])
    with pytest.raises(HwsearchError, match=r"no node of the Ray cluster .* has resources \{'gpu-board': 1.0\}.*ray start --address") as err:
        router(model_file, SessionSettings(), TIMING)
    assert "\n" not in str(err.value) and not ray.is_initialized()
    with pytest.raises(HwsearchError, match="no Ray cluster is given; set ray_address"):
        Router("edge", EDGE, "")(model_file, SessionSettings(), TIMING)


def _device(name: str, resources=None) -> Device:
    return Device.from_spec(DeviceSpec(name, str(SHIPPED), None, "off", resources))


@pytest.mark.ray
@pytest.mark.slow
def test_export_re_measures_a_routed_device_on_its_node_and_the_others_here(cluster, model_file: Path, monkeypatch) -> None:
    edge = _edge_node(cluster["address"])
    here: list[int] = []

    def local_timer(*args, **kwargs):  # the real timing loop, recording that it ran in this process
        here.append(os.getpid())
        return time_model(*args, **kwargs)

    monkeypatch.setattr(verify, "time_model", local_timer)
    feed = {"input": np.random.default_rng(0).standard_normal((1, 1, 16, 16), dtype=np.float32)}
    where: dict = {}
    value, p90, notes = verify.measure_devices([_device("edge", EDGE), _device("cpu-1t")], model_file, feed, cluster["address"], where)
    assert set(value) == {"edge", "cpu-1t"} and all(isinstance(v, float) and v > 0 for v in value.values()) and notes == []
    assert all(p90[d] >= value[d] for d in value)
    assert where["edge"]["routed"] and where["edge"]["nodes"] == [edge] and where["edge"]["measurements"] == 1
    assert where["cpu-1t"]["routed"] is False and here == [os.getpid()]  # only the device without resources was timed here, once
    assert json.loads(json.dumps(where)) == where
    value, _, notes = verify.measure_devices([_device("gpu", {"gpu-board": 1})], model_file, feed, cluster["address"])  # failures are data
    assert value == {"gpu": None} and len(notes) == 1 and "no node of the Ray cluster" in notes[0]


@pytest.mark.ray
@pytest.mark.slow
def test_the_table_check_of_a_routed_device_times_its_reference_models_on_its_node(cluster, tmp_path: Path) -> None:
    edge = _edge_node(cluster["address"])
    table = tmp_path / "cpu-1t"
    shutil.copytree(SHIPPED, table, ignore=shutil.ignore_patterns("adaptations", "reference.json"))
    check.derive_reference(table, context.reference_specs(str(table)), n=3)
    used = context.ensure_adaptation(DeviceSpec("edge", str(table), adapt="auto", ray_resources=EDGE), progress=False, ray_address=cluster["address"])
    assert used["mode"] == "auto" and (table / "adaptations" / f"{used['adaptation']}.json").is_file()
    on = used["measured_on"]
    assert on["routed"] and on["nodes"] == [edge] and on["measurements"] in (3 * check.CHECK_ROUNDS, 6 * check.CHECK_ROUNDS)  # every round of every model (twice if retried)
    assert json.loads(json.dumps(on)) == on and json.dumps(used)  # plain data, as runs/NAME/adaptation.json stores it


def test_the_measuring_commands_check_their_ray_options(capsys) -> None:
    from hwsearch.cli import main

    for argv, says in [(["--ray-resources", '{"edge-board": 0}', "--ray-address", "127.0.0.1:1"], "has value 0"), (["--ray-resources", "{x"], "is not JSON"),
                       (["--ray-resources", '{"edge-board": 1}'], "--ray-resources needs --ray-address"), (["--ray-address", "127.0.0.1:1"], "needs --ray-resources")]:
        assert main(["validate-table", str(SHIPPED), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err


@pytest.mark.ray
@pytest.mark.slow
def test_validate_table_with_ray_options_times_on_the_node_with_the_resource(cluster, tmp_path: Path, capsys) -> None:
    from hwsearch.cli import main

    edge = _edge_node(cluster["address"])
    table = tmp_path / "cpu-1t"
    shutil.copytree(SHIPPED, table, ignore=shutil.ignore_patterns("adaptations"))
    argv = ["validate-table", str(table), "--task", "digits", "--model", "resnet20", "--random-init", "--samples", "2", "--rounds", "2", "--drift", "0",
            "--min-runs", "10", "--min-time", "0.01", "--adapt", "off", "--quiet", "--ray-address", cluster["address"], "--ray-resources", json.dumps(EDGE)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_models"] == 2 and out["measured_on"]["nodes"] == [edge] and out["measured_on"]["measurements"] == 4  # 2 models x 2 rounds, all on the board


def test_where_a_device_is_measured_is_not_part_of_a_runs_identity(tmp_path: Path) -> None:
    from hwsearch.search.study import check_resume

    run = tmp_path / "run"
    run.mkdir()
    check_resume(parse_config(_table_key(EDGE), "x", tmp_path), run)
    check_resume(parse_config({"devices": {"edge": {"table": str(SHIPPED)}}}, "x", tmp_path), run)  # measured here now: the same experiment
    assert "ray_resources" not in json.loads((run / "config.json").read_text())["devices"]["edge"]
    with pytest.raises(HwsearchError, match="holds a search with devices="):
        check_resume(parse_config({"devices": {"edge": {"table": str(SHIPPED), "budget_ms": 1.0}}}, "x", tmp_path), run)
