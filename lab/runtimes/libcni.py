"""A small container runtime modelled on libcni: run a conflist's plugins for one attachment.

Which config version it uses is libcni's choice, by generation: libcni 1.1 (containerd 1.6/1.7,
podman 4) takes `cniVersion` as it stands and refuses a result of a version it does not know;
libcni >= 1.2 (containerd 2.x) takes the highest version it knows among `cniVersions` and
`cniVersion`.

ADD runs the plugins in order, each given the previous one's result as `prevResult`, and caches
the final result (as libcni does under /var/lib/cni/results); CHECK and DEL hand the cached result
to every plugin as `prevResult`, DEL in reverse order. `exec_prefix` runs the plugin somewhere
else: in the lab it is `ip netns exec <node>`, so the plugin sees the node namespace as its host.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minicni.fileutil import write_atomic

CACHE_KIND = "cniCacheV1"

# The config and result versions each libcni generation knows.
_LIBCNI_1_1 = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
LIBCNI_KNOWN_VERSIONS = {"1.1": _LIBCNI_1_1, "1.2": (*_LIBCNI_1_1, "1.1.0")}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def select_version(conflist: Mapping[str, Any], libcni: str) -> str:
    """The config version a libcni generation runs a conflist at (libcni's ConfListFromBytes)."""
    version = str(conflist.get("cniVersion", ""))
    offered = conflist.get("cniVersions")
    if libcni == "1.1" or not isinstance(offered, list):
        return version
    known = LIBCNI_KNOWN_VERSIONS[libcni]
    usable = [v for v in (*offered, version) if isinstance(v, str) and v in known]
    return max(usable, key=_version_key) if usable else version


class CniPluginError(RuntimeError):
    """A plugin failed: its CNI error (code, msg, details) and what it wrote on stderr."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str, stderr: str):
        super().__init__(f"{plugin} {command} failed: code {code}: {msg} {details}".strip())
        self.plugin, self.command, self.code = plugin, command, code
        self.msg, self.details, self.stderr = msg, details, stderr


@dataclass(frozen=True)
class Attachment:
    container_id: str
    netns: str  # path, e.g. /run/netns/ml3f2a-n1p0
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS pairs
    capability_args: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """libcni's CapabilityArgs, e.g. {"portMappings": [{"hostPort": 8080, "containerPort": 80,
    "protocol": "tcp"}]}: each plugin gets, as `runtimeConfig`, those it declares in its
    `capabilities` (kubelet's runtime passes a pod's hostPorts this way)."""

    def cni_args(self) -> str:
        return ";".join(f"{key}={value}" for key, value in self.args)


class CniRuntime:
    def __init__(
        self,
        conflist: Mapping[str, Any],
        bin_dirs: Sequence[str],
        cache_dir: str,
        exec_prefix: Sequence[str] = (),
        timeout: float = 60.0,
        libcni: str = "1.2",
    ) -> None:
        if not conflist.get("plugins"):
            raise ValueError("conflist has no plugins")
        if libcni not in LIBCNI_KNOWN_VERSIONS:
            raise ValueError(f"libcni generation must be one of {tuple(LIBCNI_KNOWN_VERSIONS)}")
        self.conflist = dict(conflist)
        self.libcni = libcni
        self.bin_dirs = list(bin_dirs)
        self.cache_dir = cache_dir
        self.exec_prefix = list(exec_prefix)
        self.timeout = timeout

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> CniRuntime:
        with open(path, encoding="utf-8") as stream:
            return cls(json.load(stream), **kwargs)

    @property
    def network_name(self) -> str:
        return str(self.conflist["name"])

    @property
    def version(self) -> str:
        return select_version(self.conflist, self.libcni)

    # ------------------------------------------------------------ the operations

    def add(self, attachment: Attachment) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            result = self._exec("ADD", plugin, attachment, result)
        assert result is not None
        self._save_cache(attachment, result)
        return result

    def check(self, attachment: Attachment) -> None:
        cached = self.cached_result(attachment)
        if cached is None:
            raise LookupError(f"no cached result for {attachment.container_id}/{attachment.ifname}")
        for plugin in self.conflist["plugins"]:
            self._exec("CHECK", plugin, attachment, cached)

    def delete(self, attachment: Attachment) -> None:
        """DEL in reverse order with the cached result; the cache goes only when all succeeded."""
        cached = self.cached_result(attachment)
        for plugin in reversed(self.conflist["plugins"]):
            self._exec("DEL", plugin, attachment, cached)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._cache_path(attachment))

    def status(self) -> None:
        for plugin in self.conflist["plugins"]:
            self._exec("STATUS", plugin, None, None)

    # ------------------------------------------------------------ plumbing

    def cached_result(self, attachment: Attachment) -> dict[str, Any] | None:
        try:
            with open(self._cache_path(attachment), encoding="utf-8") as stream:
                cached = json.load(stream)
        except FileNotFoundError:
            return None
        result = cached.get("result")
        return result if isinstance(result, dict) else None

    def _cache_path(self, attachment: Attachment) -> str:
        name = f"{self.network_name}-{attachment.container_id}-{attachment.ifname}"
        return os.path.join(self.cache_dir, "results", name)

    def _save_cache(self, attachment: Attachment, result: dict[str, Any]) -> None:
        entry = {
            "kind": CACHE_KIND,
            "containerId": attachment.container_id,
            "ifName": attachment.ifname,
            "networkName": self.network_name,
            "cniArgs": [list(pair) for pair in attachment.args],
            "capabilityArgs": dict(attachment.capability_args),
            "config": self.conflist,
            "result": result,
        }
        write_atomic(self._cache_path(attachment), json.dumps(entry).encode(), durable=False)

    def plugin_path(self, plugin_type: str) -> str:
        for directory in self.bin_dirs:
            candidate = os.path.join(directory, plugin_type)
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(f"plugin {plugin_type!r} not found in {':'.join(self.bin_dirs)}")

    def network_config(
        self,
        plugin: Mapping[str, Any],
        prev_result: Mapping[str, Any] | None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What a plugin of the list sees on stdin (libcni's buildOneConfig, with
        injectRuntimeConfig: only the capabilities the plugin declares)."""
        config = {"cniVersion": self.version, "name": self.network_name, **plugin}
        declared = plugin.get("capabilities")
        if isinstance(declared, Mapping) and capability_args:
            runtime_config = {
                name: value for name, value in capability_args.items() if declared.get(name) is True
            }
            if runtime_config:
                config["runtimeConfig"] = runtime_config
        if prev_result is not None:
            config["prevResult"] = prev_result
        return config

    def _exec(
        self,
        command: str,
        plugin: Mapping[str, Any],
        attachment: Attachment | None,
        prev_result: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        plugin_type = str(plugin["type"])
        env = dict(os.environ)
        env.update({"CNI_COMMAND": command, "CNI_PATH": os.pathsep.join(self.bin_dirs)})
        if attachment is not None:
            env.update(
                {
                    "CNI_CONTAINERID": attachment.container_id,
                    "CNI_NETNS": attachment.netns,
                    "CNI_IFNAME": attachment.ifname,
                    "CNI_ARGS": attachment.cni_args(),
                }
            )
        capability_args = attachment.capability_args if attachment is not None else None
        stdin = json.dumps(self.network_config(plugin, prev_result, capability_args)).encode()
        completed = subprocess.run(
            [*self.exec_prefix, self.plugin_path(plugin_type)],
            input=stdin,
            env=env,
            capture_output=True,
            timeout=self.timeout,
        )
        stdout = completed.stdout.decode(errors="replace").strip()
        stderr = completed.stderr.decode(errors="replace").strip()
        if completed.returncode != 0:
            try:
                error = json.loads(stdout)
            except ValueError:
                error = {"code": 999, "msg": stdout or "no output"}
            raise CniPluginError(
                plugin_type,
                command,
                int(error.get("code", 999)),
                str(error.get("msg", "")),
                str(error.get("details", "")),
                stderr,
            )
        if command != "ADD":
            return dict(prev_result or {})
        try:
            result = json.loads(stdout)
        except ValueError as err:
            raise CniPluginError(
                plugin_type, command, 999, "result is not JSON", stdout, stderr
            ) from err
        if not isinstance(result, dict):
            raise CniPluginError(
                plugin_type, command, 999, "result is not an object", stdout, stderr
            )
        result_version = result.get("cniVersion")
        if result_version not in LIBCNI_KNOWN_VERSIONS[self.libcni]:
            raise CniPluginError(
                plugin_type,
                command,
                999,
                f"unsupported CNI result version {result_version!r}",
                f"libcni {self.libcni} knows {', '.join(LIBCNI_KNOWN_VERSIONS[self.libcni])}",
                stderr,
            )
        return result
