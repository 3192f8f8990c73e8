# TEST AND OFFLINE-DEVELOPMENT ONLY: a stand-in for nixpkgs that runs enginefab with the host's
# Python. The repository's flake never refers to it; you opt in per command:
#
#   echo "$PWD/.venv/bin/python" > nix/host-toolchain/interpreter     # gitignored
#   nix build .#demo-pytorch-aarch64 \
#     --override-input nixpkgs path:./nix/host-toolchain --no-write-lock-file
#
# flake.nix uses exactly one thing from nixpkgs: `legacyPackages.<system>.callPackage
# ./nix/package.nix { src; version; }` for the enginefab CLI. Here callPackage ignores that
# nixpkgs expression and returns a wrapper running `<interpreter> -m enginefab` over the same
# `src` (the flake's filtered source, first on PYTHONPATH), so the code that builds images is
# the flake's, while its dependencies (pydantic, zstandard, …) come from the interpreter's
# environment. This only works with the sandbox off (Debian's nix-bin default): the
# interpreter is outside the store.
{
  description = "host-toolchain shim: enginefab via the host's Python instead of nixpkgs (tests only)";

  outputs = { self }:
    let
      interpreterFile = ./. + "/interpreter";
      interpreter =
        if builtins.pathExists interpreterFile
        then builtins.head (builtins.match "[[:space:]]*([^[:space:]]+)[[:space:]]*" (builtins.readFile interpreterFile))
        else throw "nix/host-toolchain: write the path of a Python that has enginefab's dependencies into nix/host-toolchain/interpreter";
      wrapper = ''
        import os
        out, src, python = os.environ["out"], os.environ["src"], os.environ["python"]
        os.makedirs(out + "/bin")
        with open(out + "/bin/enginefab", "w") as f:
            f.write("#!/bin/sh\nPYTHONPATH=%s exec %s -m enginefab \"$@\"\n" % (src, python))
        os.chmod(out + "/bin/enginefab", 0o755)
      '';
      host = system: {
        callPackage = _nixpkgsExpression: { src, version, ... }: derivation {
          name = "enginefab-${version}-host-python";
          inherit system src;
          python = interpreter;
          builder = interpreter;
          args = [ "-c" wrapper ];
        };
      };
    in
    {
      legacyPackages = builtins.listToAttrs (map (system: { name = system; value = host system; })
        [ "x86_64-linux" "aarch64-linux" ]);
    };
}
