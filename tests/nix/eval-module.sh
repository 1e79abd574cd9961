#!/usr/bin/env bash
# Evaluates the Nix code against nixpkgs' lib with Debian's Nix: the NixOS module
# (tests/nix/eval-module.nix: option types, the rendered agent.toml, the units' drop-ins, the
# FIRMWARE mount) and the flake's outputs (tests/nix/eval-flake.nix: names and wiring).
#
# Needs nixpkgs' lib, which nixpkgs itself cannot be fetched for here: the repository
# nix-community/nixpkgs.lib (its lib/ evaluates with Nix 2.8). Give its lib/ directory in
# $NIXPKGS_LIB, or a git clone of that repository in $NIXPKGS_LIB_REPO. Without it the script
# says SKIPPED and exits 0 (set AUTOPROV_REQUIRE_NIX_LIB=1 to make that an error).
set -euo pipefail
cd "$(dirname "$0")/../.."

lib_dir=${NIXPKGS_LIB:-}
if [[ -z "$lib_dir" ]]; then
  repo=${NIXPKGS_LIB_REPO:-/work/.mirror/nix-community+nixpkgs.lib/repo}
  if git --git-dir="$repo" rev-parse --verify -q HEAD:lib >/dev/null 2>&1; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    git --git-dir="$repo" archive HEAD lib | tar -x -C "$work"
    lib_dir="$work/lib"
    echo "eval-module: nixpkgs lib $(cat "$lib_dir/.version") from $repo ($(git --git-dir="$repo" rev-parse --short HEAD))"
  fi
fi
if [[ -z "$lib_dir" || ! -f "$lib_dir/default.nix" ]]; then
  echo "eval-module: SKIPPED: no nixpkgs lib (set NIXPKGS_LIB to a nixpkgs.lib checkout's lib/);" \
    "the NixOS module was NOT evaluated" >&2
  [[ "${AUTOPROV_REQUIRE_NIX_LIB:-0}" == 1 ]] && exit 1
  exit 0
fi

lib_expr="import $(realpath "$lib_dir")"
passed=0
failed=0

# Each test is evaluated on its own: an error in one (a missing attribute is not catchable inside
# Nix) fails that test, not the others.
run_file() {
  local file=$1 name out
  local names
  names=$(nix-instantiate --eval --strict --json \
    -E "builtins.attrNames (import ./$file { lib = $lib_expr; })" | tr -d '[]"' | tr ',' ' ')
  for name in $names; do
    if out=$(eval_test "$file" "$name.ok" 2>&1) && [[ "$out" == true ]]; then
      passed=$((passed + 1))
      echo "PASS ${file##*/} $name"
    else
      failed=$((failed + 1))
      echo "FAIL ${file##*/} $name"
      if [[ "$out" == false ]]; then
        echo "  got:  $(eval_test "$file" "$name.got")"
        echo "  want: $(eval_test "$file" "$name.want")"
      else
        sed 's/^/  /' <<<"$out"
      fi
    fi
  done
}
eval_test() {
  nix-instantiate --eval --strict --json "$1" --arg lib "$lib_expr" -A "$2"
}

run_file tests/nix/eval-module.nix
run_file tests/nix/eval-flake.nix

echo "eval-module: $passed passed, $failed failed"
[[ $failed -eq 0 && $passed -gt 0 ]]
