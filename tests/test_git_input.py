"""The `git` input: a repository, a commit and its tree, made into an archive whose sha256 is stable.

Against repositories the tests create with git itself: the same archive from two empty caches,
a wrong tree refused before anything is written, hostile trees (symlinks out of the tree, `..`
and `.git` entries, submodules) refused naming the path, and the path a build takes (the
builder's fetcher, the run step's file name, `lock --check` on a pin without sha256).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from enginefab.assemble.builder import fetch_input
from enginefab.core.definition import Input
from enginefab.core.errors import FetchError, UnsafeArchiveError
from enginefab.engines.model import GitSource
from enginefab.lock.declared import git_input
from enginefab.transport import git

from .conftest import enginefab, session_for

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_AUTHOR_DATE": "2020-03-30T12:00:00Z",
       "GIT_COMMITTER_DATE": "2020-03-30T12:00:00Z", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
       "PATH": os.environ["PATH"], "HOME": "/nonexistent"}


def sh(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], env=ENV, input=stdin, check=True,
                          capture_output=True).stdout.decode().strip()


def make_repo(path: Path, files: dict[str, str | bytes], links: dict[str, str] | None = None,
              executable: tuple[str, ...] = ()) -> tuple[str, str]:
    """A repository with one commit of `files` and `links`: (commit, tree)."""
    path.mkdir(parents=True)
    sh(path, "init", "-q", "-b", "main")
    for name, body in files.items():
        p = path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body if isinstance(body, bytes) else body.encode())
        if name in executable:
            p.chmod(0o755)
    for name, target in (links or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path / name)
    sh(path, "add", "-A")
    sh(path, "commit", "-q", "-m", "v1")
    return sh(path, "rev-parse", "HEAD"), sh(path, "rev-parse", "HEAD^{tree}")


def commit_tree(repo: Path, tree: str) -> str:
    """A commit of a tree made by hand (what a hostile repository can serve), on a branch."""
    c = sh(repo, "commit-tree", tree, "-m", "hostile")
    sh(repo, "update-ref", "refs/heads/hostile", c)
    return c


SOURCE = {"README.md": "KungFu-like source\n", "setup.py": "print('setup')\n", "bin/run": "#!/bin/sh\necho ok\n",
          "srcs/cpp/include/kungfu/api.h": "int kungfu(void);\n", "données/é.txt": "non-ASCII path\n",
          "srcs/" + "d" * 120 + "/long.txt": "a path longer than ustar's 100 bytes\n"}
LINKS = {"srcs/go/kungfu": "../cpp/include/kungfu"}


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    commit, tree = make_repo(tmp_path / "upstream", SOURCE, LINKS, executable=("bin/run",))
    return tmp_path / "upstream", commit, tree


def pin(repo: Path, commit: str, tree: str, prefix: str = "KungFu-0.2.2") -> git.GitPin:
    return git.GitPin(url=f"file://{repo}", commit=commit, tree=tree, prefix=prefix, label="git:KungFu==0.2.2")


def test_two_empty_caches_make_the_same_archive_with_the_tree_inside(repo, tmp_path):
    path, commit, tree = repo
    a = git.archive(pin(path, commit, tree), cache=tmp_path / "cache-a")
    b = git.archive(pin(path, commit, tree), cache=tmp_path / "cache-b")
    assert a.sha256 == b.sha256 and a.size == b.size and a.path.read_bytes() == b.path.read_bytes()
    assert a.path == tmp_path / "cache-a" / "sha256" / a.sha256  # content-addressed in the download cache
    with tarfile.open(a.path) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert tf.extractfile(members["KungFu-0.2.2/setup.py"]).read() == b"print('setup')\n"
        assert tf.extractfile(members["KungFu-0.2.2/données/é.txt"]).read() == b"non-ASCII path\n"
        assert "KungFu-0.2.2/srcs/" + "d" * 120 + "/long.txt" in members
    assert members["KungFu-0.2.2/bin/run"].mode == 0o755 and members["KungFu-0.2.2/setup.py"].mode == 0o644
    assert members["KungFu-0.2.2/srcs/go/kungfu"].issym()
    assert members["KungFu-0.2.2/srcs/go/kungfu"].linkname == "../cpp/include/kungfu"
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, 0, "", "")}
    names = list(members)
    assert names == sorted(names, key=lambda n: n.rstrip("/").encode()) and names[0] == "KungFu-0.2.2"
    # the same files as git's own archive of that commit
    ours = {n[len("KungFu-0.2.2/"):]: m for n, m in members.items() if m.isfile()}
    theirs = tarfile.open(fileobj=io.BytesIO(subprocess.run(["git", "-C", str(path), "archive", commit], env=ENV,
                                                            check=True, capture_output=True).stdout))
    assert sorted(ours) == sorted(m.name for m in theirs.getmembers() if m.isfile())
    # a second call with the sha256 is served from the cache
    assert git.archive(pin(path, commit, tree), a.sha256, cache=tmp_path / "cache-a").path == a.path


def test_the_archive_depends_on_the_tree_not_on_the_commit_or_the_clone(repo, tmp_path):
    path, commit, tree = repo
    first = git.archive(pin(path, commit, tree), cache=tmp_path / "c1").sha256
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--bare", str(path), str(clone)], env=ENV, check=True)
    recommit = commit_tree(clone, tree)  # another commit (time, message) of the same tree
    assert recommit != commit
    assert git.archive(pin(clone, recommit, tree), cache=tmp_path / "c2").sha256 == first


def test_a_wrong_tree_is_refused_before_anything_is_written(repo, tmp_path):
    path, commit, tree = repo
    wrong = "0" * 40
    with pytest.raises(FetchError) as e:
        git.archive(pin(path, commit, wrong), cache=tmp_path / "cache")
    assert f"commit {commit} of file://{path} has tree {tree}, the pin says {wrong}" in e.value.message
    assert e.value.input == "git:KungFu==0.2.2" and "tree" in (e.value.fix or "")
    assert not list((tmp_path / "cache" / "sha256").iterdir())


def test_a_wrong_archive_sha256_and_a_missing_commit_are_refused(repo, tmp_path):
    path, commit, tree = repo
    with pytest.raises(FetchError, match="the pin says " + "1" * 64):
        git.archive(pin(path, commit, tree), "1" * 64, cache=tmp_path / "cache")
    with pytest.raises(FetchError, match="(has no commit|failed for)"):
        git.archive(pin(path, "2" * 40, tree), cache=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "sha256").iterdir())


@pytest.mark.parametrize("links, bad", [
    ({"escape": "../../etc/passwd"}, "escape"),
    ({"abs": "/etc/shadow"}, "abs"),
    # each link stays inside on its own; followed through `b`, `a` leaves the tree
    ({"p/q/b": "../..", "p/q/a": "b/../x"}, "p/q/a"),
])
def test_symlinks_out_of_the_tree_are_refused(tmp_path, links, bad):
    commit, tree = make_repo(tmp_path / "r", {"ok.txt": "ok\n"}, links)
    with pytest.raises(UnsafeArchiveError) as e:
        git.archive(pin(tmp_path / "r", commit, tree), cache=tmp_path / "cache")
    assert repr(bad) in e.value.message and "outside the tree" in e.value.message
    assert not list((tmp_path / "cache" / "sha256").iterdir())


def test_a_submodule_is_refused_naming_it(tmp_path):
    commit, tree = make_repo(tmp_path / "r", {"ok.txt": "ok\n"})
    r = tmp_path / "r"
    sh(r, "update-index", "--add", "--cacheinfo", f"160000,{commit},vendor/lib")
    sh(r, "commit", "-q", "-m", "add a submodule")
    with pytest.raises(UnsafeArchiveError) as e:
        git.archive(pin(r, sh(r, "rev-parse", "HEAD"), sh(r, "rev-parse", "HEAD^{tree}")), cache=tmp_path / "cache")
    assert "'vendor/lib' is a submodule" in e.value.message


@pytest.mark.parametrize("name", ["..", ".git", ".GIT"])
def test_hand_made_trees_with_dot_dot_or_dot_git_are_refused(tmp_path, name):
    commit, _ = make_repo(tmp_path / "r", {"ok.txt": "ok\n"})
    r = tmp_path / "r"
    blob = sh(r, "hash-object", "-w", "--stdin", stdin=b"payload\n")
    inner = sh(r, "mktree", stdin=f"100644 blob {blob}\tconfig\n".encode())
    tree = sh(r, "mktree", stdin=f"040000 tree {inner}\t{name}\n100644 blob {blob}\tok.txt\n".encode())
    hostile = commit_tree(r, tree)
    with pytest.raises(UnsafeArchiveError) as e:  # git's fsck refuses it on fetch
        git.archive(pin(r, hostile, tree), cache=tmp_path / "cache")
    assert "fsck refuses" in e.value.message and f"contains '{name.lower()}'" in e.value.message.lower()
    assert not list((tmp_path / "cache" / "sha256").iterdir())
    # and our own rule, should a git without fsck have fetched it
    with pytest.raises(UnsafeArchiveError) as e:
        git.write_archive(pin(r, hostile, tree), r / ".git", io.BytesIO())
    assert f"{name}/config" in e.value.message and "'..' or '.git'" in e.value.message


def test_only_https_http_and_file_urls(tmp_path):
    for url in ("ext::sh -c touch% /tmp/pwned", "ssh://host/repo", "/plain/path"):
        with pytest.raises(ValueError, match="https://, http:// or file://"):
            GitSource(name="x", version="1", url=url, commit="a" * 40, tree="b" * 40, source="test",
                      trust="vendor-published")
        assert git.check_url(url) is not None
    with pytest.raises(ValueError, match="holds credentials"):
        GitSource(name="x", version="1", url="https://alice:hunter2@example.org/r", commit="a" * 40, tree="b" * 40,
                  source="test", trust="vendor-published")
    assert "credentials" in (git.check_url("https://alice:hunter2@example.org/r") or "")
    for field, value in (("prefix", "../../etc"), ("name", "../x"), ("version", ".hidden")):
        with pytest.raises(ValueError, match="becomes a file or directory name"):
            GitSource(**{"name": "x", "version": "1", "url": "https://example.org/r", "commit": "a" * 40,
                         "tree": "b" * 40, "source": "test", "trust": "vendor-published", field: value})


def test_the_builder_fetches_a_git_input_into_the_download_cache(repo, tmp_path):
    path, commit, tree = repo
    session = session_for(downloads=tmp_path / "cache" / "downloads")
    g = GitSource(name="KungFu", version="0.2.2", url=f"file://{path}", commit=commit, tree=tree,
                  prefix="KungFu-0.2.2", source="test repository", trust="vendor-published")
    inp = git_input(g)
    assert (inp.kind, inp.filename, inp.sha256, inp.unpack) == ("git", "KungFu-0.2.2.tar", None, False)
    got = fetch_input(inp, "kungfu-test", session)
    assert got.parent == tmp_path / "cache" / "downloads" / "sha256"
    sha = got.name
    pinned = Input(**{**inp.model_dump(), "sha256": sha})
    assert fetch_input(pinned, "kungfu-test", session) == got  # the cache answers, nothing is fetched
    wrong_tree = Input(**{**inp.model_dump(), "tree": "3" * 40})
    with pytest.raises(FetchError, match="the pin says " + "3" * 40):
        fetch_input(wrong_tree, "kungfu-test", session)


def test_the_kungfu_preset_pins_the_tag_by_commit_and_tree(matrix):
    img = matrix.get("kungfu-tf1.13")
    (g,) = img.d.git
    assert (g.commit, g.tree) == ("3df30e3f2f51163b50236c917a20f0d1fe65620d", "8b4f91ce64ea124013dac5e034ff063b39b99530")
    assert g.sha256 and g.trust == "vendor-published"
    assert not [m for m in img.d.manual if "KungFu" in m.name]  # no longer a manual input
    (step,) = [r for r in img.d.run if r.name == "build-kungfu"]
    # the archive unpacked at Go's import path (GOPATH mode, modules off)
    assert f"/enginefab/inputs/{g.filename}" in step.script and f"lsds/{g.prefix} " in step.script


@pytest.mark.network
def test_lock_check_warns_about_a_git_pin_without_its_archive_sha256(engines_copy):
    kf = engines_copy / "engines" / "kungfu.toml"
    text = kf.read_text()
    line = next(x for x in text.splitlines() if x.startswith("sha256 = \"c1eb1ce8"))
    kf.write_text(text.replace(line + "\n", "").replace("size = 1109504\n", ""))
    r = enginefab("lock", "kungfu-tf1.13", cwd=engines_copy)
    assert r.returncode == 0, r.stderr
    r = enginefab("lock", "--check", cwd=engines_copy)
    assert r.returncode == 0, r.stderr
    out = " ".join((r.stdout + r.stderr).split())
    assert "git:KungFu==0.2.2 is pinned by its tree 8b4f91ce64ea124013dac5e034ff063b39b99530 alone" in out
    r = enginefab("lock", "--check", "--strict", cwd=engines_copy)
    assert r.returncode != 0


def test_a_layer_unpacking_a_git_input_has_the_same_digest_from_two_empty_stores(repo, tmp_path):
    """What a user sees: the same layer blob from two machines with nothing cached, holding the tree."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store
    from enginefab.core.definition import Layer, load_definition

    from .conftest import ROOT

    path, commit, tree = repo
    g = GitSource(name="KungFu", version="0.2.2", url=f"file://{path}", commit=commit, tree=tree,
                  prefix="KungFu-0.2.2", dest="/opt/src", source="test repository", trust="vendor-published")
    demo = load_definition(ROOT / "build" / "demo-pytorch-aarch64.json")
    defn = demo.model_copy(update={"layers": [Layer(id="src/kungfu", kind="archives", inputs=[git_input(g)])]})
    digests = []
    for n in (1, 2):
        session = session_for(downloads=tmp_path / f"cache{n}" / "downloads")
        (out,) = Builder(Store(tmp_path / f"store{n}"), session=session).build_layers(defn)
        assert out.status == "built", out.error
        digests.append(out.descs[0].digest)
        blob = tmp_path / f"store{n}" / "blobs" / "sha256" / out.descs[0].digest.split(":")[1]
        with tarfile.open(blob) as tf:
            names = tf.getnames()
    assert digests[0] == digests[1]
    assert "opt/src/KungFu-0.2.2/setup.py" in names and "opt/src/KungFu-0.2.2/srcs/go/kungfu" in names


def test_a_mirror_serves_the_repository_under_its_upstream_url(repo, tmp_path):
    """registry/mirrors.toml rewrites a git input's URL like any download: the lock keeps the
    upstream URL, the bytes come from the mirror, the tree decides whether it served the right ones."""
    path, commit, tree = repo
    mirrors = tmp_path / "mirrors.toml"
    mirrors.write_text(f'[[rewrite]]\nfrom = "https://github.com/lsds/"\nto = "file://{path.parent}/"\n')
    mirrored = session_for(mirrors=mirrors).mirrors
    (path.parent / "KungFu").symlink_to(path)
    upstream = git.GitPin(url="https://github.com/lsds/KungFu", commit=commit, tree=tree, prefix="KungFu-0.2.2")
    direct = git.archive(pin(path, commit, tree), cache=tmp_path / "direct")
    assert git.archive(upstream, cache=tmp_path / "mirrored", mirrors=mirrored).sha256 == direct.sha256


def test_a_fetch_killed_midway_leaves_nothing_in_the_cache_once_the_next_one_runs(repo, tmp_path):
    import sys

    path, commit, tree = repo
    cache = tmp_path / "cache"
    child = f"""
import os, signal
from pathlib import Path
from enginefab.transport import git
real = git.fetch_commit
def fetch_then_die(pin, repo, mirrors):
    real(pin, repo, mirrors)  # the objects are on disk: now the process is killed, as by the OOM killer
    os.kill(os.getpid(), signal.SIGKILL)
git.fetch_commit = fetch_then_die
git.archive(git.GitPin(url={f"file://{path}"!r}, commit={commit!r}, tree={tree!r}, prefix="p", label="x"),
            cache=Path({str(cache)!r}))
"""
    p = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert p.returncode == -9, p.stderr.decode()
    left = [c for c in cache.iterdir() if c.name != "sha256"]
    assert left and all(c.is_dir() for c in left)  # what the killed fetch left behind
    git.archive(pin(path, commit, tree), cache=cache)
    assert sorted(c.name for c in cache.iterdir()) == ["sha256"]
