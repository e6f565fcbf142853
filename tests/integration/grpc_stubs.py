"""Python protobuf / gRPC stubs for kiln's gRPC APIs, generated from the repository's proto/ files by
Google's own code generators (no kiln code), so tests talk to kiln as unchanged TF Serving and
KServe / Triton clients do.

    import grpc_stubs                        # tests/integration is the script's folder
    s = grpc_stubs.load()                    # generates once per process, then imports
    req = s.predict_pb2.PredictRequest()
    stub = s.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    v2 = s.grpc_predict_v2_pb2.ModelInferRequest()

load() returns a namespace with one attribute per module, named as upstream (predict_pb2,
tensor_pb2, types_pb2, tensor_shape_pb2, model_pb2, get_model_metadata_pb2, get_model_status_pb2,
model_management_pb2, model_server_config_pb2, file_system_storage_path_source_pb2, status_pb2,
error_codes_pb2, meta_graph_pb2, prediction_service_pb2_grpc, model_service_pb2_grpc,
grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc, health_pb2 — gRPC's health messages, loaded from
their file because grpcio owns the package name `grpc`: call them through
channel.unary_unary("/grpc.health.v1.Health/Check", ...)); the modules are also importable the usual way
(`from tensorflow_serving.apis import predict_pb2`, `from kserve import grpc_predict_v2_pb2`) once
load() has run. The stubs go to a temporary folder removed at exit; set KILN_GRPC_STUBS_DIR to a
folder to generate there instead and reuse it across processes (a folder already holding the
stubs is not regenerated). `grpc_stubs.py OUTDIR` generates into OUTDIR and exits.

Debian's /usr/bin/python3 only: it has google.protobuf 4.21 and grpcio. The messages come from
Debian's protoc 3.21 (--python_out), which writes modules protobuf 4.21 imports; python3-grpc-tools
(1.14) only writes the *_pb2_grpc.py service stubs, whose code does not depend on the protoc version.
Its bundled protoc is used for the messages too where Debian's protoc is missing.
"""
import atexit
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
# google/protobuf/any.proto and wrappers.proto, which the TF Serving files import (libprotobuf-dev).
GOOGLE_PROTO_DIR = "/usr/include"

# (package path, module) for every file kiln serves, in proto/.
FILES = [
    ("tensorflow/core/framework", "types"),
    ("tensorflow/core/framework", "tensor_shape"),
    ("tensorflow/core/framework", "tensor"),
    ("tensorflow/core/protobuf", "meta_graph"),
    ("tensorflow/core/protobuf", "error_codes"),
    ("tensorflow_serving/util", "status"),
    ("tensorflow_serving/config", "file_system_storage_path_source"),
    ("tensorflow_serving/config", "model_server_config"),
    ("tensorflow_serving/apis", "model"),
    ("tensorflow_serving/apis", "predict"),
    ("tensorflow_serving/apis", "get_model_metadata"),
    ("tensorflow_serving/apis", "get_model_status"),
    ("tensorflow_serving/apis", "model_management"),
    ("tensorflow_serving/apis", "prediction_service"),
    ("tensorflow_serving/apis", "model_service"),
    ("kserve", "grpc_predict_v2"),
    ("grpc/health/v1", "health"),
]
# The files that declare services, and so get a *_pb2_grpc.py.
SERVICES = {"prediction_service", "model_service", "grpc_predict_v2"}

_loaded = None


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd), proc.returncode, proc.stderr.strip()))


def generate(out):
    """Writes the *_pb2.py and *_pb2_grpc.py modules for proto/ into the folder `out`."""
    os.makedirs(out, exist_ok=True)
    protos = [os.path.join(PROTO_DIR, d, m + ".proto") for d, m in FILES]
    services = [os.path.join(PROTO_DIR, d, m + ".proto") for d, m in FILES if m in SERVICES]
    includes = ["-I" + PROTO_DIR, "-I" + GOOGLE_PROTO_DIR]
    protoc = shutil.which("protoc", path="/usr/bin")
    if protoc:
        _run([protoc] + includes + ["--python_out=" + out] + protos)
    else:
        _run([sys.executable, "-m", "grpc_tools.protoc"] + includes + ["--python_out=" + out] + protos)
    _run([sys.executable, "-m", "grpc_tools.protoc"] + includes + ["--grpc_python_out=" + out] + services)


def _complete(out):
    return all(os.path.exists(os.path.join(out, d, m + "_pb2.py")) for d, m in FILES) and \
        all(os.path.exists(os.path.join(out, d, m + "_pb2_grpc.py")) for d, m in FILES if m in SERVICES)


def load():
    """Generates the stubs (once per process, or reuses KILN_GRPC_STUBS_DIR) and imports them."""
    global _loaded
    if _loaded is not None:
        return _loaded
    out = os.environ.get("KILN_GRPC_STUBS_DIR")
    if out:
        if not _complete(out):
            generate(out)
    else:
        out = tempfile.mkdtemp(prefix="kiln-grpc-stubs-")
        atexit.register(shutil.rmtree, out, True)
        generate(out)
    if out not in sys.path:
        sys.path.insert(0, out)
    ns = types.SimpleNamespace(path=out)
    for d, m in FILES:
        package = d.replace("/", ".")
        if package.startswith("grpc."):
            # grpcio owns the package name grpc: its health messages are loaded from their file
            path = os.path.join(out, d, m + "_pb2.py")
            spec = importlib.util.spec_from_file_location(package.replace(".", "_") + "_" + m + "_pb2", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            setattr(ns, m + "_pb2", module)
            continue
        setattr(ns, m + "_pb2", importlib.import_module(package + "." + m + "_pb2"))
        if m in SERVICES:
            setattr(ns, m + "_pb2_grpc", importlib.import_module(package + "." + m + "_pb2_grpc"))
    _loaded = ns
    return ns


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: grpc_stubs.py OUTDIR")
    generate(sys.argv[1])
