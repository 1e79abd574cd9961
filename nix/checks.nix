# `nix flake check` for the Rust workspace and the files around it: clippy, rustfmt, the cargo
# test suite, the systemd units (scripts/check-units) and the Nix files themselves. The VM tests
# are in tests/nixos/.
{ runCommand
, autoprov
, autoprov-agent
, src
, cargo-nextest
, clippy
, deadnix
, dosfstools
, e2fsprogs
, mosquitto
, mtools
, nixpkgs-fmt
, openssl
, rustfmt
, systemd
, util-linux
, zstd
}:

let
  # The package's vendored dependencies and cargo setup, with a different build phase.
  cargoRun = name: extraInputs: command: autoprov.overrideAttrs (old: {
    pname = "autoprov-${name}";
    nativeBuildInputs = old.nativeBuildInputs ++ extraInputs;
    buildPhase = ''
      runHook preBuild
      ${command}
      runHook postBuild
    '';
    installPhase = "touch $out";
  });
in
{
  clippy = cargoRun "clippy" [ clippy ]
    "cargo clippy --workspace --all-targets --offline --locked -- -D warnings";

  # Tests that need root (network namespaces) cannot run in the build sandbox; scripts/test runs
  # them.
  cargo-nextest = cargoRun "nextest"
    [ cargo-nextest mosquitto openssl dosfstools mtools util-linux e2fsprogs zstd ]
    ''
      # autoprov-tests runs both binaries, which cargo builds only for their own package's tests.
      cargo build --workspace --bins --offline --locked
      cargo nextest run --workspace --offline --locked --no-fail-fast
    '';

  rustfmt = runCommand "autoprov-rustfmt" { nativeBuildInputs = [ rustfmt ]; } ''
    cd ${src}
    find . -name '*.rs' -print0 | xargs -0 rustfmt --check --edition 2024
    touch $out
  '';

  nix-files = runCommand "autoprov-nix-files" { nativeBuildInputs = [ nixpkgs-fmt deadnix ]; } ''
    cd ${src}
    nixpkgs-fmt --check .
    deadnix --fail .
    touch $out
  '';

  # Units from the installed package are checked too: their @bindir@ is substituted already.
  systemd-units = runCommand "autoprov-systemd-units" { nativeBuildInputs = [ systemd ]; } ''
    export SYSTEMD_UNIT_PATH=${systemd}/example/systemd/system:
    AUTOPROV_BIN_DIR=${autoprov-agent}/bin bash ${src}/scripts/check-units
    for unit in ${autoprov-agent}/lib/systemd/system/*.service; do
      if grep -n '@bindir@' "$unit"; then
        echo "$unit: @bindir@ was not substituted" >&2
        exit 1
      fi
    done
    touch $out
  '';
}
