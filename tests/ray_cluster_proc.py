"""A two-node Ray cluster on 127.0.0.1 in its own process, for tests/test_ray_cluster.py.

``python tests/ray_cluster_proc.py INFO_JSON [RESOURCES_JSON]``: starts a head (1 CPU, resource ``head``) and a second
node (1 CPU, resource ``second``, plus RESOURCES_JSON's, e.g. ``{"edge-board": 1}``) with Ray's own ``ray.cluster_utils.Cluster``, writes the GCS
address and the raylet PIDs to INFO_JSON, then reads commands from stdin, one per line:
``lose-second`` kills the second node and adds a replacement (1 CPU, resource ``third``, like an
autoscaler would), then rewrites INFO_JSON; ``quit`` (or EOF) shuts the cluster down.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep every Ray server on 127.0.0.1 (see the README)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
TEMP_DIR = tempfile.mkdtemp(prefix="hwclu-", dir="/tmp")  # short: Ray's unix sockets live here
os.makedirs(os.path.join(TEMP_DIR, "ray"))
os.environ["RAY_TMPDIR"] = TEMP_DIR  # Ray's address file too: nothing in the shared /tmp/ray

from ray.cluster_utils import Cluster  # noqa: E402


def _raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def main(info_path: str, extra: dict | None = None) -> None:
    temp_dir = TEMP_DIR
    head_args = {"node_ip_address": "127.0.0.1", "include_dashboard": False, "num_cpus": 1, "resources": {"head": 1}, "temp_dir": temp_dir}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    nodes = {"head": cluster.head_node, "second": cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, resources={"second": 1, **(extra or {})})}

    def write() -> None:
        info = {"address": cluster.address, "pid": os.getpid(), "temp_dir": temp_dir, "raylets": {k: _raylet_pid(n) for k, n in nodes.items()}}
        with open(info_path + ".tmp", "w") as fh:
            json.dump(info, fh)
        os.replace(info_path + ".tmp", info_path)

    cluster.wait_for_nodes()
    write()
    try:
        for line in sys.stdin:
            if line.strip() == "lose-second":
                cluster.remove_node(nodes.pop("second"), allow_graceful=False)
                nodes["third"] = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, resources={"third": 1})
                cluster.wait_for_nodes()
                write()
            elif line.strip() == "quit":
                break
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)
