"""The pieces of the "bundle" install that need no root: reading the loader's library list, the
ELF interpreter, and the launcher script."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from minicni.agent.host.bundle import (
    BOOT_SHIM,
    BundleError,
    RuntimeSource,
    _elf_interpreter,
    baked_shim,
    boot_package,
    module_path,
    parse_loader_list,
    render_launcher,
)
from minicni.agent.host.launcher import shebang_max

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd1b3f2000)
\tlibpython3.11.so.1.0 => /usr/local/bin/../lib/libpython3.11.so.1.0 (0x00007f2d0c800000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2d0c61e000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f2d0c53f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2d0ceb6000)
"""


def test_loader_list_gives_each_library_by_the_name_it_is_loaded_under() -> None:
    libraries = parse_loader_list(LDD_OUTPUT, "/lib64/ld-linux-x86-64.so.2")
    assert libraries == {
        "libpython3.11.so.1.0": Path("/usr/local/bin/../lib/libpython3.11.so.1.0"),
        "libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
        "libm.so.6": Path("/lib/x86_64-linux-gnu/libm.so.6"),
    }


def test_loader_list_with_a_missing_library_names_it() -> None:
    output = LDD_OUTPUT + "\tlibffi.so.8 => not found\n"
    with pytest.raises(BundleError, match=r"libffi\.so\.8"):
        parse_loader_list(output, "/lib64/ld-linux-x86-64.so.2")


def test_elf_interpreter_of_this_python_is_a_dynamic_loader() -> None:
    loader = _elf_interpreter(Path(sys.executable).resolve())
    assert loader is not None and Path(loader).name.startswith("ld-")
    assert Path(loader).exists()


def test_elf_interpreter_refuses_a_non_elf_file(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(BundleError, match="not an ELF"):
        _elf_interpreter(script)


def test_launcher_is_valid_sh_and_runs_the_plugin_through_the_bundled_loader() -> None:
    script = render_launcher(Path("/opt/minicni/v1-abc"), "ld-linux-x86-64.so.2")
    assert script.startswith("#!/bin/sh\n")
    check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "home='/opt/minicni/v1-abc'" in script
    assert '"$home/lib/ld-linux-x86-64.so.2" --library-path "$home/lib"' in script
    assert '-I -S -B -m minicni "$@"' in script


def test_with_a_cni_socket_the_launcher_runs_the_bundled_shim() -> None:
    script = render_launcher(Path("/opt/minicni/v2-abc"), "ld.so", "/run/minicni/cni.sock")
    check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True, check=False)
    assert check.returncode == 0, check.stderr
    assert '"$home/lib/ld.so" --library-path "$home/lib"' in script
    assert '"$home/bin/python3" -I -S -B "$home/shim.pyc" \'/run/minicni/cni.sock\'' in script
    assert "-m minicni" not in script


def test_a_bundle_that_starts_directly_gets_a_launcher_naming_its_interpreter_and_shim() -> None:
    """The kernel runs the bundled interpreter on the shim compiled with the socket in it."""
    home = Path("/opt/minicni/v3-abc")
    script = render_launcher(home, "ld.so", "/run/minicni/cni.sock", direct=True)
    first, *rest = script.splitlines()
    baked = baked_shim(home, "/run/minicni/cni.sock")
    assert first == f"#!/opt/minicni/v3-abc/bin/python3 {baked}"
    assert baked.parent == home and baked != baked_shim(home, "/run/other.sock")
    assert rest and all(line.startswith("#") for line in rest)  # comments only: nothing runs them
    # without a socket there is no shim: the plugin runs from the shell launcher
    plain = render_launcher(Path("/opt/minicni/v3-abc"), "ld.so", direct=True)
    assert plain.startswith("#!/bin/sh\n") and "-m minicni" in plain


def test_a_direct_launcher_too_long_for_the_shim_line_is_a_python_script() -> None:
    """A "#!" line that holds the interpreter but not the .pyc too (the kernel reads 128 bytes of
    it, 256 since Linux 5.1): the launcher is a Python script running shim.pyc with the socket in
    its argv."""
    home = Path("/opt/" + "m" * 100)
    script = render_launcher(home, "ld.so", "/run/minicni/cni.sock", direct=True)
    assert script.startswith(f"#!{home}/bin/python3 -ISB\n")
    compile(script, "launcher", "exec")  # valid Python, comments and all
    assert "sys.argv[1:] = ['/run/minicni/cni.sock']\n" in script
    assert f"open('{home}/shim.pyc', 'rb')" in script


def test_a_bundle_path_too_long_for_a_shebang_keeps_the_shell_launcher() -> None:
    home = Path("/opt/" + "m" * 120)
    script = render_launcher(home, "ld.so", "/run/minicni/cni.sock", direct=True)
    assert script.startswith("#!/bin/sh\n") and f"home='{home}'" in script


@pytest.mark.parametrize("bad", ["run/cni.sock", "/run/it's", "/run/a\nb"])
def test_launcher_refuses_a_socket_it_cannot_quote(bad: str) -> None:
    with pytest.raises(BundleError):
        render_launcher(Path("/opt/minicni/v2-abc"), "ld.so", bad)


@pytest.mark.parametrize("bad", ["relative/dir", "/opt/it's", "/opt/a\nb"])
def test_launcher_refuses_a_runtime_dir_it_cannot_quote(bad: str) -> None:
    with pytest.raises(BundleError):
        render_launcher(Path(bad), "ld.so")


def test_a_failed_build_leaves_no_partial_version_and_no_launcher(tmp_path: Path) -> None:
    from minicni.agent.host.bundle import RuntimeSource, install_bundle

    here = RuntimeSource.of_this_process()
    broken = RuntimeSource(
        executable=here.executable,
        stdlib=tmp_path / "no-such-stdlib",
        dynload=here.dynload,
        packages=here.packages,
        version=here.version,
    )
    runtime_dir, bin_dir = tmp_path / "opt-minicni", tmp_path / "cni-bin"
    with pytest.raises(OSError):
        install_bundle(bin_dir, runtime_dir, source=broken)
    assert list(runtime_dir.iterdir()) == []
    assert not (bin_dir / "minicni").exists()


def _source(tmp_path: Path, stdlib: list[str], extensions: list[str]) -> RuntimeSource:
    (tmp_path / "std" / "lib-dynload").mkdir(parents=True)
    for name in stdlib:
        (tmp_path / "std" / name).touch()
    for name in extensions:
        (tmp_path / "std" / "lib-dynload" / f"{name}.cpython-311-x86_64-linux-gnu.so").touch()
    return RuntimeSource(
        executable=Path(sys.executable),
        stdlib=tmp_path / "std",
        dynload=tmp_path / "std" / "lib-dynload",
        packages=(),
        version="3.11",
    )


def test_the_module_path_looks_in_lib_dynload_before_the_standard_library(tmp_path: Path) -> None:
    source = _source(tmp_path, ["json", "os.py", "ctypes"], ["_ctypes", "_json", "mmap"])
    assert module_path(source, "python3.11") == [
        "lib/boot",
        "lib/python3.11/lib-dynload",
        "lib/python3.11",
        "site",
    ]


def test_a_name_of_both_kinds_keeps_the_usual_module_path(tmp_path: Path) -> None:
    """Were `mmap` also a .py in the standard library, lib-dynload first would change which one
    `import mmap` finds: the bundle then keeps the standard library first."""
    source = _source(tmp_path, ["json", "mmap.py"], ["_json", "mmap"])
    assert module_path(source, "python3.11") == [
        "lib/boot",
        "lib/python3.11",
        "lib/python3.11/lib-dynload",
        "site",
    ]


def test_the_boot_copy_of_encodings_holds_the_start_up_modules_and_finds_the_rest(
    tmp_path: Path,
) -> None:
    stdlib = Path(RuntimeSource.of_this_process().stdlib)
    dest = tmp_path / "lib" / "boot" / "encodings"
    boot_package(stdlib / "encodings", dest, "python3.11")
    assert sorted(p.name for p in dest.iterdir()) == ["__init__.py", "aliases.py", "utf_8.py"]
    namespace = {"__path__": [str(dest)], "__name__": "encodings_copy"}
    init = (dest / "__init__.py").read_text()
    original = (stdlib / "encodings" / "__init__.py").read_text()
    # the package's own code, whole, with the shim's start first, after the docstring (which
    # stays the module's), and the line that extends __path__ last
    tree = ast.parse(init)
    assert ast.get_docstring(tree, clean=False) == ast.get_docstring(
        ast.parse(original), clean=False
    )
    assert isinstance(tree.body[1], ast.FunctionDef) and tree.body[1].name == "_run_minicni_shim"
    assert init.replace(BOOT_SHIM, "", 1).startswith(original)
    added = init.replace(BOOT_SHIM, "", 1)[len(original) :]
    exec(compile(added, "added", "exec"), namespace)
    assert namespace["__path__"] == [str(dest), f"{tmp_path}/lib/python3.11/encodings"]


@pytest.mark.parametrize(
    ("release", "limit"),
    [("6.18.44-fc-v857", 255), ("5.1.0", 255), ("5.0.21-generic", 127), ("4.19.0-26", 127),
     ("unknown", 127)],
)  # fmt: skip
def test_the_shebang_limit_follows_the_kernel(release: str, limit: int) -> None:
    """Linux reads 256 bytes of a "#!" line since 5.1, 128 before."""
    assert shebang_max(release) == limit
