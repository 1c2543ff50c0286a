"""The node's CNI network configuration list: what it says (`minicni.agent.host.conflist` writes
it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from minicni import defaults
from minicni.cni.version import SUPPORTED_VERSIONS

# The newest version every runtime generation in the field accepts: libcni 1.1 (containerd 1.6 and
# 1.7, podman 4, CRI-O of that era) ignores `cniVersions` and refuses a 1.1.0 result, while
# libcni >= 1.2 (containerd 2.x) picks the highest entry of `cniVersions` it knows -- 1.1.0, which
# brings STATUS and GC. The plugin answers in whichever version it is asked.
CNI_VERSION = "1.0.0"
CNI_VERSIONS = SUPPORTED_VERSIONS


@dataclass(frozen=True)
class ConflistSettings:
    pod_cidr: IPv4Network
    mtu: int
    data_dir: str
    log_file: str = defaults.LOG_FILE
    bridge: str = defaults.BRIDGE


def render(settings: ConflistSettings) -> str:
    plugin: dict[str, Any] = {
        "type": defaults.PLUGIN_NAME,
        "bridge": settings.bridge,
        "subnet": str(settings.pod_cidr),
        "mtu": settings.mtu,
        "hairpinMode": True,
        "isDefaultGateway": True,
        "dataDir": settings.data_dir,
        "logFile": settings.log_file,
    }
    document = {
        "cniVersion": CNI_VERSION,
        "cniVersions": list(CNI_VERSIONS),
        "name": defaults.NETWORK_NAME,
        "plugins": [plugin],
    }
    return json.dumps(document, indent=2) + "\n"
