"""minicni: a Kubernetes CNI plugin (bridge + veth, node-local IPAM) and its node agent.

Keep this module empty of imports: the plugin executable pays for every import on every pod start.
"""

__version__ = "0.1.0"
