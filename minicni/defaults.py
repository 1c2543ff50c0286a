"""Every default minicni's programs share, once: the plugin, the agent and the conflist the agent
writes for the plugin must agree on them. Plain constants only: the plugin imports this module on
every pod start.
"""

# The network and the plugin, as the runtime sees them.
PLUGIN_NAME = "minicni"
"""The plugin's executable in the CNI bin dir, and so the `type` in its network config."""
NETWORK_NAME = "minicni"
CONFLIST_NAME = "10-minicni.conflist"
BRIDGE = "minicni0"

# Paths on the node.
CNI_CONF_DIR = "/etc/cni/net.d"
CNI_BIN_DIR = "/opt/cni/bin"
PLUGIN_DIR = "/opt/minicni"
"""The plugin's own runtime (install mode "bundle")."""
DATA_DIR = "/var/lib/cni/networks"
"""The plugin's address store: `<DATA_DIR>/<network name>/`."""
LOG_FILE = "/var/log/minicni.log"
"""The plugin's log file."""
STATE_DIR = "/var/lib/minicni"
"""The agent's last good node set."""
CNI_SOCKET = "/run/minicni/cni.sock"
"""Where the agent serves the plugin's CNI requests (its shim connects here); the DaemonSet mounts
the host's /run/minicni."""

# The agent.
CLUSTER_CIDR = "10.244.0.0/16"
PLUGIN_INSTALL = "bundle"
FIREWALL = "iptables"
ROUTE_PROTOCOL = 109
"""Private routing protocol number (unassigned in /etc/iproute2/rt_protos); marks the agent's
routes and policy rule, so a resync removes exactly its own stale ones."""
