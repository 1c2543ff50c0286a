"""`python -m lab.kind up|down` (`make kind-up`, `make kind-down`): a kind cluster running
minicni, kept until `down`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from lab.kind.cluster import KindLab, KindSettings
from lab.kind.prereqs import PrerequisiteError, check_kind, check_prerequisites, format_missing

EXIT_OK, EXIT_FAILED, EXIT_MISSING = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.kind", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    args = parser.parse_args(argv)
    settings = dataclasses.replace(KindSettings.from_env(), keep_cluster=True)
    name = settings.cluster_name
    if args.action == "down":
        missing, cannot = check_kind(), f"cannot delete the kind cluster {name}"
    else:
        missing, cannot = check_prerequisites(), f"cannot create the kind cluster {name}"
    if missing:
        print(format_missing(missing, cannot), file=sys.stderr)
        return EXIT_MISSING
    lab = KindLab(settings)
    try:
        if args.action == "down":
            lab.delete()
            return EXIT_OK
        lab.up()
    except PrerequisiteError as error:  # went missing since the check above
        print(format_missing(error.missing, cannot), file=sys.stderr)
        return EXIT_MISSING
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"kind cluster {name}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"cluster {name} is up with minicni ({settings.image}).")
    print(f"  export KUBECONFIG={lab.kubeconfig}")
    print("  kubectl get pods -A -o wide")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
