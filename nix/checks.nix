# `nix flake check`: the definition-level compatibility rules of every image, and
# `enginefab lock --check` (engines/ and build/ agree, nothing is missing). Both offline; each
# writes its JSON report to $out and fails the check when the CLI exits non-zero.
{ system, enginefab, matrix }:
let
  run = name: command: derivation {
    inherit name system;
    builder = "/bin/sh";
    # the report goes to $out; on failure it is also printed into the build log
    args = [ "-c" ''
      ENGINEFAB_CACHE="$TMPDIR/cache" ${enginefab}/bin/enginefab ${command} --json > "$out" && exit 0
      while IFS= read -r line; do printf '%s\n' "$line"; done < "$out" >&2
      exit 1
    '' ];
    ENGINEFAB_ROOT = matrix;
    ENGINEFAB_QUIET = "1";
  };
in
{
  definitions = run "enginefab-definition-rules" "check --all --level definition";
  lock = run "enginefab-lock-check" "lock --check";
}
