"""What the flake's derivations run (flake.nix, nix/*.nix): `enginefab nix build-image` builds
one definition from fixed-output store paths into $out, `enginefab nix fetch-blob` is the
fixed-output fetcher of base-image blobs."""
