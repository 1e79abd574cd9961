{
  description = "autoprov: zero-touch X.509 provisioning for a fleet of Raspberry Pi 3A+ sensors";

  # Pinned by URL; the first `nix flake lock` (or any nix build) writes flake.lock, which then
  # pins the exact revision. No other input: packages use nixpkgs' rustPlatform (README, "Nix").
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      crates = pkgs: {
        autoprov = pkgs.callPackage ./nix/package.nix { crate = "autoprov"; };
        autoprov-agent = pkgs.callPackage ./nix/package.nix { crate = "autoprov-agent"; };
      };

      # A fleet's NixOS system for the Pi 3A+: this repository's module and image, then the
      # fleet's own modules (endpoint, cloud profile, settings). `buildPlatform` cross-compiles
      # from another machine, e.g. "x86_64-linux"; null builds natively on aarch64.
      mkFleetSystem = { modules, buildPlatform ? null }:
        lib.nixosSystem {
          modules = [
            self.nixosModules.autoprov-agent
            ./image/rpi3a.nix
            { nixpkgs.hostPlatform = "aarch64-linux"; }
          ]
          ++ lib.optional (buildPlatform != null && buildPlatform != "aarch64-linux") {
            nixpkgs.buildPlatform = buildPlatform;
          }
          ++ modules;
        };
    in
    {
      lib = {
        inherit mkFleetSystem;
        # The SD image (.img.zst) of a fleet: `autoprov.lib.mkSdImage { modules = [ ./fleet.nix ]; }`.
        mkSdImage = args: (mkFleetSystem args).config.system.build.sdImage;
      };

      nixosModules = {
        autoprov-agent = ./modules/autoprov-agent.nix;
        default = self.nixosModules.autoprov-agent;
      };

      # The example fleet (mqtt profile); its image is packages.*.sd-image-rpi3a.
      nixosConfigurations.rpi3a = mkFleetSystem { modules = [ ./image/example-fleet.nix ]; };

      packages = forAllSystems (pkgs:
        let
          own = crates pkgs;
          system = pkgs.stdenv.hostPlatform.system;
        in
        own // {
          default = own.autoprov;
          sd-image-rpi3a = self.lib.mkSdImage {
            modules = [ ./image/example-fleet.nix ];
            buildPlatform = system;
          };
        } // lib.optionalAttrs (system == "x86_64-linux") {
          autoprov-agent-aarch64 = (crates pkgs.pkgsCross.aarch64-multiplatform).autoprov-agent;
        });

      checks.x86_64-linux =
        let
          pkgs = nixpkgs.legacyPackages.x86_64-linux;
          inherit (self.packages.x86_64-linux) autoprov autoprov-agent;
        in
        # callPackage adds `override` to the set, which is not a check.
        removeAttrs
          (pkgs.callPackage ./nix/checks.nix { inherit autoprov autoprov-agent; src = self; })
          [ "override" "overrideDerivation" ]
        // {
          vm-fleet = pkgs.testers.runNixOSTest (import ./tests/nixos/fleet.nix {
            inherit autoprov autoprov-agent;
            agentModule = self.nixosModules.autoprov-agent;
          });
        };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            cargo-nextest
            mosquitto
            openssl
            dosfstools
            mtools
            zstd
            nixpkgs-fmt
            deadnix
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

      templates = {
        fleet = {
          path = ./templates/fleet;
          description = "A fleet's own flake: its endpoint and cloud settings, one SD image for every card";
        };
        default = self.templates.fleet;
      };
    };
}
