"""The one cluster builder: a lab of node, pod and fabric namespaces, its agents and its state.

`build.NetnsLab` builds and removes a cluster; `fabric` wires the underlay; `agents` is the only
place `minicni-agent`'s flags are written; `processes` finds and stops what runs in the lab's
namespaces; `state` is the file that lets `minicni-lab down` remove a lab its creator left;
`daemonset` and `image_agents` run the DaemonSet's agent from the built image (`agent: image`).
"""
