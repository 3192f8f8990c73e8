"""A tiny HTTP server on 127.0.0.1 that misbehaves on purpose: it never answers, answers 500,
serves an endless blob, or stops in the middle of a body. For the fault tests and bench/faults.py.

Each behaviour is a function (request, connection) that writes raw bytes: nothing here is an
HTTP library, so it can break the protocol the way a broken or hostile server does.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


Behaviour = Callable[[Request, socket.socket, "HostileServer"], None]


class HostileServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.seen: list[Request] = []
        self.sent_bytes = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        for s in [self._srv, *self._conns]:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "HostileServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                req = Request(method, path, headers)
                self.seen.append(req)
                length = int(headers.get("content-length") or 0)
                while len(buf) < length:  # a body we were sent: read it, unless the behaviour does not
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                self.behaviour(req, conn, self)
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


def respond(conn: socket.socket, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h = {"Content-Length": str(len(body)), **(headers or {})}
    conn.sendall(f"HTTP/1.1 {status} X\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode()
                 + b"\r\n" + body)


# -- behaviours -------------------------------------------------------------------------------


def silent(req: Request, conn: socket.socket, srv: HostileServer) -> None:
    """Accept, read the request, never answer."""
    while not srv.stopped():
        time.sleep(0.1)


def status(code: int) -> Behaviour:
    def answer(req: Request, conn: socket.socket, srv: HostileServer) -> None:
        body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "storage backend on fire"}]}).encode()
        respond(conn, code, body, {"Content-Type": "application/json"})
    return answer


def registry(blob: Behaviour, *, layer_size: int = 10, layer_digest: str = "sha256:" + "ab" * 32) -> Behaviour:
    """An open registry whose one image `t/x:v1` has a layer of `layer_size` bytes; asking for
    the layer runs `blob`."""
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cfg_digest, "size": len(cfg)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": layer_digest, "size": layer_size}]}).encode()

    def answer(req: Request, conn: socket.socket, srv: HostileServer) -> None:
        if req.path == "/v2/":
            respond(conn, 200, b"{}")
        elif req.path.startswith("/v2/t/x/manifests/"):
            respond(conn, 200, b"" if req.method == "HEAD" else manifest,
                    {"Content-Type": MANIFEST, "Docker-Content-Digest": "sha256:" + hashlib.sha256(manifest).hexdigest()}
                    if req.method != "HEAD" else {"Content-Type": MANIFEST})
        elif req.path == f"/v2/t/x/blobs/{cfg_digest}":
            respond(conn, 200, cfg)
        elif req.path.startswith("/v2/t/x/blobs/"):
            blob(req, conn, srv)
        else:
            respond(conn, 404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')
    return answer


def endless(req: Request, conn: socket.socket, srv: HostileServer) -> None:
    """A body that never ends (no Content-Length, until the client gives up)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
    chunk = b"\0" * 65536
    while not srv.stopped():
        conn.sendall(chunk)
        srv.sent_bytes += len(chunk)


def stall_after(n: int, total: int) -> Behaviour:
    """Announce `total` bytes, send `n`, then stop sending (the connection stays open)."""
    def answer(req: Request, conn: socket.socket, srv: HostileServer) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode() + b"\0" * n)
        srv.sent_bytes += n
        silent(req, conn, srv)
    return answer
