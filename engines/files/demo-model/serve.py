"""The demo model's server: ModelArts' inference contract with Python's standard library and NumPy.

GET /health answers 200 {"health": "true"}; POST / (or /predict) with {"instances": [[x1, x2], ...]}
answers {"predictions": [{"label": ..., "scores": [...]}, ...]} from the softmax-regression model in
/home/mind/model/model.json. It listens on 0.0.0.0:$PORT (8080), keeps HTTP/1.1 connections alive
for 200 s, logs each request to standard output and stops on SIGTERM.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MODEL_DIR = os.environ.get("MODEL_DIR", "/home/mind/model")
MAX_BODY = 1 << 20


def load(directory):
    with open(os.path.join(directory, "model.json")) as f:
        m = json.load(f)
    return np.asarray(m["weights"], dtype=np.float64), np.asarray(m["bias"], dtype=np.float64), list(m["labels"])


WEIGHTS, BIAS, LABELS = load(MODEL_DIR)


def predict(instances):
    x = np.asarray(instances, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != WEIGHTS.shape[0]:
        raise ValueError("instances must be a list of rows of %d numbers" % WEIGHTS.shape[0])
    z = x @ WEIGHTS + BIAS
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return [{"label": LABELS[int(i)], "scores": [round(float(v), 6) for v in row]} for i, row in zip(p.argmax(axis=1), p)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 200  # seconds an idle connection is kept

    def send_json(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            self.send_json(200, {"health": "true"})
        else:
            self.send_json(404, {"error": "not found: GET /health, POST / or /predict"})

    def do_POST(self):  # noqa: N802
        if self.path not in ("/", "/predict"):
            self.send_json(404, {"error": "not found: POST / or /predict"})
            return
        n = int(self.headers.get("Content-Length") or 0)
        if not 0 < n <= MAX_BODY:
            self.send_json(413 if n > MAX_BODY else 400, {"error": "a JSON body of at most %d bytes" % MAX_BODY})
            return
        try:
            doc = json.loads(self.rfile.read(n))
            self.send_json(200, {"predictions": predict(doc["instances"])})
        except (ValueError, KeyError, TypeError) as e:
            self.send_json(400, {"error": "%s: %s" % (type(e).__name__, e)})

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("serving %s on 0.0.0.0:%d" % (MODEL_DIR, server.server_address[1]), flush=True)
    server.serve_forever()
    server.server_close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
