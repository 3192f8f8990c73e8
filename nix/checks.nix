# `nix flake check`: the definition-level compatibility rules of every image, and
# `enginefab lock --check` (engines/ and build/ agree, nothing is missing). Both offline; each
# writes its JSON report to $out and fails the check when the CLI exits non-zero.
{ system, enginefab, matrix }:
let
  run = name: command: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" ''ENGINEFAB_CACHE="$TMPDIR/cache" exec ${enginefab}/bin/enginefab ${command} --json > "$out"'' ];
    ENGINEFAB_ROOT = matrix;
    ENGINEFAB_QUIET = "1";
  };
in
{
  definitions = run "enginefab-definition-rules" "check --all --level definition";
  lock = run "enginefab-lock-check" "lock --check";
}
