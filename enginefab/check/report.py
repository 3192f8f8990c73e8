"""Check results and their two report formats: JSON (attached to the image) and JUnit XML (CI)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from enginefab.core import canonical

#: warn: passed, but something the user should know was not checked or is not what the image says
#: (a "cpu" image whose engine is a CUDA build; an engine with no checks file of its own)
Status = Literal["pass", "warn", "fail", "skip", "error"]
LEVELS = ("definition", "static", "runtime", "accelerator")


@dataclass
class Result:
    level: str
    name: str
    status: Status
    detail: str = ""
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


@dataclass
class Report:
    image: str  # alias
    name: str  # canonical name
    digest: str | None  # manifest digest checked (None for definition-only)
    results: list[Result] = field(default_factory=list)
    #: the check data used (engines/checks/*): path → sha256
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.status in ("pass", "warn", "skip") for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("pass", "warn", "fail", "skip", "error")}
        for r in self.results:
            out[r.status] += 1
        return out

    def as_dict(self) -> dict:
        return {
            "image": self.image,
            "name": self.name,
            "digest": self.digest,
            "ok": self.ok,
            "counts": self.counts(),
            "levels": sorted({r.level for r in self.results}, key=LEVELS.index),
            "checks": dict(sorted(self.checks.items())),
            "results": [asdict(r) for r in self.results],
        }

    def to_json(self) -> bytes:
        """Deterministic (no timings): the bytes attached to the image as a referrer."""
        d = self.as_dict()
        for r in d["results"]:
            r.pop("seconds", None)
        return canonical.dumps({"reportType": "enginefab.check/v1", **d})


def junit(reports: list[Report]) -> bytes:
    suites = ET.Element("testsuites")
    for rep in reports:
        c = rep.counts()
        s = ET.SubElement(suites, "testsuite", name=rep.image, tests=str(len(rep.results)),
                          failures=str(c["fail"]), errors=str(c["error"]), skipped=str(c["skip"]))
        for r in rep.results:
            tc = ET.SubElement(s, "testcase", classname=f"{rep.image}.{r.level}", name=r.name, time=f"{r.seconds:.3f}")
            if r.status == "fail":
                ET.SubElement(tc, "failure", message=r.detail[:200]).text = r.detail
            elif r.status == "error":
                ET.SubElement(tc, "error", message=r.detail[:200]).text = r.detail
            elif r.status == "skip":
                ET.SubElement(tc, "skipped", message=r.detail)
            elif r.status == "warn":  # JUnit has no warning: a passed case that says so
                ET.SubElement(tc, "system-out").text = f"warning: {r.detail}"
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_reports(reports: list[Report], directory: Path) -> None:
    """Each image's JSON report (the bytes a push attaches) as `directory/<image>.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    for r in reports:
        (directory / f"{r.image}.json").write_bytes(r.to_json())
