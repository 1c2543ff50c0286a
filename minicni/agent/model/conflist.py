"""The node's CNI network configuration list: what it says (`minicni.agent.host.conflist` writes
it).

With a `portmap` to chain (hostPort, as kindnet and flannel chain it), every plugin of the list
must accept the version a runtime picks for the whole list, so the list offers only the versions
both speak.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
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
    pod_cidrs: tuple[IPv4Network | IPv6Network, ...]
    """The node's pod CIDRs, one per family, IPv4 first."""
    mtu: int
    data_dir: str
    log_file: str = defaults.LOG_FILE
    bridge: str = defaults.BRIDGE
    portmap_versions: tuple[str, ...] | None = None
    """The versions of a `portmap` to chain (`minicni.agent.host.portmap`); None: not chained."""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def versions(settings: ConflistSettings) -> tuple[str, list[str]]:
    """`cniVersion` and `cniVersions`: with portmap only the versions both speak, and
    `cniVersion` the highest of them up to 1.0.0 (what libcni 1.1 runtimes accept)."""
    common = [v for v in CNI_VERSIONS if v in (settings.portmap_versions or CNI_VERSIONS)]
    capped = [v for v in common if _version_key(v) <= _version_key(CNI_VERSION)]
    return max(capped, key=_version_key), common


def chains_portmap(settings: ConflistSettings) -> bool:
    """portmap is chained when one is there and it speaks a version we do (up to 1.0.0)."""
    if not settings.portmap_versions:
        return False
    return any(
        v in settings.portmap_versions and _version_key(v) <= _version_key(CNI_VERSION)
        for v in CNI_VERSIONS
    )


def subnet(settings: ConflistSettings) -> str | list[str]:
    """The plugin's `subnet`: the pod CIDR, or the list of both for a dual-stack node (the
    plugin's config takes either; a single-stack node's conflist reads as it always did)."""
    cidrs = [str(cidr) for cidr in settings.pod_cidrs]
    return cidrs[0] if len(cidrs) == 1 else cidrs


def render(settings: ConflistSettings) -> str:
    plugin: dict[str, Any] = {
        "type": defaults.PLUGIN_NAME,
        "bridge": settings.bridge,
        "subnet": subnet(settings),
        "mtu": settings.mtu,
        "hairpinMode": True,
        "isDefaultGateway": True,
        "dataDir": settings.data_dir,
        "logFile": settings.log_file,
    }
    plugins = [plugin]
    if not chains_portmap(settings):
        settings = dataclasses.replace(settings, portmap_versions=None)
    else:
        # hostPort, as kindnet and flannel chain it; snat (portmap's default, spelt out) makes a
        # pod that reaches its own hostPort through the node's address see a reply (hairpin)
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    version, offered = versions(settings)
    document = {
        "cniVersion": version,
        "cniVersions": offered,
        "name": defaults.NETWORK_NAME,
        "plugins": plugins,
    }
    return json.dumps(document, indent=2) + "\n"
