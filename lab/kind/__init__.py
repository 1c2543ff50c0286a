"""minicni on a real multi-node cluster: kind with no CNI, the minicni image, the DaemonSet.

`prereqs` (what is missing and how to get it), `manifests` (the deployments/ documents, rendered
with an image), `inventory` (the matrix's endpoints from the probe pods), `cluster` (`KindLab`:
create, deploy, wait, look) and `__main__` (`python -m lab.kind up|down`, `make kind-up`).
"""
