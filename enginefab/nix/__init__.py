"""What the flake's derivations run (flake.nix, nix/*.nix), one command each:

    enginefab nix build-layer    one layer of a definition → $out/blob + $out/descriptor.json  (layer.py)
    enginefab nix assemble       an image's config, manifest and OCI layout from its layers   (assemble.py)
    enginefab nix fetch-blob     the fixed-output fetch of a base-image blob                   (fetch.py)
    enginefab nix missing-input  the failing builder of a file a user must supply             (missing.py)
    enginefab nix flake-check    `nix flake check`: lock --check, definition rules             (checks.py)

The JSON the derivations pass in is typed in parts.py.
"""
