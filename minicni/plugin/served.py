"""The plugin as the node agent's CNI server runs it: the one dispatch (`skel.dispatch`, the same
ADD, DEL and CHECK as the executable's), with the pod's namespace reached through the socket the
shim passed, no sysctl written, and a DEL's kernel work left for after its answer.

The agent imports the plugin from this module only: the one edge between the two programs that the
import contracts allow (pyproject.toml).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import NamedTuple

from minicni.cni import skel
from minicni.cni.errors import CniError
from minicni.log import log
from minicni.net.sysctl import FORWARDING, read_sysctl
from minicni.plugin import context
from minicni.plugin.commands import HostView
from minicni.plugin.commands import look_ahead as look_ahead_of
from minicni.plugin.config import NetConf, parse_netconf
from minicni.plugin.main import Commands

_agent_log = logging.getLogger("minicni")
# The plugin's log lines of a served request go to the agent's log (its stderr), not to the
# config's logFile, a host path the agent's container does not have.
log.add_sink(lambda level, text: _agent_log.log(logging.getLevelName(level), text))


class Served(NamedTuple):
    code: int
    stdout: bytes
    deferred: list[Callable[[], None]]
    """Work to run after the answer is sent (a DEL's links and address, an ADD's spare), in
    order."""


def serve(
    env: Mapping[str, str],
    stdin: bytes,
    pod_socket: int | None,
    netns_errno: int,
    *,
    netns_file: int | None = None,
    ahead: HostView | None = None,
) -> Served:
    """Run one request. `pod_socket`: the NETLINK_ROUTE socket the shim made in CNI_NETNS;
    `netns_file`: instead, for a DEL, CNI_NETNS itself, opened (the caller keeps and closes
    either); `netns_errno`: why there is neither when CNI_NETNS was given; `ahead`: what
    `look_ahead` read (the caller closes it)."""
    conf = _netconf(stdin)
    ctx = context.served(pod_socket, netns_errno, netns_file, netconf=conf, ahead=ahead)
    code, out = skel.dispatch(env, stdin, lambda: Commands(lambda: ctx))
    return Served(code, out, ctx.deferred if code == 0 else [])


def look_ahead(command: str, stdin: bytes) -> HostView | None:
    """For an ADD, what it reads of the node before it changes anything, read while its shim
    makes the pod's socket (the agent has nothing else to do then); None for anything else, or
    a config that does not parse. Read only: the request may yet be abandoned."""
    conf = _netconf(stdin) if command == "ADD" else None
    return look_ahead_of(conf) if conf is not None else None


_NETCONFS: dict[bytes, NetConf] = {}
_NETCONFS_MAX = 64
"""Configs parsed, by their bytes: a node's pods are wired with one config (~0.15 ms a parse, and
each request needed two: to admit it, and to run it). Bounded; emptied when full."""


def _netconf(stdin: bytes) -> NetConf | None:
    """The config `stdin` holds, parsed; None when it does not parse (the dispatch then reports
    that as it does in-process)."""
    conf = _NETCONFS.get(stdin)
    if conf is not None:
        return conf
    try:
        config = json.loads(stdin) if stdin else None
        if not isinstance(config, dict) or "name" not in config:
            return None
        conf = parse_netconf(config)
    except (ValueError, RecursionError, CniError):
        return None
    if len(_NETCONFS) >= _NETCONFS_MAX:
        _NETCONFS.clear()
    _NETCONFS[stdin] = conf
    return conf


class Refusal(NamedTuple):
    reason: str  # the refusals metric's label, and the shim's log
    detail: str


def refusal(command: str, stdin: bytes, data_dir: str) -> Refusal | None:
    """Why the agent cannot serve this request (the shim then runs it in-process), else None:
    the config's address store (dataDir) lies outside the agent's data dir, the only one it shares
    with the host (the DaemonSet mounts it); or an ADD while forwarding of a family the network has
    (IPv4, and IPv6 for a network with an IPv6 range) is off, which the in-process plugin turns on
    and the agent, with /proc/sys read-only, cannot. A config that does not parse is served: its
    error is the same on either path."""
    conf = _netconf(stdin)
    if conf is None:
        return None
    root = os.path.normpath(data_dir)
    store = os.path.normpath(conf.data_dir)
    if store != root and not store.startswith(root.rstrip("/") + "/"):
        return Refusal("dataDir", f"dataDir {conf.data_dir} is outside the agent's {data_dir}")
    if command == "ADD":
        for version in conf.versions:
            key = FORWARDING[version]
            if read_sysctl(key) != "1":
                reason = "ip_forward" if version == 4 else "ipv6_forwarding"
                return Refusal(reason, f"{key} is off; the agent does not write it")
    return None


def finish_recorded_deletes(data_dir: str) -> list[str]:
    """Finish every DEL recorded under `data_dir` and not finished (an agent stopped between its
    answer and the kernel work): the agent runs this before it serves. Returns what it finished,
    as `network: container/ifname`."""
    if not os.path.isdir(data_dir):
        return []
    from minicni.plugin.commands import finish_recorded_deletes as finish

    finished = []
    for network in sorted(os.listdir(data_dir)):
        store_dir = os.path.join(data_dir, network)
        if os.path.isdir(store_dir) and not os.path.islink(store_dir):
            finished += [f"{network}: {attachment}" for attachment in finish(store_dir)]
    return finished
