"""The fixtures of the product's suite (a real docker-registry on loopback, one with htpasswd and
TLS), for the oras demonstrations here. This directory is not part of `./dev test`."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import registry, secure_registry  # noqa: E402,F401  (fixtures)
