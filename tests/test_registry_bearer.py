"""Bearer-token auth, for real: Debian's docker-registry configured with `auth.token` trusts a
certificate; a small token service in this test checks basic credentials and issues RS256 JWTs
(signed by `openssl dgst`, the certificate in `x5c`) for the scopes asked for, as the docker
token spec describes. The registry verifies every token itself; skopeo runs the same flow as an
independent client."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from enginefab.core.errors import RegistryError
from enginefab.publish.server import Registry, free_port, self_signed
from enginefab.transport.client import RegistryClient
from tests.conftest import enginefab

pytestmark = pytest.mark.slow
USER, PASSWORD = "bob", "token-pass-42"
SERVICE, ISSUER = "enginefab-test-registry", "enginefab-test-token-service"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """GET /token?service=…&scope=…(&scope=…) with basic auth → {"token": JWT}."""

    def __init__(self, cert, key) -> None:
        self.key = key
        self.x5c = base64.b64encode(ssl.PEM_cert_to_DER_cert(cert.read_text())).decode()
        self.issued: list[tuple[str, list[str]]] = []
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                ok = auth == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if not ok or q.get("service") != [SERVICE]:
                    self.send_response(401)
                    self.end_headers()
                    return
                scopes = q.get("scope", [])
                body = json.dumps({"token": svc.sign(scopes), "expires_in": 300}).encode()
                svc.issued.append((USER, scopes))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(self, scopes: list[str]) -> str:
        access = []
        for sc in scopes:
            typ, _, rest = sc.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             capture_output=True, check=True).stdout
        return f"{signing_input}.{b64url(sig)}"


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("token-registry")
    cert, key = self_signed(base / "signing")
    svc = TokenService(cert, key)
    reg = Registry(root=base / "registry", port=free_port(),
                   token={"realm": svc.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(cert)}).start()
    yield reg, svc
    reg.stop()
    svc.server.shutdown()


def test_bearer_push_mount_pull_and_skopeo(token_registry, demo_build, tmp_path):
    reg, svc = token_registry
    env = {"ENGINEFAB_REGISTRY_USER": USER, "ENGINEFAB_REGISTRY_PASSWORD": PASSWORD}
    store = str(demo_build["store"])
    p = enginefab("push", "demo-pytorch-aarch64", "--to", f"{reg.host}/one", "--plain-http", "--store", store,
                  "--json", env=env, check=True)
    (img,) = json.loads(p.stdout)["images"]
    assert img["digest"] == demo_build["digests"]["demo-pytorch-aarch64"]
    assert PASSWORD not in p.stdout + p.stderr
    assert any("repository:one/pytorch:pull,push" in scopes for _, scopes in svc.issued)

    # a second repository: the mount needs one token with push on the target and pull on the source
    p = enginefab("push", "demo-pytorch-aarch64", "--to", f"{reg.host}/two", "--plain-http", "--store", store,
                  "--json", env=env, check=True)
    s = json.loads(p.stdout)["stats"]
    assert s["uploaded_bytes"] == 0 and s["mounted"] > 0
    assert any(set(scopes) >= {"repository:two/pytorch:pull,push", "repository:one/pytorch:pull"}
               for _, scopes in svc.issued)

    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}",
                          f"docker://{img['reference']}"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["Digest"] == img["digest"]
    p = enginefab("pull", img["reference"], "--out", str(tmp_path / "pulled"), "--plain-http", "--json", env=env,
                  check=True)
    assert json.loads(p.stdout)["digest"] == img["digest"]


def test_bearer_wrong_password_and_no_token(token_registry):
    reg, _ = token_registry
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="token service rejected the credentials for user 'bob'"):
        RegistryClient(reg.host, plain_http=True, credentials=(USER, "nope")).check_login()
    assert time.monotonic() - t0 < 5
    # the registry itself refuses a request without a token (it is not open)
    import requests

    assert requests.get(f"http://{reg.host}/v2/one/pytorch/tags/list", timeout=5).status_code == 401
