{
  description = "enginefab: reproducible, matrix-planned OCI images for AI training engines";

  # The only input. Its pin (flake.lock) decides the Python that runs the builder and the tools
  # run steps execute with; the images' bytes are decided by build/*.json alone (compression contract included: a Python whose zlib
  # compresses differently refuses to build instead of producing other digests).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      eachSystem = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
      sources = import ./nix/sources.nix { root = ./.; };
      version = (builtins.fromTOML (builtins.readFile ./pyproject.toml)).project.version;

      perSystem = eachSystem (system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          enginefab = pkgs.callPackage ./nix/package.nix { src = sources.package; inherit version; };
          # every build/<alias>.json; an image for either arch builds on either system (the
          # builder only unpacks and packs files)
          images = import ./nix/images.nix {
            inherit system enginefab;
            buildDir = ./build;
            # PATH of the image derivations whose definitions have run steps
            runTools = pkgs.callPackage ./nix/run-tools.nix { };
          };
        in
        {
          packages = images.images // { inherit enginefab; default = enginefab; };
          legacyPackages = images.legacy;
          apps.default = { type = "app"; program = "${enginefab}/bin/enginefab"; };
          checks = import ./nix/checks.nix { inherit system enginefab; matrix = sources.matrix; };
        });
      pick = attr: builtins.mapAttrs (_: s: s.${attr}) perSystem;
    in
    {
      packages = pick "packages";
      legacyPackages = pick "legacyPackages";
      apps = pick "apps";
      checks = pick "checks";
    };
}
