"""Local Ray must listen on loopback only (no dashboard, no external node address)."""

import ipaddress
from pathlib import Path

import pytest


def _listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this machine, from /proc/net/tcp{,6}."""
    found = set()
    for name, _width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc stores each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return found


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@pytest.mark.ray
def test_local_ray_listens_on_loopback_only():
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this platform to read listening sockets from")
    import ray

    from hwsearch.search.executors import start_local_ray, stop_ray

    before = _listening()
    temp_dir = start_local_ray(1)
    try:
        assert ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote()) == "127.0.0.1"
        new = _listening() - before
        assert new, "Ray started no listening socket?"
        assert [a for a in new if not _is_loopback(a[0])] == []
    finally:
        stop_ray(temp_dir)
