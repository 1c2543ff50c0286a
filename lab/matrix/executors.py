"""Where probes run: endpoints of a cluster, and how to run a command at one of them.

One matrix runner serves every kind of cluster: it only asks an executor for the argv that runs a
probe at an endpoint. The netns lab uses `ip netns exec`; a kind cluster uses `kubectl exec`, where
an endpoint's handle is "<namespace>/<pod>" and the probe pods run the minicni image, which carries
the `lab` package: same probes, same verdicts as in network namespaces. Executors only build argv
lists; they run nothing themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

POD = "pod"
NODE = "node"
PROBE_CONTAINER = "probe"
IPV4, IPV6 = "ipv4", "ipv6"
FAMILIES = (IPV4, IPV6)


def family_of(address: str) -> str:
    return IPV6 if ":" in address else IPV4


@dataclass(frozen=True)
class Endpoint:
    name: str  # display name, e.g. "n1/p0" or "n1"
    kind: str  # "pod" or "node"
    node: str  # node name the endpoint lives on
    ip: str  # address others use to reach it (its first family's)
    handle: str  # how the executor reaches it: netns name, or "<k8s namespace>/<pod name>"
    ips: tuple[str, ...] = ()  # every address, one per family, IPv4 first; () means (ip,)

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ips or (self.ip,)

    def address(self, family: str) -> str | None:
        """The endpoint's address of `family` (IPV4 or IPV6), None if it has none."""
        return next((ip for ip in self.addresses if family_of(ip) == family), None)


class Executor(Protocol):
    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        """The full argv that runs `python -m lab.probes *argv` at `endpoint`."""
        ...


class NetnsExecutor:
    """Runs probes in network namespaces (root needed): a named one with `ip netns exec`, one
    given by its path (a CRI sandbox's, mounted under its containerd's state dir) with `nsenter`."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        probe = [self.python, "-m", "lab.probes", *argv]
        if endpoint.handle.startswith("/"):
            return ["nsenter", f"--net={endpoint.handle}", *probe]
        return ["ip", "netns", "exec", endpoint.handle, *probe]


def split_handle(handle: str) -> tuple[str, str]:
    """("namespace", "pod") from "namespace/pod"; a bare pod name is refused, never guessed."""
    namespace, sep, pod = handle.partition("/")
    if not sep or not namespace or not pod or "/" in pod:
        raise ValueError(f"kubectl endpoint handle {handle!r} is not '<namespace>/<pod>'")
    return namespace, pod


@dataclass(frozen=True)
class KubectlExecutor:
    """Runs probes in Kubernetes pods with `kubectl exec`: the kind executor of the matrix."""

    kubeconfig: Path | None = None
    kubectl: str = "kubectl"
    container: str | None = PROBE_CONTAINER
    python: str = "python3"
    # kubectl's own timeout for the API round trips (not the probe's): a stuck API server fails the
    # cell with `!` instead of hanging the matrix.
    request_timeout: str = "30s"

    def base(self) -> list[str]:
        command = [self.kubectl]
        if self.kubeconfig is not None:
            command += ["--kubeconfig", str(self.kubeconfig)]
        return command

    def command(self, endpoint: Endpoint, argv: Sequence[str]) -> list[str]:
        namespace, pod = split_handle(endpoint.handle)
        serving = bool(argv) and argv[0] == "serve"
        command = self.base()
        if not serving:  # a server lives for a whole phase: no time-out on its stream
            command += ["--request-timeout", self.request_timeout]
        command += ["exec", "--namespace", namespace, pod]
        if serving:
            # a probe server stops when its stdin ends: pass ours, so killing kubectl stops it
            command.append("--stdin")
        if self.container:
            command += ["--container", self.container]
        return [*command, "--", self.python, "-m", "lab.probes", *argv]


@dataclass(frozen=True)
class Service:
    """A ClusterIP Service of the cluster, one port of one protocol: the matrix probes
    <cluster_ip>:<port>, and a probe server on <target_port> answers in each endpoint, a pod of
    the inventory named in `endpoints`."""

    name: str
    proto: str  # "tcp" or "udp"
    cluster_ip: str
    port: int
    target_port: int
    endpoints: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} {self.cluster_ip}:{self.port}/{self.proto}"


@dataclass(frozen=True)
class Inventory:
    """What the matrix needs to know about a cluster: its endpoints, each tagged with its node,
    and the Services in front of some of its pods.

    Node endpoints are the nodes' own network namespaces (hostNetwork on kind); the order of
    `endpoints` is the order of rows and columns in the grids.
    """

    endpoints: tuple[Endpoint, ...]
    name: str = ""
    services: tuple[Service, ...] = ()

    def __post_init__(self) -> None:
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("endpoint names must be unique")
        for endpoint in self.endpoints:
            if endpoint.kind not in (POD, NODE):
                raise ValueError(f"{endpoint.name}: kind must be pod or node")
        pods = {e.name for e in self.endpoints if e.kind == POD}
        for service in self.services:
            if service.proto not in ("tcp", "udp"):
                raise ValueError(f"service {service.name}: protocol must be tcp or udp")
            strangers = sorted(set(service.endpoints) - pods)
            if strangers:
                raise ValueError(f"service {service.name}: endpoints not pods: {strangers}")
            if len(set(service.endpoints)) != len(service.endpoints):
                raise ValueError(f"service {service.name}: an endpoint is listed twice")

    @classmethod
    def build(
        cls, endpoints: Iterable[Endpoint], name: str = "", services: Iterable[Service] = ()
    ) -> Inventory:
        return cls(tuple(endpoints), name, tuple(services))

    def endpoint(self, name: str) -> Endpoint:
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise KeyError(name)

    @property
    def pods(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.kind == POD)

    @property
    def nodes(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.kind == NODE)

    @property
    def families(self) -> tuple[str, ...]:
        """The families some pod has an address of (IPv4 first): the matrix probes each."""
        return tuple(f for f in FAMILIES if any(p.address(f) for p in self.pods))

    def to_mapping(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoints": [asdict(e) for e in self.endpoints],
            "services": [asdict(s) for s in self.services],
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Inventory:
        services = tuple(
            Service(**{**s, "endpoints": tuple(s["endpoints"])}) for s in data.get("services", [])
        )
        endpoints = tuple(
            Endpoint(**{**e, "ips": tuple(e.get("ips") or ())}) for e in data["endpoints"]
        )
        return cls(endpoints, str(data.get("name", "")), services)
