"""Benchmark: reading the agent's iptables chains on a node whose nat table holds kube-proxy's.

`python -m lab.bench.firewall_read` (root). In a network namespace made for it (removed at the
end, also on failure), each backend's nat table is filled with kube-proxy-like chains for
`--services` Services (a KUBE-SVC and a KUBE-SEP chain each, ~6 rules a Service), and with our
MINICNI-POSTRTG chain. Then it times, as the agent's resync does:
  before  `iptables-save -t nat`, parsed for our chain (a dump of kube-proxy's whole table)
  after   `iptables -S MINICNI-POSTRTG` and `iptables -S POSTROUTING` (our chain and its jump)
and prints the median wall time and the bytes read. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Network

from minicni.agent.model.firewall import masquerade_spec, parse_chain
from minicni.net import netns

CLUSTER = "10.244.0.0/16"


def kube_proxy_nat(services: int) -> str:
    lines = [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    ]
    for i in range(services):
        svc, sep = f"KUBE-SVC-{i:016X}", f"KUBE-SEP-{i:016X}"
        vip = f"10.96.{i // 250}.{i % 250 + 1}"
        pod = f"10.244.{i // 250}.{i % 250 + 2}"
        lines += [
            f":{svc} - [0:0]",
            f":{sep} - [0:0]",
            f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "ns/svc-{i}:http cluster IP"'
            f" -m tcp --dport 80 -j {svc}",
            f'-A {svc} ! -s {CLUSTER} -d {vip}/32 -p tcp -m comment --comment "ns/svc-{i}:http"'
            " -m tcp --dport 80 -j KUBE-MARK-MASQ",
            f'-A {svc} -m comment --comment "ns/svc-{i}:http -> {pod}:8080" -j {sep}',
            f'-A {sep} -s {pod}/32 -m comment --comment "ns/svc-{i}:http" -j KUBE-MARK-MASQ',
            f'-A {sep} -p tcp -m comment --comment "ns/svc-{i}:http" -m tcp'
            f" -j DNAT --to-destination {pod}:8080",
        ]
    spec = masquerade_spec(IPv4Network(CLUSTER), [])
    lines += [f":{spec.chain} - [0:0]", *spec.rules, f"-A POSTROUTING -j {spec.chain}", "COMMIT"]
    return "\n".join(lines) + "\n"


def timed(action: Callable[[], int], repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        size = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), size


def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    spec = masquerade_spec(IPv4Network(CLUSTER), [])
    name = "mlbfw" + secrets.token_hex(3)
    netns.create(name)
    try:
        with netns.enter(netns.path_of(name)):
            payload = kube_proxy_nat(args.services)
            rules = sum(1 for line in payload.splitlines() if line.startswith("-A"))
            print(f"nat table: {rules} rules for {args.services} Services (kube-proxy-like)")
            for backend in ("nft", "legacy"):
                subprocess.run([f"iptables-{backend}-restore", "--noflush"], input=payload,
                               text=True, check=True, timeout=300)  # fmt: skip

                def before(backend: str = backend) -> int:
                    saved = run([f"iptables-{backend}-save", "-t", "nat"])
                    assert parse_chain(saved, spec).exists
                    return len(saved)

                def after(backend: str = backend) -> int:
                    tool = f"iptables-{backend}"
                    own = run([tool, "-w", "5", "-t", "nat", "-S", spec.chain])
                    builtin = run([tool, "-w", "5", "-t", "nat", "-S", "POSTROUTING"])
                    assert parse_chain(own + builtin, spec).jumps == 1
                    return len(own) + len(builtin)

                for label, action in (("iptables-save -t nat", before), ("-S our chains", after)):
                    seconds, size = timed(action, args.repeats)
                    print(
                        f"  {backend:6} {label:22} {seconds * 1000:8.1f} ms  {size:>10,} bytes read"
                    )
    finally:
        netns.remove(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
