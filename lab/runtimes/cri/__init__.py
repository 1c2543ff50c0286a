"""A CRI runtime for the lab: containerd per node, driven through the CRI as kubelet drives it."""
