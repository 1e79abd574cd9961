# One crate of the workspace as a package: `autoprov` (the operator CLI) or `autoprov-agent` (the
# device agent, which also installs its two systemd units with @bindir@ substituted).
#
# rustPlatform.buildRustPackage with cargoLock: dependencies come from Cargo.lock alone, with no
# vendor hash to keep in step and no input besides nixpkgs; pkgsCross.*.callPackage cross-builds
# it unchanged. See README, "Nix".
{ lib, rustPlatform, crate }:

let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;
in
rustPlatform.buildRustPackage {
  pname = crate;
  inherit (workspace) version;

  # The Rust workspace only: editing a .nix file or the docs rebuilds nothing.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.difference ../. (lib.fileset.unions [
      (lib.fileset.fileFilter (file: file.hasExt "nix") ../.)
      (lib.fileset.maybeMissing ../.github)
      (lib.fileset.maybeMissing ../target)
    ]);
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--package" crate ];

  # The workspace's tests need Mosquitto, FAT images and network namespaces: they run as the
  # flake's `cargo-nextest` check and in scripts/test, not in every package build.
  doCheck = false;

  postInstall = lib.optionalString (crate == "autoprov-agent") ''
    install -Dm0644 -t $out/lib/systemd/system \
      agent/systemd/autoprov-import.service agent/systemd/autoprov-agent.service
    substituteInPlace $out/lib/systemd/system/autoprov-*.service --replace-fail @bindir@ $out/bin
  '';

  meta = {
    description =
      if crate == "autoprov-agent"
      then "autoprov device agent: DHT11 readings through a durable spool to MQTT over mutual TLS"
      else "autoprov operator CLI: the fleet's CA, device certificates, inventory, flashing";
    license = [ lib.licenses.mit lib.licenses.asl20 ];
    mainProgram = crate;
    platforms = lib.platforms.linux;
  };
}
