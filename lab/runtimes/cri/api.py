"""The CRI `runtime.v1` messages and stub, generated from `proto/cri_runtime_v1.proto` at import.

grpcio-tools compiles the .proto in memory the first time this module is imported (about 0.1 s);
no generated file exists anywhere, so the Python messages can never drift from the .proto nor be
edited by hand. `messages` holds the message classes (`messages.RunPodSandboxRequest`...),
`services.RuntimeServiceStub` the client stub.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto")
PROTO_FILE = "cri_runtime_v1.proto"

_lock = threading.Lock()


def _generate() -> tuple[Any, Any]:
    try:
        import grpc
    except ImportError as err:  # the lab extra is not installed
        raise ImportError(
            "the CRI runtime needs grpcio and grpcio-tools (pip install -e '.[lab]')"
        ) from err
    with _lock:
        # grpcio-tools resolves .proto files against sys.path: add our dir only while compiling.
        sys.path.insert(0, PROTO_DIR)
        try:
            return grpc.protos_and_services(PROTO_FILE)  # type: ignore[no-any-return]
        finally:
            sys.path.remove(PROTO_DIR)


messages, services = _generate()
