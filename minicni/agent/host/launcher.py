"""Install the plugin executable into the CNI bin dir, atomically.

Modes:
- "launcher": a small /bin/sh launcher that runs the plugin with the Python this process runs on.
  For hosts that have that Python (a pip-installed agent, the network-namespace lab).
- "bundle": the plugin and the Python runtime it needs are copied under `runtime_dir` and the
  launcher runs them from there, so the host needs no Python at all (kind's node images have
  none). This is what the DaemonSet uses.

With a CNI socket (the agent serves CNI requests, `--cni-socket`), the launcher runs the shim
(`minicni.agent.host.shim`) instead: compiled here, by the interpreter that will run it, it
forwards each request to the agent and runs the plugin in-process only when the agent cannot take
it. That launcher is itself a Python script (`shim_script`) the kernel starts with the interpreter
(`#!python -ISB`): no /bin/sh in between, ~1 ms of every CNI call on a 2-CPU node. Where the
interpreter cannot be named on a "#!" line, a /bin/sh launcher runs `python -I -S -B shim.pyc
SOCKET` instead. The bundle's interpreter, whose ._pth file stands for those flags, runs the shim
compiled with its socket in it straight from a "#!" line (`pyc_launcher`).
"""

from __future__ import annotations

import errno
import importlib.util
import marshal
import os
import re
import shlex
import stat
import sys
from pathlib import Path

from minicni import defaults
from minicni.fileutil import write_atomic

MODES = ("bundle", "launcher", "none")


SHIM_SOURCE = Path(__file__).with_name("shim.py")


SHEBANG_MAX = 127
"""Bytes of a "#!" line every Linux reads whole (BINPRM_BUF_SIZE was 128 before 5.1, 256 since)."""


def shebang_max(release: str | None = None) -> int:
    """Bytes of a "#!" line the running kernel reads whole, which is the node's: the agent runs
    there. `release`: as `uname -r` says it (default: this kernel's)."""
    found = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    if found is None:
        return SHEBANG_MAX
    return 255 if (int(found[1]), int(found[2])) >= (5, 1) else SHEBANG_MAX


PYC_HEADER = 16  # magic, flags, and the source's timestamp and size (zero: see compiled_shim)


def shebang_safe(python: str) -> bool:
    """Whether `python` can be the interpreter of a "#!python -ISB" line: the kernel ends the
    interpreter's path at the first blank, and reads no further than SHEBANG_MAX bytes."""
    line = f"#!{python} -ISB"
    return (
        python.startswith("/")
        and not any(char in python for char in " \t\n\0")
        and len(line.encode()) <= SHEBANG_MAX
    )


def shim_script(python: str, shim: Path, cni_socket: str, *, site: bool, about: str) -> bytes:
    """A launcher the kernel starts with `python` itself, which runs the compiled shim: -I (the
    runtime's PYTHONPATH, PYTHONHOME... cannot reach it), -S (no site: the fallback sets it up
    when `site`, for an interpreter whose packages live in site-packages), -B. The shim's code is
    read from its .pyc (a script is compiled on every run; this one is four lines). `about`: the
    comment that says who wrote it and what runs. The caller checks `shebang_safe(python)`."""
    if not shebang_safe(python):
        raise ValueError(f"{python!r} cannot be named on a #! line")
    argv = [cni_socket, "site"] if site else [cni_socket]
    comment = "".join(f"# {line}\n" if line else "#\n" for line in about.splitlines())
    return (
        f"#!{python} -ISB\n"
        f"{comment}"
        "import marshal, sys\n"
        f"sys.argv[1:] = {argv!r}\n"
        f"with open({str(shim)!r}, 'rb') as pyc:\n"
        f"    shim = marshal.loads(pyc.read()[{PYC_HEADER}:])\n"
        "exec(shim)\n"
    ).encode()


def launcher_script(python: str, shim: Path | None = None, cni_socket: str = "") -> bytes:
    """The launcher of mode "launcher": the shim when there is a CNI socket (`site`, for the
    fallback only: the agent's packages live in its venv's site-packages), else the plugin."""
    if shim is not None and cni_socket and shebang_safe(python):
        about = (
            "minicni CNI plugin launcher, written by minicni-agent: the shim, which forwards\n"
            "the request to the agent's CNI socket, or runs the plugin in-process."
        )
        return shim_script(python, shim, cni_socket, site=True, about=about)
    if shim is not None and cni_socket:
        run = f"{shlex.quote(python)} -I -S -B {shlex.quote(str(shim))} {shlex.quote(cni_socket)}"
        return (
            "#!/bin/sh\n"
            "# minicni CNI plugin launcher, written by minicni-agent: the shim, which forwards\n"
            "# the request to the agent's CNI socket, or runs the plugin in-process.\n"
            f"exec {run} site\n"
        ).encode()
    return (
        "#!/bin/sh\n"
        "# minicni CNI plugin launcher, written by minicni-agent.\n"
        f'exec {shlex.quote(python)} -I -m minicni "$@"\n'
    ).encode()


BAKED_SOCKET_LINE = 'BAKED_SOCKET = ""\n'


def compiled_shim(filename: str, cni_socket: str = "") -> bytes:
    """The shim as a .pyc for this interpreter: run directly (a script is compiled on every run,
    1.5-2 ms), without docstrings (optimize=2). The header's timestamp is zero: nothing checks it
    when a .pyc is run as a program, and the bytes stay the same from one install to the next.
    `cni_socket`: compiled in (the shim's `BAKED_SOCKET`), for a launcher that passes nothing."""
    source = SHIM_SOURCE.read_text(encoding="utf-8")
    if cni_socket:
        if source.count(BAKED_SOCKET_LINE) != 1:
            raise ValueError(f"{SHIM_SOURCE} has no single {BAKED_SOCKET_LINE.strip()!r} line")
        source = source.replace(BAKED_SOCKET_LINE, f"BAKED_SOCKET = {cni_socket!r}\n")
    code = compile(source, filename, "exec", dont_inherit=True, optimize=2)
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


def pyc_launcher_fits(python: str, pyc: Path) -> bool:
    """Whether the kernel reads a "#!" line naming `python` and `pyc` whole (`shebang_max`)."""
    line = f"#!{python} {pyc}"
    return shebang_safe(python) and shebang_safe(str(pyc)) and len(line.encode()) <= shebang_max()


def pyc_launcher(python: str, pyc: Path, about: str) -> bytes:
    """A launcher that is a "#!" line naming `python` and `pyc` (check `pyc_launcher_fits`): the
    kernel passes the .pyc as the interpreter's one argument, and Python runs it (no script to
    compile: ~0.15-0.25 ms of every call). Only for an interpreter whose ._pth file makes every
    run isolated, without site and without writing bytecode, as the bundle's does: a "#!" line
    carries no other flag. `about`: comments after it (the kernel reads the first line only,
    Python reads none)."""
    comment = "".join(f"# {text}\n" if text else "#\n" for text in about.splitlines())
    return f"#!{python} {pyc}\n{comment}".encode()


def install_plugin(
    cni_bin_dir: Path,
    *,
    mode: str = defaults.PLUGIN_INSTALL,
    runtime_dir: Path = Path(defaults.PLUGIN_DIR),
    cni_socket: str = "",
) -> bool:
    """Put `<cni_bin_dir>/minicni` in place; True if anything on disk changed. `cni_socket`: where
    the agent serves CNI requests (the plugin installed is then the shim); empty: no server."""
    if mode == "none":
        return False
    if mode == "launcher":
        shim = None
        changed = False
        if cni_socket:
            shim = runtime_dir / f"shim.{sys.implementation.cache_tag}.pyc"
            changed = write_atomic(str(shim), compiled_shim(str(shim)), 0o644)
        script = launcher_script(sys.executable, shim, cni_socket)
        return write_atomic(str(cni_bin_dir / defaults.PLUGIN_NAME), script, 0o755) or changed
    if mode == "bundle":
        from minicni.agent.host.bundle import (
            install_bundle,  # copies files; only the agent needs it
        )

        return install_bundle(cni_bin_dir, runtime_dir, cni_socket=cni_socket)
    raise ValueError(f"unknown plugin install mode {mode!r}; expected one of {', '.join(MODES)}")


def host_write_error(error: OSError) -> str:
    """An OSError, and for a permission error on a host directory who owns it: the long-running
    agent has NET_ADMIN and NET_RAW only, so as root it still obeys the permission bits."""
    text = f"{type(error).__name__}: {error}"
    if error.errno not in (errno.EACCES, errno.EPERM) or not error.filename:
        return text
    directory = os.path.dirname(os.fspath(error.filename)) or "."
    try:
        status = os.stat(directory)
    except OSError:
        return text
    return (
        f"{text} ({directory} is owned by uid {status.st_uid}, mode "
        f"{stat.S_IMODE(status.st_mode):04o}: `minicni-agent --install-only`, run with "
        "CAP_DAC_OVERRIDE as the DaemonSet's init container does, writes there)"
    )
