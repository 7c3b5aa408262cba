"""The cells' networks without an engine: which /29 comes next, how the server tells it
runs in a container, and the host guard's rule."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from deployserver.runtime import cellnet
from deployserver.runtime.cellnet import free_subnet, own_container_id

POOL = IPv4Network("10.213.0.0/16")


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ([], "10.213.0.0/29"),
        (["10.213.0.0/29"], "10.213.0.8/29"),
        (["10.213.0.0/29", "10.213.0.16/29"], "10.213.0.8/29"),  # a gap is reused
        (["10.213.0.0/29", "10.213.0.8/29", "172.17.0.0/16"], "10.213.0.16/29"),
        (["10.213.0.0/24"], "10.213.1.0/29"),  # someone else's larger network
        (["10.213.0.4/30"], "10.213.0.8/29"),  # or a smaller one inside a candidate
        (["10.0.0.0/8"], None),  # the whole pool is in use
    ],
)
def test_free_subnet_is_the_lowest_that_overlaps_nothing(
    taken: list[str], expected: str | None
) -> None:
    found = free_subnet(POOL, [IPv4Network(t) for t in taken])
    assert (str(found) if found else None) == expected


def test_a_full_pool_has_no_free_subnet() -> None:
    small = IPv4Network("10.213.0.0/28")
    both = [IPv4Network("10.213.0.0/29"), IPv4Network("10.213.0.8/29")]
    assert free_subnet(small, both[:1]) == IPv4Network("10.213.0.8/29")
    assert free_subnet(small, both) is None


def test_the_server_finds_its_own_container_from_mountinfo(tmp_path: Path) -> None:
    cid = "25d75e4a84c2436f0b1ac72d22162eed6b419ef1c05d103fb06fbeb8a2d299bc"
    inside = tmp_path / "inside"
    inside.write_text(
        "71 60 0:50 / / rw - fuse.fuse-overlayfs fuse-overlayfs rw\n"
        f"89 71 254:0 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw - ext4 "
        "/dev/vda rw\n"
    )
    outside = tmp_path / "outside"
    outside.write_text("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")
    assert own_container_id(inside) == cid
    assert own_container_id(outside) is None
    assert own_container_id(tmp_path / "missing") is None


def test_the_host_guard_is_added_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    present: list[list[str]] = []

    def runner(args: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        rule = args[4:]
        if args[3] == "-C":
            return subprocess.CompletedProcess(args, 0 if rule in present else 1, "", "")
        present.append(rule)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(cellnet.shutil, "which", lambda _name: "/usr/sbin/iptables")
    monkeypatch.setattr(cellnet.os, "geteuid", lambda: 0)
    assert cellnet.install_host_guard(runner) is None
    assert cellnet.install_host_guard(runner) is None
    assert [c[3] for c in calls] == ["-C", "-I", "-C"]
    assert present == [cellnet.HOST_GUARD]
    rule = " ".join(cellnet.HOST_GUARD)
    assert rule.startswith("INPUT -i dsc+ -m conntrack --ctstate NEW,INVALID")
    assert rule.endswith("-j DROP")

    monkeypatch.setattr(cellnet.os, "geteuid", lambda: 1000)
    assert cellnet.install_host_guard(runner) == "the server does not run as root"


@pytest.mark.parametrize(
    ("subnets", "words"), [("10.213.0.0/30", "holds no /29"), ("10.213.0.1/16", "host bits")]
)
def test_a_pool_that_cannot_hold_a_cell_is_refused_at_start(subnets: str, words: str) -> None:
    from deployserver.runtime.base import RuntimeUnavailable

    with pytest.raises(RuntimeUnavailable, match=words):
        cellnet.CellNetworks(client=None, instance="x", subnets=subnets)  # type: ignore[arg-type]
