"""What adds pods to a lab's nodes: `libcni.CniRuntime`, a small runtime modelled on libcni, or
`cri`, a containerd per node driven through its CRI as kubelet drives it."""
