{
  description = "Our sensor fleet: one SD image for every card, built from autoprov";

  # Pin autoprov to a release tag or commit; `nix flake lock` records the exact revisions.
  inputs.autoprov.url = "github:autoprov/autoprov";

  outputs = { autoprov, ... }: {
    # nix build .#sd-image           (on an aarch64-linux machine or builder)
    # nix build .#sd-image-cross     (on x86_64-linux, cross-compiled)
    packages.aarch64-linux.sd-image = autoprov.lib.mkSdImage { modules = [ ./fleet.nix ]; };
    packages.x86_64-linux.sd-image-cross = autoprov.lib.mkSdImage {
      modules = [ ./fleet.nix ];
      buildPlatform = "x86_64-linux";
    };

    # The operator CLI: nix run .#autoprov -- ca init
    packages.x86_64-linux.autoprov = autoprov.packages.x86_64-linux.autoprov;
  };
}
