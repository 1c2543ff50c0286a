"""`python -m lab.kind up|down` (`make kind-up`, `make kind-down`): a kind cluster running
minicni, kept until `down`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from lab.kind.cluster import KindLab, KindSettings
from lab.kind.prereqs import PrerequisiteError


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lab.kind up|down`: a kind cluster running minicni, kept until `down`."""
    parser = argparse.ArgumentParser(prog="python -m lab.kind", description=main.__doc__)
    parser.add_argument("action", choices=("up", "down"))
    args = parser.parse_args(argv)
    settings = dataclasses.replace(KindSettings.from_env(), keep_cluster=True)
    lab = KindLab(settings)
    try:
        if args.action == "down":
            lab.delete()
            return 0
        lab.up()
    except PrerequisiteError as error:
        print(error, file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as error:
        print(f"kind cluster {settings.cluster_name}: {error}", file=sys.stderr)
        return 1
    print(f"cluster {settings.cluster_name} is up with minicni ({settings.image}).")
    print(f"  export KUBECONFIG={lab.kubeconfig}")
    print("  kubectl get pods -A -o wide")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
