"""Config values that were accepted as nonsense: each is code 7 naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from minicni.cni.errors import CniError
from minicni.plugin.config import parse_netconf

BASE: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "n",
    "type": "minicni",
    "subnet": "10.1.0.0/24",
}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mtu", None),
        ("mtu", 1500.0),
        ("logFile", 0),
        ("logFile", True),
        ("logFile", []),
        ("logFile", {}),
        ("logFile", None),
        ("logFile", "relative.log"),
        ("logFile", ""),
        ("logFile", "/var/log/\x00x"),
        ("logFile", "/var/log/\ud800"),
        ("logFile", "/" + "a" * 5000),
        ("bridge", "rt%d"),
        ("bridge", "rt\x00x"),
        ("bridge", "br\ud800"),
        ("bridge", "a-bridge-name-16"),
        ("bridge", "."),
        ("bridge", "br/0"),
        ("bridge", "br:0"),
        ("bridge", "br 0"),
        ("dataDir", "/var/lib/\ud800"),
        ("name", "n" * 256),
        ("prevResult", None),
        ("dns", None),
    ],
)
def test_nonsense_is_code_7_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(CniError) as raised:
        parse_netconf(dict(BASE, **{key: value}))
    assert raised.value.code == 7, raised.value
    assert key in raised.value.msg
    assert "\n" not in str(raised.value)


def test_an_absolute_log_file_and_a_fifteen_byte_bridge_are_fine() -> None:
    conf = parse_netconf(dict(BASE, logFile="/var/log/x.log", bridge="b" * 15, mtu=1400))
    assert (conf.bridge, conf.mtu) == ("b" * 15, 1400)
