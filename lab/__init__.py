"""The minicni test harness: namespace and kind clusters, probes, the connectivity matrix."""
