# The enginefab CLI from this repository's pyproject.toml, built with nixpkgs' Python packages
# (`pkgs.callPackage ./nix/package.nix { src; version; }` in flake.nix).
#
# Not built on the machine this was written on: nixpkgs cannot be fetched there. The tests
# replace this whole expression with the host's Python (nix/host-toolchain) and check that its
# dependencies are pyproject's (tests/test_nix.py); see README, Nix.
{ lib, python3Packages, src, version }:
let
  ps = python3Packages;
  # the release docs/oras-gaps/ documents (transport/client.py takes its media-type conventions): use exactly
  # that release from PyPI whatever version the pinned nixpkgs carries (hash from PyPI's index)
  oras = ps.oras.overridePythonAttrs (_: {
    version = "0.2.43";
    src = ps.fetchPypi {
      pname = "oras";
      version = "0.2.43";
      hash = "sha256-dh8rUY/OUOXpSCl1Nj/wIw9j/GX4TAlRD7zDAXgqBHw=";
    };
    doCheck = false;
  });
in
ps.buildPythonApplication {
  pname = "enginefab";
  inherit version src;
  pyproject = true;
  build-system = [ ps.setuptools ];
  # the source leaves README.md out (nix/sources.nix); pyproject names it as the readme
  postPatch = ''
    echo "# enginefab" > README.md
  '';
  # exactly pyproject.toml's [project] dependencies (tests/test_nix.py compares them)
  dependencies = [
    ps.pydantic
    ps.typer
    ps.rich
    oras
    ps.requests
    ps.urllib3
    ps.zstandard
    ps.pyelftools
    ps.python-debian
    ps.jinja2
    ps.packaging
    ps.installer
    ps.uv
    ps.filelock
    ps.pyyaml
    ps.jsonschema
  ];
  # pyproject's lower bounds were set against PyPI releases; nixpkgs' own versions are accepted
  # (a missing package is not relaxed: the runtime-dependency check still fails the build)
  pythonRelaxDeps = true;
  pythonImportsCheck = [ "enginefab" "enginefab.assemble.builder" "enginefab.nix.layer" "enginefab.nix.assemble"
    "enginefab.check.structure" ];
  # the test suite needs the network, a registry, bubblewrap, qemu and ~1 GB of inputs
  doCheck = false;
  meta = {
    description = "Reproducible, matrix-planned OCI images for AI training engines";
    license = lib.licenses.asl20;
    mainProgram = "enginefab";
    platforms = lib.platforms.linux;
  };
}
