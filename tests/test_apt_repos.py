"""Apt repositories are trusted only through the keys platforms.toml pins.

Each test makes a real repository from real Debian packages (the demo's, from the download
cache or the Debian archive), signs it with a key generated here (gpg), serves it on
127.0.0.1, and reads it the way `enginefab lock` does: flat (`deb URL /`, NVIDIA's layout) and
suite-style. A repository signed by another key, unsigned, of another suite or expired is
refused, with a message naming the repository and the fix; a build from each accepted one works.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from debian import debfile

from enginefab.assemble.debs import STATUS_D
from enginefab.core.errors import LockError
from enginefab.core.reporter import Recording
from enginefab.engines.model import AptRepo
from enginefab.lock import aptindex, deb
from tests.conftest import HttpMirror, cli, definition_file, demo_definition, enginefab, session_for

#: the .debs come from the Debian archive (or the download cache); the repositories are served here
served_repo = [pytest.mark.network, pytest.mark.integration]

ROOTS = ["libkeyutils1", "media-types"]  # libkeyutils1 depends on libc6, which the test says is below
PACKAGES = [*ROOTS, "libtirpc-common"]


class Keys:
    """gpg keys generated in a private GNUPGHOME (its agent is stopped at the end)."""

    def __init__(self, home: Path):
        self.home = home
        home.mkdir(mode=0o700)

    def gpg(self, *args: str, data: bytes | None = None) -> bytes:
        p = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", *args], input=data,
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr.decode()
        return p.stdout

    def new(self, name: str) -> str:
        self.gpg("--passphrase", "", "--quick-gen-key", f"{name} <{name}@enginefab.invalid>", "ed25519", "sign", "never")
        listing = self.gpg("--with-colons", "--list-keys", f"{name}@enginefab.invalid").decode()
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def export(self, fpr: str, path: Path) -> Path:
        path.write_bytes(self.gpg("--armor", "--export", fpr))
        return path

    def clearsign(self, fpr: str, text: bytes) -> bytes:
        return self.gpg("--local-user", fpr, "--clearsign", data=text)

    def detach(self, fpr: str, text: bytes) -> bytes:
        return self.gpg("--local-user", fpr, "--armor", "--detach-sign", data=text)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    k = Keys(tmp_path_factory.mktemp("gpg") / "home")
    k.good, k.other = k.new("repo-key"), k.new("other-key")
    yield k
    k.close()


@pytest.fixture(scope="module")
def real_debs():
    """name → (control paragraph from the .deb itself, its bytes) for PACKAGES (arm64, all)."""
    from enginefab.transport import download

    inputs = {i.name: i for i in demo_definition("demo-pytorch-aarch64").inputs() if i.kind == "deb"}
    out = {}
    for name in PACKAGES:
        i = inputs[name]
        path = download.fetch(download.Want(url=i.url, sha256=i.sha256, size=i.size, label=i.ref), session_for())
        control = debfile.DebFile(str(path)).debcontrol()
        out[name] = (control, path.read_bytes(), i.filename)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    m = HttpMirror(tmp_path_factory.mktemp("apt-mirror"))
    yield m
    m.close()


def release_text(files: dict[str, bytes], *, codename: str, valid_until: datetime | None) -> bytes:
    now = datetime.now(timezone.utc)
    lines = ["Origin: enginefab-test", "Label: enginefab-test", "Suite: stable", f"Codename: {codename}",
             f"Date: {format_datetime(now, usegmt=True)}"]
    if valid_until is not None:
        lines.append(f"Valid-Until: {format_datetime(valid_until, usegmt=True)}")
    lines += ["Architectures: arm64 all", "SHA256:"]
    lines += [f" {hashlib.sha256(b).hexdigest()} {len(b):>8} {n}" for n, b in sorted(files.items())]
    return ("\n".join(lines) + "\n").encode()


def make_repo(served: HttpMirror, keys: Keys, real_debs, name: str, *, flat: bool, signer: str | None = "good",
              codename: str = "enginefab-test", valid_until: datetime | None = None, detached: bool = False) -> str:
    """Write a repository under served/<name>; its URL."""
    paras = []
    for pkg, (control, data, filename) in sorted(real_debs.items()):
        rel = f"./{filename}" if flat else f"pool/main/{filename}"
        served.put(f"{name}/{rel}", data)
        para = dict(control) | {"Filename": rel, "Size": str(len(data)), "SHA256": hashlib.sha256(data).hexdigest()}
        paras.append("".join(f"{k}: {v}\n" for k, v in para.items()))
    packages = "\n".join(paras).encode()
    where = "" if flat else "main/binary-arm64/"
    index = {f"{where}Packages": packages, f"{where}Packages.gz": gzip.compress(packages, mtime=0)}
    top = name if flat else f"{name}/dists/{codename if codename != 'other' else 'enginefab-test'}"
    for rel, data in index.items():
        served.put(f"{top}/{rel}", data)
    release = release_text(index, codename=codename, valid_until=valid_until)
    fpr = {"good": keys.good, "other": keys.other}.get(signer or "")
    if fpr is None:
        served.put(f"{top}/InRelease", release)  # unsigned
    elif detached:
        served.put(f"{top}/Release", release)
        served.put(f"{top}/Release.gpg", keys.detach(fpr, release))
    else:
        served.put(f"{top}/InRelease", keys.clearsign(fpr, release))
    return f"{served.url}/{name}"


def repo_of(url: str, keys: Keys, tmp_path: Path, *, flat: bool, frozen: bool = False) -> AptRepo:
    key = keys.export(keys.good, tmp_path / "repo-key.asc")
    return AptRepo(url=url, flat=flat, suite="" if flat else "enginefab-test", keyring=str(key),
                   fingerprints=[keys.good], plain_http=True, frozen=frozen, distro="other")


def resolve(repo: AptRepo, tmp_path: Path):
    return deb.resolve([repo], "aarch64", ROOTS, {"libc6"}, image="apt-test", root=tmp_path,
                       session=session_for())


@pytest.mark.parametrize("flat,detached", [(True, False), (False, False), (False, True)],
                         ids=["flat-InRelease", "suite-InRelease", "suite-Release.gpg"])
@pytest.mark.network
@pytest.mark.integration
def test_a_signed_repository_resolves_to_its_real_packages(served, keys, real_debs, tmp_path, flat, detached):
    name = f"ok-{'flat' if flat else 'suite'}-{int(detached)}"
    url = make_repo(served, keys, real_debs, name, flat=flat, detached=detached,
                    valid_until=datetime.now(timezone.utc) + timedelta(days=7))
    inputs = resolve(repo_of(url, keys, tmp_path, flat=flat), tmp_path)
    assert [i.name for i in inputs] == sorted(ROOTS)  # libc6 is below; libtirpc-common was not asked for
    for i in inputs:
        control, data, filename = real_debs[i.name]
        assert (i.sha256, i.size, i.version) == (hashlib.sha256(data).hexdigest(), len(data), control["Version"])
        assert i.url == f"{url}/{'' if flat else 'pool/main/'}{filename}"


@pytest.mark.network
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "suite"])
def test_an_image_builds_from_a_verified_repository(served, keys, real_debs, tmp_path, flat):
    from enginefab.lock.layering import Parts, plan_image

    url = make_repo(served, keys, real_debs, f"build-{'flat' if flat else 'suite'}", flat=flat)
    inputs = resolve(repo_of(url, keys, tmp_path, flat=flat), tmp_path)
    layers = plan_image(Parts(alias="apt-test", debs=inputs))
    defn = demo_definition("demo-pytorch-aarch64")
    path = definition_file(defn.model_copy(update={"layers": layers}), tmp_path / "apt.json")
    p = enginefab("build", str(path), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--json",
                  timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    (result,) = json.loads(p.stdout)
    (layer,) = result["layer_results"]
    blob = tmp_path / "store" / "blobs" / "sha256" / layer["digests"][0].split(":")[1]
    with tarfile.open(blob, "r:gz") as tf:
        names = set(tf.getnames())
        status = tf.extractfile(f"{STATUS_D}/libkeyutils1").read().decode()  # type: ignore[union-attr]
    assert "etc/mime.types" in names  # media-types' file
    assert any(n.startswith("lib/aarch64-linux-gnu/libkeyutils.so.1") for n in names)
    assert status.startswith("Package: libkeyutils1\nStatus: install ok installed\n")
    assert f"{STATUS_D}/media-types" in names and not any("libtirpc" in n for n in names)


def refused(repo: AptRepo, tmp_path: Path) -> LockError:
    with pytest.raises(LockError) as e:
        resolve(repo, tmp_path)
    assert e.value.input == f"apt:{repo.label}"
    assert e.value.fix
    return e.value


@pytest.mark.network
@pytest.mark.integration
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "suite"])
def test_a_repository_signed_by_another_key_is_refused(served, keys, real_debs, tmp_path, flat):
    url = make_repo(served, keys, real_debs, f"other-{int(flat)}", flat=flat, signer="other")
    repo = repo_of(url, keys, tmp_path, flat=flat)
    err = refused(repo, tmp_path)
    assert "carries no valid signature by a pinned key" in err.message and keys.good in err.message
    # the other key in the keyring too: a good signature, but not by the pinned key
    ring = tmp_path / "both.asc"
    ring.write_bytes(keys.gpg("--armor", "--export", keys.good, keys.other))
    err = refused(repo.model_copy(update={"keyring": [str(ring)]}), tmp_path)
    assert f"is signed by {keys.other}, not by a key platforms.toml pins" in err.message
    assert "rotated" in err.fix


@pytest.mark.network
@pytest.mark.integration
def test_an_unsigned_repository_is_refused(served, keys, real_debs, tmp_path):
    url = make_repo(served, keys, real_debs, "unsigned", flat=True, signer=None)
    err = refused(repo_of(url, keys, tmp_path, flat=True), tmp_path)
    assert "is not one clear-signed message" in err.message and "never accept it unsigned" in err.fix


@pytest.mark.network
@pytest.mark.integration
def test_text_outside_the_signature_is_refused(served, keys, real_debs, tmp_path):
    url = make_repo(served, keys, real_debs, "wrapped", flat=True)
    inrelease = served.root / "wrapped" / "InRelease"
    inrelease.write_bytes(b"SHA256:\n 00 1 evil\n\n" + inrelease.read_bytes())
    err = refused(repo_of(url, keys, tmp_path, flat=True), tmp_path)
    assert "text outside the signature" in err.message


@pytest.mark.network
@pytest.mark.integration
def test_a_release_of_another_suite_is_refused(served, keys, real_debs, tmp_path):
    url = make_repo(served, keys, real_debs, "downgrade", flat=False, codename="other")
    err = refused(repo_of(url, keys, tmp_path, flat=False), tmp_path)
    assert "the Release is for Codename other / Suite stable, not enginefab-test" in err.message


@pytest.mark.network
@pytest.mark.integration
def test_an_expired_release_is_refused_unless_the_repository_is_frozen(served, keys, real_debs, tmp_path):
    url = make_repo(served, keys, real_debs, "expired", flat=False,
                    valid_until=datetime.now(timezone.utc) - timedelta(days=1))
    err = refused(repo_of(url, keys, tmp_path, flat=False), tmp_path)
    assert "expired at" in err.message and "Valid-Until" in err.message and "frozen = true" in err.fix
    # a snapshot archive never changes: declared frozen, its old Valid-Until is not a reason to refuse
    inputs = resolve(repo_of(url, keys, tmp_path, flat=False, frozen=True), tmp_path)
    assert [i.name for i in inputs] == sorted(ROOTS)


@pytest.mark.network
@pytest.mark.integration
def test_no_keyring_or_no_gpgv_is_an_error_never_unsigned_acceptance(served, keys, real_debs, tmp_path, monkeypatch):
    url = make_repo(served, keys, real_debs, "nokeys", flat=True)
    repo = repo_of(url, keys, tmp_path, flat=True)
    err = refused(repo.model_copy(update={"keyring": [str(tmp_path / "absent.gpg")]}), tmp_path)
    assert "is not here: its index cannot be verified" in err.message
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    err = refused(repo, tmp_path)
    assert "gpgv is not installed" in err.message and "./dev setup" in err.fix


def test_plain_http_needs_saying_so():
    with pytest.raises(ValueError, match="plain http: use https, or set plain_http = true"):
        AptRepo(url="http://deb.debian.org/debian", suite="bookworm", keyring="/k",
                fingerprints=["B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"])


def test_a_hostile_file_name_in_the_index_is_refused():
    repo = AptRepo(url="https://example.invalid/r", flat=True, keyring="/k",
                   fingerprints=["B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"])
    for bad in ("../../etc/shadow.deb", "/etc/x.deb", "a/../../b.deb", "x.tar"):
        with pytest.raises(LockError, match="not a path below the repository"):
            aptindex.safe_filename(repo, bad, package="p")
    assert aptindex.safe_filename(repo, "./cuda-cudart-10-2_10.2.89-1_amd64.deb", package="p") == \
        "cuda-cudart-10-2_10.2.89-1_amd64.deb"


# -- a CUDA-style stack: packages over a base image, from a flat repository and the OS's --------


def stack_case(served, keys, real_debs, tmp_path, published: dict[str, str]):
    """pytorch-cuda10.2 of the real matrix with its stack's repositories replaced by local ones:
    the NVIDIA ones by a flat repository, Ubuntu's by a suite-style one (both signed, served here);
    arm64, the arch of the real packages at hand."""
    import dataclasses

    from enginefab.engines.matrix import Matrix, load

    flat = repo_of(make_repo(served, keys, real_debs, "nv-flat", flat=True), keys, tmp_path, flat=True)
    suite = repo_of(make_repo(served, keys, real_debs, "ub-suite", flat=False), keys, tmp_path, flat=False)
    m = load(Path(__file__).resolve().parent.parent)
    img = m.get("pytorch-cuda10.2")
    apt = dict(m.platforms.apt) | {"nvidia-cuda-ubuntu1804": flat, "nvidia-ml-ubuntu1804": flat, "ubuntu-bionic": suite}
    stack = img.stack.model_copy(update={"packages": ["libkeyutils1=1.6.1-2", "media-types"], "published": published})
    d = img.d.model_copy(update={"arch": "aarch64"})  # the real debs at hand are arm64's
    m2 = Matrix(root=m.root, platforms=m.platforms.model_copy(update={"apt": apt}), engines=m.engines,
                images=[dataclasses.replace(img, d=d, stack=stack)])
    return m2, m2.images[0], flat


@pytest.mark.network
@pytest.mark.integration
def test_a_stack_over_a_base_is_pinned_from_its_repositories_and_checked_against_published_hashes(
        served, keys, real_debs, tmp_path, monkeypatch):
    from enginefab.lock import locker, stackdebs
    from enginefab.lock.layering import Parts, parts_of, plan_image

    # what the registry would say: the base is resolved and has libc6 installed
    monkeypatch.setattr(stackdebs, "why_pending", lambda *a: None)
    monkeypatch.setattr(stackdebs, "installed_in_base", lambda base, image, session: {"libc6"})
    sha = hashlib.sha256(real_debs["libkeyutils1"][1]).hexdigest()
    m, img, flat = stack_case(served, keys, real_debs, tmp_path, {"libkeyutils1=1.6.1-2": sha})
    inputs = locker.stack_inputs(img, m, [], set(), {}, session_for())
    debs = [i for i in inputs if i.kind == "deb"]
    assert [(i.name, i.url.rsplit("/", 1)[0]) for i in debs] == [("libkeyutils1", flat.url), ("media-types", flat.url)]
    assert next(i for i in debs if i.name == "libkeyutils1").sha256 == sha
    assert [i.name for i in inputs if i.kind == "run"] == ["cuda-setup"]
    # packages, then their setup: two layers, which lock --check can plan back from the definition
    layers = plan_image(Parts(alias=img.alias, stack=inputs, stack_id=img.stack_id, arch=img.arch))
    assert [la.id.split("/")[0] for la in layers] == ["stack", "stack-setup"]
    assert [la.kind for la in layers] == ["debs", "run"]
    defn = demo_definition("demo-pytorch-aarch64").model_copy(update={"layers": layers})
    assert plan_image(parts_of(defn)) == layers

    # a published sha256 the index contradicts: refused, naming the package and the source
    m, img, _ = stack_case(served, keys, real_debs, tmp_path, {"libkeyutils1=1.6.1-2": "0" * 64})
    with pytest.raises(LockError) as e:
        locker.stack_inputs(img, m, [], set(), {}, session_for())
    assert f"gives sha256 {sha}, but {'0' * 64} was published" in e.value.message


@pytest.mark.network
@pytest.mark.integration
def test_unreachable_repositories_leave_the_stack_recorded_but_unpinned(served, keys, real_debs, tmp_path):
    from enginefab.lock import locker

    m, img, flat = stack_case(served, keys, real_debs, tmp_path, {"libkeyutils1=1.6.1-2": "a" * 64})
    said = Recording()
    inputs = locker.stack_inputs(img, m, [], set(), {}, session_for(reporter=said))  # no base layers: nothing is fetched
    debs = [i for i in inputs if i.kind == "deb"]
    assert [(i.name, i.version, i.url, i.sha256, i.size) for i in debs] == [
        ("libkeyutils1", "1.6.1-2", None, "a" * 64, 0), ("media-types", "*", None, None, 0)]
    assert f"apt nvidia-cuda-ubuntu1804 {flat.url} /" in debs[0].where
    assert "run `enginefab lock pytorch-cuda10.2` where it is" in debs[0].where
    assert any("stay unpinned" in s for s in said.lines)


def test_the_committed_cuda_presets_say_what_is_unpinned_and_where_it_comes_from(root):
    p = cli("lock", "--check", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    warnings = " ".join(json.loads(p.stdout)["warnings"])
    for alias in ("pytorch-cuda10.2", "tensorflow-cuda10.1", "horovod-tensorflow-cuda10.1", "horovod-pytorch-cuda10.2",
                  "mindspore-cuda10.1", "kungfu-tf1.13"):
        assert f"{alias}: layer stack/cuda-" in warnings, alias
    assert "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu1804/x86_64 /" in warnings
    assert "4 with a sha256 upstream published" in warnings  # cuDNN 7.6.5 and NCCL 2.8.3 for CUDA 10.1 (devel)
    shown = cli("show", "tensorflow-cuda10.1", check=True).stdout
    assert "base      docker.io/library/ubuntu:18.04@sha256:152dc042452c496007f07ca9127571cb9c29697f42acbfad72324b2bb2e43c98" in shown
    assert "deb    libcudnn7 7.6.5.32-1+cuda10.1  07d73672d038" in shown
    assert "deb    cuda-cudart-10-1 10.1.243-1  unpinned  0  from one of nvidia-cuda-ubuntu1804, nvidia-ml-ubuntu1804" in shown
    assert "nvidia/cuda" not in (root / "build" / "tensorflow-cuda10.1.json").read_text()


def test_a_debs_origin_is_the_repository_its_url_lies_in_or_those_its_lock_named(root):
    """What `show` prints after a deb: the apt repository of platforms.toml its URL is under (longest
    URL first), the URL itself under none; while unpinned, the repositories the lock named."""
    from enginefab.core.definition import Input, load_definition
    from enginefab.engines.matrix import load
    from enginefab.lock.stackdebs import deb_origin

    m = load(root, strict=False)
    apt = m.platforms.apt
    debs = [i for i in load_definition(root / "build" / "demo-pytorch-x86_64.json").inputs() if i.kind == "deb"]
    assert debs and {deb_origin(i, apt)[0] for i in debs} <= {"debian-bullseye", "debian-bookworm"}
    elsewhere = debs[0].model_copy(update={"url": "https://example.org/pool/x.deb"})
    assert deb_origin(elsewhere, apt) == ["https://example.org/pool/x.deb"]
    unpinned = [i for i in load_definition(root / "build" / "tensorflow-cuda10.1.json").inputs()
                if i.kind == "deb" and not i.url]
    assert unpinned
    assert deb_origin(unpinned[0], apt) == ["nvidia-cuda-ubuntu1804", "nvidia-ml-ubuntu1804", "ubuntu-bionic"]
    assert deb_origin(Input(kind="deb", name="x", version="1", url=None, sha256=None, size=0, where=None), apt) == []


def test_a_build_of_unpinned_packages_says_what_to_run_where(tmp_path):
    from enginefab.core.definition import Input
    from enginefab.lock.layering import Parts, plan_image

    where = "apt nvidia-cuda-ubuntu1804 https://developer.download.nvidia.com/compute/cuda/repos/ubuntu1804/x86_64 /"
    pending = Input(kind="deb", name="cuda-cudart-10-2", version="10.2.89-1", url=None, sha256=None, size=0,
                    arch="arm64", where=where)
    defn = demo_definition("demo-pytorch-aarch64")
    layers = plan_image(Parts(alias="demo-pytorch-aarch64", debs=[pending]))
    path = definition_file(defn.model_copy(update={"layers": layers}), tmp_path / "pending.json")
    p = cli("build", str(path), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--json")
    assert p.returncode == 2, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "cuda-cudart-10-2 10.2.89-1 is not pinned yet" in out and where in out
    assert "run `enginefab lock demo-pytorch-aarch64`" in out and "on a machine that reaches the repository" in out


def test_only_good_signatures_by_valid_keys_count():
    """gpgv's status lines: an expired or revoked key's signature is not a good one (as for apt)."""
    from enginefab.lock.aptsig import parse_status

    fpr, other = "1F89983E0081FDE018F3CC9673A4F27B8DD47936", "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"
    valid = f"[GNUPG:] VALIDSIG AAAA 2025-08-09 1754731018 0 4 0 1 8 01 {{}}\n"
    good = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 73A4F27B8DD47936 key\n" + valid.format(fpr)
    expired = "[GNUPG:] NEWSIG\n[GNUPG:] EXPKEYSIG F8D2585B8783D481 key\n" + valid.format(other)
    assert parse_status(good + expired).good == (fpr,)
    assert parse_status(expired).good == ()
    assert parse_status(good + "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 1 x\n").bad


def test_a_keyring_of_several_armoured_keys_holds_them_all(keys, tmp_path):
    from enginefab.lock.aptsig import dearmor

    both = keys.export(keys.good, tmp_path / "a.asc").read_bytes() + keys.export(keys.other, tmp_path / "b.asc").read_bytes()
    (tmp_path / "both.gpg").write_bytes(dearmor(both))
    listing = keys.gpg("--show-keys", "--with-colons", str(tmp_path / "both.gpg")).decode()
    assert {keys.good, keys.other} <= {ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")}
    with pytest.raises(LockError, match="not base64"):
        dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!notbase64!!!\n-----END PGP PUBLIC KEY BLOCK-----\n")


def test_lock_check_catches_a_stack_package_edited_in_build(engines_copy):
    """The packages and published hashes engines/ pins for a stack must be in build/ as pinned."""
    path = engines_copy / "build" / "tensorflow-cuda10.1.json"
    d = json.loads(path.read_text())
    (stack,) = [la for la in d["layers"] if la["id"].startswith("stack/cuda-10.1-")]
    cudnn = next(i for i in stack["inputs"] if i["name"] == "libcudnn7")
    cudnn["sha256"] = "0" * 64
    stack["inputs"] = [i for i in stack["inputs"] if i["name"] != "libnccl2"]
    path.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")
    res = json.loads(cli("lock", "--check", "--json", cwd=engines_copy).stdout)
    problems = [p for p in res["problems"] if p.startswith("tensorflow-cuda10.1:")]
    assert any("lacks libnccl2=2.8.3-1+cuda10.1 that stack cuda-10.1 pins" in p for p in problems), problems
    assert any("deb:libcudnn7==7.6.5.32-1+cuda10.1: build/ has sha256 " + "0" * 64 in p
               and "published 07d73672d03836126050e5b78b1a5199fabaa5a540b924903acba00cbfe81848" in p for p in problems)
