# TEST AND OFFLINE-DEVELOPMENT ONLY: a stand-in for nixpkgs that runs enginefab with the host's
# Python. The repository's flake never refers to it; you opt in per command:
#
#   echo "$PWD/.venv/bin/python" > nix/host-toolchain/interpreter     # gitignored
#   nix build .#demo-pytorch-aarch64 \
#     --override-input nixpkgs path:./nix/host-toolchain --no-write-lock-file
#
# flake.nix uses exactly one thing from nixpkgs, `legacyPackages.<system>.callPackage`, for two
# expressions: ./nix/package.nix { src; version; } (the enginefab CLI) and ./nix/run-tools.nix
# (bubblewrap, proot, qemu-user for run steps). Here callPackage ignores those nixpkgs
# expressions: the CLI becomes a Python script whose shebang is <interpreter> and which puts the
# same `src` (the flake's filtered source) first on sys.path, so the code that builds images is
# the flake's, while its dependencies (pydantic, zstandard, …) come from the interpreter's
# environment; the run tools are the host's /usr/bin ones. No shell anywhere (the sandbox has
# none). The interpreter and those tools live outside the store: with the sandbox on, Nix must
# be told to bind them (`extra-sandbox-paths`: /usr /lib /lib64, the interpreter's prefix and
# venv; README, Nix).
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
            f.write("#!%s\nimport sys\nsys.path.insert(0, %r)\n" % (python, src))
            f.write("from enginefab.cli.main import main\nmain()\n")
        os.chmod(out + "/bin/enginefab", 0o755)
      '';
      # nix/run-tools.nix: the host's bubblewrap, proot and qemu-user-static
      tools = ''
        import os
        out = os.environ["out"]
        os.makedirs(out + "/bin")
        for name in ("bwrap", "proot", "qemu-aarch64-static", "qemu-x86_64-static"):
            if os.path.exists("/usr/bin/" + name):
                os.symlink("/usr/bin/" + name, out + "/bin/" + name)
      '';
      host = system: {
        callPackage = expression: args:
          let file = baseNameOf (toString expression); in
          if file == "package.nix" then derivation {
            name = "enginefab-${args.version}-host-python";
            inherit system;
            inherit (args) src;
            python = interpreter;
            builder = interpreter;
            args = [ "-c" wrapper ];
          }
          else if file == "run-tools.nix" then derivation {
            name = "enginefab-run-tools-host";
            inherit system;
            builder = interpreter;
            args = [ "-c" tools ];
          }
          else throw "nix/host-toolchain: flake.nix calls ${file}, which this shim does not provide";
      };
    in
    {
      legacyPackages = builtins.listToAttrs (map (system: { name = system; value = host system; })
        [ "x86_64-linux" "aarch64-linux" ]);
    };
}
