"""Kernel appliers: each reads what is in place, diffs it against the plan and changes only what
differs, reporting failures per item. `network` runs one pass of them in order; all of them speak
to the kernel through `minicni.net`, except the firewall (iptables-restore)."""
