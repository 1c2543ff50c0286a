"""CNI protocol layer: environment, versions, results and errors. Knows no kernel."""
