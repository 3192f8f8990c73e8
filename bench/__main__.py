"""Run the benchmarks: `./dev bench [name…]`. Each bench/<name>.py defines `run(work: Path) -> dict`
with the measured numbers and ratios against a peer measured in the same run. Results go to
bench/results/<name>.json and a summary is printed. Benchmarks never fail on time."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    summary = {}
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        with tempfile.TemporaryDirectory(prefix=f"enginefab-bench-{name}-") as td:
            t0 = time.monotonic()
            print(f"== {name}", file=sys.stderr)
            res = mod.run(Path(td))
            res["wall_seconds"] = round(time.monotonic() - t0, 2)
        (out / f"{name}.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
        summary[name] = res
        print(json.dumps({name: res}, indent=1, sort_keys=True))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
