#!/usr/bin/python3
"""The Flask + PyTorch peer of bench/serve: TF Serving's REST predict API for one model.

    /usr/bin/python3 bench/serve/flask_server.py MODEL.onnx NAME PORT [--threads N]

POST /v1/models/NAME:predict {"instances": [row, ...]} -> {"predictions": [row, ...]};
GET /v1/models/NAME -> TF Serving's model status document. Listens on 127.0.0.1 only.

The network is the PyTorch module of bench/runtime/models.py that NAME names, with the weights
read from MODEL.onnx's initializers (loaded strictly: every parameter, by name and shape), so the
peers serve the same weights. Flask's own server, threaded, with HTTP/1.1 keep-alive (as wrk and
the other servers use) and without its per-request log line. --threads sets torch's intra-op
threads (default: all cores).
"""
import argparse
import logging
import os
import sys

import numpy as np
import onnx
import torch
from flask import Flask, jsonify, request
from onnx import numpy_helper
from werkzeug.serving import WSGIRequestHandler

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime"))
import models  # noqa: E402  (bench/runtime/models.py)


def load(onnx_path, name):
    """models.py's module NAME with the weights of the ONNX file's initializers."""
    module = models.MODELS[name][0]().eval()
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(onnx_path).graph.initializer}
    module.load_state_dict(weights, strict=True)
    return module


def app_for(module, name):
    app = Flask(__name__)
    status = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                        "status": {"error_code": "OK", "error_message": ""}}]}

    @app.get("/v1/models/%s" % name)
    def model_status():
        return jsonify(status)

    @app.post("/v1/models/%s:predict" % name)
    def predict():
        try:
            x = torch.from_numpy(np.asarray(request.get_json(force=True)["instances"], dtype=np.float32))
        except (KeyError, TypeError, ValueError) as e:
            return jsonify({"error": "bad request: %s" % e}), 400
        try:
            with torch.inference_mode():
                y = module(x)
        except RuntimeError as e:  # a shape the network cannot take
            return jsonify({"error": "bad request: %s" % e}), 400
        return jsonify({"predictions": y.tolist()})

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("name")
    ap.add_argument("port", type=int)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    app = app_for(load(args.model, args.name), args.name)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive
    app.run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
