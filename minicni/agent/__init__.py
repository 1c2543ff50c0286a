"""minicni-agent, the node agent, in four layers, each importing only those below it:

- `service`: the running program: command line, node sources, the reconcile loop, health and
  metrics;
- `host`: what the agent installs on the node: the plugin (bundle or launcher), the conflist, its
  own state;
- `apply`: kernel appliers that diff the plan against the kernel and change only what differs
  (routes, VXLAN, the policy rule, iptables), and the node's own network facts;
- `model`: pure, no kernel: nodes, the plan, the firewall chains, the conflist's content.
"""
