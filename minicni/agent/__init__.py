"""minicni-agent: the node agent (node source -> pure plan -> netlink, iptables, conflist)."""
