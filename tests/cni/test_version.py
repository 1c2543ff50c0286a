"""Result conversion per version: 0.3.x and 0.4.0 carry ips[].version, 1.x do not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minicni.cni import version as cniversion

RESULT: dict[str, Any] = {
    "interfaces": [
        {"name": "minicni0", "mac": "00:00:00:00:00:01"},
        {"name": "vethabc", "mac": "00:00:00:00:00:02"},
        {"name": "eth0", "mac": "00:00:00:00:00:03", "mtu": 1500, "sandbox": "/run/netns/p"},
    ],
    "ips": [
        {"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 2},
        {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 2},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
    "dns": {"nameservers": ["10.96.0.10"]},
}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_before_1_0_ips_carry_their_version(version: str) -> None:
    original = copy.deepcopy(RESULT)
    converted = cniversion.convert_result(RESULT, version)
    assert converted["cniVersion"] == version
    assert [ip["version"] for ip in converted["ips"]] == ["4", "6"]
    assert [ip["interface"] for ip in converted["ips"]] == [2, 2]
    assert converted["interfaces"] == RESULT["interfaces"]
    assert converted["routes"] == RESULT["routes"]
    assert converted["dns"] == RESULT["dns"]
    assert original == RESULT  # the input is not modified


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_from_1_0_ips_have_no_version(version: str) -> None:
    converted = cniversion.convert_result(RESULT, version)
    assert converted["cniVersion"] == version
    assert all("version" not in ip for ip in converted["ips"])
    assert converted["ips"] == RESULT["ips"]


@pytest.mark.parametrize("version", cniversion.SUPPORTED_VERSIONS)
def test_normalize_reads_back_any_version(version: str) -> None:
    converted = cniversion.convert_result(RESULT, version)
    normalized = cniversion.normalize_result(converted)
    assert normalized["ips"] == RESULT["ips"]
    assert normalized["interfaces"] == RESULT["interfaces"]


def test_version_info() -> None:
    assert cniversion.version_info() == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


@pytest.mark.parametrize(
    ("command", "oldest"),
    [("ADD", "0.3.0"), ("DEL", "0.3.0"), ("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("GC", "1.1.0")],
)
def test_command_since(command: str, oldest: str) -> None:
    for version in cniversion.SUPPORTED_VERSIONS:
        allowed = cniversion.parse(version) >= cniversion.parse(oldest)
        if allowed:
            cniversion.require_command_allowed(command, version)
        else:
            with pytest.raises(cniversion.CniError) as caught:
                cniversion.require_command_allowed(command, version)
            assert caught.value.code == 1
