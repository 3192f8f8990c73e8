# The parts of the checkout each derivation depends on, so that editing the README does not
# rebuild an image and editing engines/ does not rebuild the CLI.
{ root }:
let
  inherit (builtins) elem head split stringLength substring match;
  prefix = toString root + "/";
  relative = path: substring (stringLength prefix) (stringLength (toString path)) (toString path);
  topLevel = path: head (split "/" (relative path));
  junk = path: match ".*(/__pycache__|\\.pyc|\\.egg-info)$" (toString path) != null;
  only = name: tops: builtins.path {
    inherit name;
    path = root;
    filter = path: _type: elem (topLevel path) tops && !(junk path);
  };
in
{
  # what the Python package is built from. Every layer derivation runs this package, so any
  # file here is part of every layer's key: not README.md (pyproject's readme; nix/package.nix
  # writes a stub), or a README edit would rebuild the whole matrix
  package = only "enginefab-source" [ "pyproject.toml" "enginefab" ];
  # what `enginefab lock --check` and the definition rules read
  matrix = only "enginefab-matrix" [ "pyproject.toml" "engines" "build" "registry" ];
}
