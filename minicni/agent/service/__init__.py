"""The running agent: its command line (the only place agent flags are parsed), node sources, the
reconcile loop, /healthz, /readyz and /metrics."""
