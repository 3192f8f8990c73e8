"""SPDX 2.3 JSON software bill of materials, generated from the pinned definition alone.

Every input the lock pinned (Debian packages, wheels, base-image blobs, URL and manual files)
is one SPDX package with its purl, download location, file name and sha256; the image is the
described package and CONTAINS each of them. The bytes are a function of the definition and the
enginefab version: `created` is the definition's SOURCE_DATE_EPOCH, the document namespace is
derived from the definition's digest, keys are sorted (canonical JSON).
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

from enginefab import __version__
from enginefab.assemble.image import iso
from enginefab.core import canonical
from enginefab.core.definition import Definition, Input

MEDIA_TYPE = "application/spdx+json"
NOASSERTION = "NOASSERTION"


def definition_digest(defn: Definition) -> str:
    """sha256 hex of the definition's canonical bytes (what build/<alias>.json holds)."""
    return canonical.sha256_hex(defn.to_json())


def _q(s: str, safe: str = "") -> str:
    return quote(s, safe=safe)


def purl(inp: Input, defn: Definition) -> str | None:
    """The package URL of a pinned input (purl spec: pkg:type/namespace/name@version?qualifiers)."""
    v = _q(inp.version, safe=":")
    if inp.kind == "deb":
        arch = inp.arch or (inp.control or {}).get("Architecture", "")
        distro = f"{defn.image.os}-{defn.image.os_version}"
        return f"pkg:deb/{_q(defn.image.os)}/{_q(inp.name)}@{v}?arch={_q(arch)}&distro={_q(distro)}"
    if inp.kind == "wheel":
        name = re.sub(r"[-_.]+", "-", inp.name).lower()
        return f"pkg:pypi/{_q(name)}@{v}"
    if inp.kind == "oci" and inp.url and inp.sha256:
        repo = inp.url.split("@", 1)[0]
        last = repo.rsplit("/", 1)[-1].split(":", 1)[0]
        return f"pkg:oci/{_q(last)}@sha256%3A{inp.sha256}?repository_url={_q(repo.rsplit(':', 1)[0], safe='/:')}"
    if inp.kind == "git" and inp.url:
        return f"pkg:generic/{_q(inp.name)}@{v}?vcs_url={_q('git+' + inp.url + '@' + (inp.commit or ''), safe='')}"
    if inp.kind in ("url", "manual"):
        quals = []
        if inp.url:
            quals.append(f"download_url={_q(inp.url, safe='')}")
        if inp.sha256:
            quals.append(f"checksum=sha256:{inp.sha256}")
        return f"pkg:generic/{_q(inp.name)}@{v}" + ("?" + "&".join(quals) if quals else "")
    return None


def _spdx_id(*parts: str) -> str:
    return "SPDXRef-" + "-".join(re.sub(r"[^A-Za-z0-9.]+", ".", p).strip(".") for p in parts if p)


def _supplier(inp: Input) -> str:
    m = re.match(r"^\s*(.+?)\s*<([^>]+)>\s*$", (inp.control or {}).get("Maintainer", ""))
    return f"Person: {m.group(1)} ({m.group(2)})" if m else NOASSERTION


def _package(inp: Input, defn: Definition) -> dict:
    pkg: dict = {
        "SPDXID": _spdx_id(inp.kind, inp.name, inp.version, (inp.sha256 or "awaiting")[:12]),
        "name": inp.name,
        "versionInfo": inp.version,
        "downloadLocation": (f"git+{inp.url}@{inp.commit}" if inp.kind == "git" else inp.url)
        if inp.url and inp.kind != "manual" else NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "supplier": _supplier(inp),
        "comment": f"enginefab input {inp.kind}, {inp.size} bytes"
        + (f"; hash trust: {inp.trust} ({inp.source})" if inp.trust else ""),
    }
    if inp.sha256 and inp.kind != "run":
        pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": inp.sha256}]
    if inp.filename:
        pkg["packageFileName"] = inp.filename
    desc = (inp.control or {}).get("Description")
    if desc:
        pkg["summary"] = desc
    p = purl(inp, defn)
    if p:
        pkg["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p}]
    if inp.kind == "manual" and inp.where:
        pkg["sourceInfo"] = f"downloaded by hand: {inp.where}"
    if inp.kind == "git":
        pkg["sourceInfo"] = f"git commit {inp.commit}, tree {inp.tree}; archive made by enginefab from the tree"
    return pkg


def sbom_inputs(defn: Definition) -> list[Input]:
    """The components: every pinned input except `run` steps (those are build steps, recorded in
    the provenance through the definition's digest), once each, in a stable order."""
    seen: dict[tuple, Input] = {}
    for inp in defn.inputs():
        if inp.kind != "run":
            seen.setdefault((inp.kind, inp.name, inp.version, inp.sha256 or ""), inp)
    return [seen[k] for k in sorted(seen)]


def spdx(defn: Definition) -> dict:
    img = defn.image
    ddig = definition_digest(defn)
    root_id = "SPDXRef-Image"
    packages = [{
        "SPDXID": root_id,
        "name": img.name,
        "versionInfo": img.engine_version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "supplier": NOASSERTION,
        "summary": f"{img.engine} {img.engine_version} image ({img.alias}) for {img.platform.get('os')}/"
                   f"{img.platform.get('architecture')}, Python {img.python}, {img.os} {img.os_version}",
        "comment": f"built by enginefab from build/{img.alias}.json (sha256 {ddig})",
    }]
    rels = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root_id}]
    for inp in sbom_inputs(defn):
        pkg = _package(inp, defn)
        packages.append(pkg)
        rels.append({"spdxElementId": root_id, "relationshipType": "CONTAINS", "relatedSpdxElement": pkg["SPDXID"]})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": img.name,
        "documentNamespace": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'enginefab:definition:sha256:' + ddig)}",
        "creationInfo": {"created": iso(defn.source_date_epoch), "creators": [f"Tool: enginefab-{__version__}"]},
        "packages": packages,
        "relationships": rels,
    }


def spdx_json(defn: Definition) -> bytes:
    return canonical.dumps(spdx(defn))
