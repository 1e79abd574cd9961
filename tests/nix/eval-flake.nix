# Evaluates flake.nix's outputs against a stand-in for nixpkgs (nixpkgs' lib, plus stubs that
# record what they were called with), so that the output names the issue fixes and the wiring
# between them (module, image, cross builds, checks) are checked without nixpkgs. Returns one
# { ok; got; want; } per test, like eval-module.nix.
{ lib }:

let
  drv = name: extra: { type = "derivation"; inherit name; outPath = "/nix/store/${name}"; } // extra;

  fakePkgs = system: rec {
    stdenv.hostPlatform.system = system;
    callPackage = fn: args:
      let path = toString fn; in
      if lib.hasSuffix "nix/package.nix" path then drv "${args.crate}-${system}" { crate = args.crate; inherit system; }
      else { clippy = drv "clippy" { }; rustfmt = drv "rustfmt" { }; override = _: { }; overrideDerivation = _: { }; };
    pkgsCross.aarch64-multiplatform = fakePkgs "aarch64-linux-cross" // { };
    testers.runNixOSTest = test: drv "vm-test" { inherit test; };
    mkShell = args: drv "shell" { inherit args; };
    nixpkgs-fmt = drv "nixpkgs-fmt" { };
  } // lib.genAttrs [ "cargo" "rustc" "clippy" "rustfmt" "cargo-nextest" "mosquitto" "openssl" "dosfstools" "mtools" "zstd" "deadnix" ] (n: drv n { });

  nixpkgs = {
    lib = lib // {
      # What nixpkgs' flake adds to its lib: records the modules instead of evaluating NixOS.
      nixosSystem = args: { inherit args; config.system.build.sdImage = drv "sd-image" { inherit (args) modules; }; };
    };
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] fakePkgs;
  };

  flake = import ../../flake.nix;
  self = flake.outputs { inherit self nixpkgs; } // { outPath = toString ../..; };
  outputs = self;

  isDrv = v: v.type or null == "derivation";
  # The modules given to a fleet system, by file name or as the inline definitions they are.
  moduleNames = modules: map (m: if builtins.isPath m then baseNameOf m else if builtins.isAttrs m then m else "?") modules;

  tests = {
    flake_pins_nixpkgs_only = {
      got = builtins.attrNames flake.inputs;
      want = [ "nixpkgs" ];
    };
    packages_have_the_names_the_issue_fixes = {
      got = lib.mapAttrs (_: builtins.attrNames) outputs.packages;
      want = {
        aarch64-linux = [ "autoprov" "autoprov-agent" "default" "sd-image-rpi3a" ];
        x86_64-linux = [ "autoprov" "autoprov-agent" "autoprov-agent-aarch64" "default" "sd-image-rpi3a" ];
      };
    };
    default_package_is_the_operator_cli = {
      got = outputs.packages.x86_64-linux.default.crate;
      want = "autoprov";
    };
    aarch64_agent_is_cross_compiled_from_x86_64 = {
      got = outputs.packages.x86_64-linux.autoprov-agent-aarch64.system;
      want = "aarch64-linux-cross";
    };
    x86_64_image_cross_builds_the_example_fleet = {
      got = moduleNames outputs.packages.x86_64-linux.sd-image-rpi3a.modules;
      want = [
        "autoprov-agent.nix"
        "rpi3a.nix"
        { nixpkgs.hostPlatform = "aarch64-linux"; }
        { nixpkgs.buildPlatform = "x86_64-linux"; }
        "example-fleet.nix"
      ];
    };
    aarch64_image_builds_natively = {
      got = moduleNames outputs.packages.aarch64-linux.sd-image-rpi3a.modules;
      want = [ "autoprov-agent.nix" "rpi3a.nix" { nixpkgs.hostPlatform = "aarch64-linux"; } "example-fleet.nix" ];
    };
    mkSdImage_puts_the_fleets_modules_last = {
      got = lib.last (moduleNames (outputs.lib.mkSdImage { modules = [ ../../templates/fleet/fleet.nix ]; }).modules);
      want = "fleet.nix";
    };
    nixos_module_and_configuration_exist = {
      got = {
        modules = builtins.attrNames outputs.nixosModules;
        same = outputs.nixosModules.default == outputs.nixosModules.autoprov-agent;
        configurations = builtins.attrNames outputs.nixosConfigurations;
      };
      want = { modules = [ "autoprov-agent" "default" ]; same = true; configurations = [ "rpi3a" ]; };
    };
    checks_are_derivations_only = {
      got = lib.mapAttrs (_: isDrv) outputs.checks.x86_64-linux;
      want = { clippy = true; rustfmt = true; vm-fleet = true; };
    };
    dev_shell_formatter_and_template = {
      got = {
        shells = lib.mapAttrs (_: s: builtins.attrNames s) outputs.devShells;
        formatter = outputs.formatter.x86_64-linux.name;
        templates = builtins.attrNames outputs.templates;
        template = baseNameOf outputs.templates.fleet.path;
      };
      want = {
        shells = { aarch64-linux = [ "default" ]; x86_64-linux = [ "default" ]; };
        formatter = "nixpkgs-fmt";
        templates = [ "default" "fleet" ];
        template = "fleet";
      };
    };
  };
in
lib.mapAttrs (_: t: { ok = t.got == t.want; inherit (t) got want; }) tests
