"""The agent's configuration, as its command line (`cli`) gives it to the reconciler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minicni import defaults
from minicni.agent.model.nodes import ClusterCidrs
from minicni.agent.model.plan import Backend


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    cluster_cidr: ClusterCidrs
    backend: Backend = Backend.AUTO
    cni_conf_dir: Path = Path(defaults.CNI_CONF_DIR)
    cni_bin_dir: Path = Path(defaults.CNI_BIN_DIR)
    state_dir: Path = Path(defaults.STATE_DIR)
    ipam_data_dir: str = defaults.DATA_DIR
    plugin_install: str = defaults.PLUGIN_INSTALL
    plugin_dir: Path = Path(defaults.PLUGIN_DIR)
    plugin_log_file: str = defaults.LOG_FILE
    cni_socket: str = defaults.CNI_SOCKET
    """Where the agent serves CNI requests; the plugin it installs is a shim that connects there.
    Empty: no server, and the plugin runs in-process."""
    firewall: str = defaults.FIREWALL
    mtu: int | None = None
    cni_exclusive: bool = False
