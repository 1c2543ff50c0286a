"""Pure, no kernel: validated nodes, the plan of routes and VXLAN peers, the firewall chains and
the conflist the node should have. Table tests need nothing but these modules."""
