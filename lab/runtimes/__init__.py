"""What adds pods to a lab's nodes: `libcni.CniRuntime`, a small runtime modelled on libcni."""
