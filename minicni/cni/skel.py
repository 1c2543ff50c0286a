"""The plugin contract in one function: `dispatch(env, stdin, load_plugin) -> (exit code, stdout)`.

Validates the environment and the config's version the way the reference skeleton does, then
hands a `Request` to the plugin. Every failure becomes one CNI error document; a `CniError` keeps
its code, anything else is logged with its traceback and reported as code 999. Nothing here
touches the kernel, so unit tests drive it with a dict and bytes.
"""

from __future__ import annotations

from minicni import fastjson
from minicni.cni import version as cniversion
from minicni.cni.errors import DECODING_FAILURE, INTERNAL, INVALID_ENVIRONMENT, CniError
from minicni.cni.validate import validate_container_id, validate_interface_name
from minicni.log import log
from minicni.record import Record

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the plugin does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Protocol

    class Plugin(Protocol):
        def add(self, request: Request) -> dict[str, Any]: ...

        def delete(self, request: Request) -> None: ...

        def check(self, request: Request) -> None: ...

        def status(self, request: Request) -> None: ...

        def gc(self, request: Request) -> None: ...


COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Which variables each command needs (SPEC section 2). CNI_PATH is not required: minicni delegates
# to no other plugin.
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}

_CNI_VARIABLES = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

# A config is a few hundred bytes; the largest legitimate one, GC's list of attachments, takes
# ~100 bytes a pod: 4 MiB is room for 40,000. Configs nest 4-5 levels (ipam.ranges[0][0]).
MAX_CONFIG_BYTES = 4 << 20
MAX_CONFIG_DEPTH = 64


class Request(Record):
    """One CNI call: the command, the runtime's variables and the decoded config."""

    __slots__ = ("args", "command", "config", "container_id", "ifname", "netns", "path", "version")

    def __init__(
        self,
        command: str,
        container_id: str,
        netns: str,
        ifname: str,
        args: Mapping[str, str],
        path: tuple[str, ...],
        config: Mapping[str, Any],
        version: str,
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.config = config
        self.version = version


def dispatch(
    env: Mapping[str, str], stdin: bytes, load_plugin: Callable[[], Plugin]
) -> tuple[int, bytes]:
    """Run one CNI command. Returns the exit code and exactly what belongs on stdout."""
    version = cniversion.CURRENT_VERSION
    try:
        command = _command(env)
        if command == "VERSION":
            # podman probes with nothing but {"cniVersion": ...}; VERSION needs no valid config.
            return 0, _encode(cniversion.version_info())
        config = decode_config(stdin)
        version = cniversion.require_supported(config.get("cniVersion"))
        cniversion.require_command_allowed(command, version)
        request = _request(command, env, config, version)
        plugin = load_plugin()
        if command == "ADD":
            return 0, _encode(cniversion.convert_result(plugin.add(request), version))
        {
            "DEL": plugin.delete,
            "CHECK": plugin.check,
            "STATUS": plugin.status,
            "GC": plugin.gc,
        }[command](request)
        return 0, b""
    except CniError as err:
        log.error("%s failed: %s (code %d)", env.get("CNI_COMMAND", "?"), err, err.code)
        return 1, _encode(err.to_json(version))
    except Exception as exc:  # the one place where anything unexpected is caught
        log.exception("internal error")
        internal = CniError(INTERNAL, "internal error in minicni", f"{type(exc).__name__}: {exc}")
        return 1, _encode(internal.to_json(version))


def decode_config(stdin: bytes) -> dict[str, Any]:
    """The config as a dict, parsed with bounds on its size, nesting and numbers (code 6)."""
    if len(stdin) > MAX_CONFIG_BYTES:
        raise CniError(DECODING_FAILURE, f"network config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = fastjson.loads(stdin)
    except RecursionError:
        raise CniError(
            DECODING_FAILURE, f"network config is nested deeper than {MAX_CONFIG_DEPTH} levels"
        ) from None
    except ValueError as exc:  # bad JSON or UTF-8, an integer of more than 4300 digits
        raise CniError(DECODING_FAILURE, "failed to decode network config", str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODING_FAILURE, "network config is not a JSON object")
    # Counting brackets is C-fast and rules out deep nesting for every ordinary config.
    if stdin.count(b"[") + stdin.count(b"{") > MAX_CONFIG_DEPTH and _deeper_than(
        config, MAX_CONFIG_DEPTH
    ):
        raise CniError(
            DECODING_FAILURE, f"network config is nested deeper than {MAX_CONFIG_DEPTH} levels"
        )
    return config


def _deeper_than(document: object, limit: int) -> bool:
    """Iteratively, so that no later recursion (repr, json.dumps) can hit Python's limit."""
    pending: list[tuple[object, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: list[object] = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def require_utf8(name: str, value: str) -> None:
    """os.environ hands over bytes that are not UTF-8 as lone surrogates (surrogateescape)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise CniError(INVALID_ENVIRONMENT, f"{name} is not valid UTF-8", ascii(value)) from None


def _command(env: Mapping[str, str]) -> str:
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
    require_utf8("CNI_COMMAND", command)
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command!r}")
    return command


def _request(command: str, env: Mapping[str, str], config: dict[str, Any], version: str) -> Request:
    for name in _CNI_VARIABLES:
        require_utf8(name, env.get(name, ""))
    missing = [name for name in _REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CniError(
            INVALID_ENVIRONMENT, f"required env variables [{', '.join(missing)}] missing"
        )
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id or "CNI_CONTAINERID" in _REQUIRED_ENV[command]:
        validate_container_id(container_id)
    ifname = env.get("CNI_IFNAME", "")
    if ifname or "CNI_IFNAME" in _REQUIRED_ENV[command]:
        validate_interface_name(ifname)
    return Request(
        command=command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
        config=config,
        version=version,
    )


def parse_cni_args(raw: str) -> dict[str, str]:
    """`K=V;K=V` as Kubernetes passes it (IgnoreUnknown=1;K8S_POD_NAMESPACE=...)."""
    args: dict[str, str] = {}
    for pair in filter(None, raw.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, "CNI_ARGS: invalid pair", repr(pair))
        args[key] = value
    return args


def _encode(document: Mapping[str, Any]) -> bytes:
    return fastjson.dumps(document).encode() + b"\n"
