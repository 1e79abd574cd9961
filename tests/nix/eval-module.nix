# Evaluates modules/autoprov-agent.nix with lib.evalModules from nixpkgs' lib alone (no nixpkgs,
# no store writes), against small stubs of the NixOS options the module sets. Returns one
# { ok; got; want; } per test, named for the behaviour it proves; tests/nix/eval-module.sh runs them.
#
# The stubs declare only what the module touches, typed like NixOS where the type decides the
# outcome: `fileSystems.<name>.device` merges equal definitions and rejects different ones
# (nixos/modules/tasks/filesystems.nix), which is what keeps the module's FIRMWARE mount
# compatible with nixpkgs' sd-image.
{ lib }:

let
  inherit (lib) mkOption types;

  # pkgs as far as the module uses it: formats.toml (type as in pkgs/pkgs-lib/formats.nix; the
  # file is not rendered here, `generate` hands back what it was given) and callPackage (only
  # for the package's default, which these tests replace).
  pkgs = {
    formats.toml = {}: {
      type =
        let
          value = types.oneOf [ types.bool types.int types.float types.str types.path (types.attrsOf value) (types.listOf value) ]
            // { description = "TOML value"; };
        in
        value;
      generate = name: value: { inherit name value; };
    };
    callPackage = _: _: throw "the package default is not used in these tests";
  };

  fakePackage = {
    type = "derivation";
    name = "autoprov-agent-0.1.0";
    outPath = "/nix/store/00000000000000000000000000000000-autoprov-agent-0.1.0";
  };

  anything = mkOption { type = types.anything; default = { }; };
  stubs = {
    options = {
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule { options.source = mkOption { type = types.anything; }; });
        default = { };
      };
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      users.users = mkOption { type = types.attrsOf (types.attrsOf types.anything); default = { }; };
      users.groups = anything;
      systemd.packages = mkOption { type = types.listOf types.package; default = [ ]; };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
            restartTriggers = mkOption { type = types.listOf types.anything; default = [ ]; };
            environment = mkOption { type = types.attrsOf types.str; default = { }; };
            unitConfig = mkOption { type = types.attrsOf types.anything; default = { }; };
            serviceConfig = mkOption { type = types.attrsOf types.anything; default = { }; };
          };
        });
        default = { };
      };
      services.udev.extraRules = mkOption { type = types.lines; default = ""; };
      fileSystems = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            device = mkOption { type = types.str; };
            fsType = mkOption { type = types.str; };
            options = mkOption { type = types.listOf types.str; default = [ ]; };
          };
        });
        default = { };
      };
    };
  };

  # What nixpkgs' sd-image.nix defines for the FIRMWARE partition.
  sdImageFirmware = label: {
    fileSystems."/boot/firmware" = {
      device = "/dev/disk/by-label/${label}";
      fsType = "vfat";
      options = [ "nofail" "noauto" ];
    };
  };

  eval = modules: (lib.evalModules {
    modules = [
      ../../modules/autoprov-agent.nix
      stubs
      { _module.args = { inherit pkgs; }; }
      { services.autoprov-agent = { enable = true; package = fakePackage; }; }
    ] ++ modules;
  }).config;

  # Forces the whole value, so that a type error anywhere in it surfaces here.
  evaluates = value: (builtins.tryEval (builtins.deepSeq value value)).success;
  rendered = config: config.environment.etc."autoprov/agent.toml".source.value;

  fleet = eval [{
    services.autoprov-agent.settings = {
      cloud.profile = "mqtt";
      mqtt = { host = "broker.example.net"; port = 8883; topic = "dt/{device_id}/telemetry"; };
      sensor = { kind = "iio"; interval = "30s"; iio_device = "/sys/bus/iio/devices/iio:device0"; };
      spool.max_size = "32MiB";
    };
  }];
  defaults = eval [ ];
  gpio = eval [{ services.autoprov-agent.settings.sensor = { kind = "gpio"; gpio = 17; }; }];
  noMount = eval [{ services.autoprov-agent.firmwareDevice = null; }];
  elsewhere = eval [{ services.autoprov-agent.bundleSource = "/media/card/autoprov"; }];

  rejects = settings: !(evaluates (rendered (eval [{ services.autoprov-agent.settings = settings; }])));

  tests = {
    settings_render_typed_and_freeform_keys_without_nulls = {
      got = rendered fleet;
      want = {
        cloud.profile = "mqtt";
        mqtt = { host = "broker.example.net"; port = 8883; topic = "dt/{device_id}/telemetry"; };
        sensor = { kind = "iio"; interval = "30s"; iio_device = "/sys/bus/iio/devices/iio:device0"; };
        spool.max_size = "32MiB";
      };
    };
    unset_settings_leave_the_agent_defaults = {
      got = rendered defaults;
      want = { };
    };
    unknown_sensor_kind_is_rejected = {
      got = { bad = rejects { sensor.kind = "dht22"; }; good = rejects { sensor.kind = "simulated"; }; };
      want = { bad = true; good = false; };
    };
    malformed_interval_is_rejected = {
      got = { bad = rejects { sensor.interval = "10 seconds"; }; good = rejects { sensor.interval = "500ms"; }; };
      want = { bad = true; good = false; };
    };
    gpio_pin_beyond_the_header_is_rejected = {
      got = { bad = rejects { sensor.gpio = 40; }; good = rejects { sensor.gpio = 27; }; };
      want = { bad = true; good = false; };
    };
    unknown_profile_is_rejected = {
      got = { bad = rejects { cloud.profile = "gcp"; }; good = rejects { cloud.profile = "azure"; }; };
      want = { bad = true; good = false; };
    };
    aws_port_other_than_443_or_8883_is_rejected = {
      got = { bad = rejects { aws.port = 1883; }; good = rejects { aws.port = 443; }; };
      want = { bad = true; good = false; };
    };

    packaged_units_are_installed_and_wanted = {
      got = {
        packages = map (p: p.name) fleet.systemd.packages;
        import = fleet.systemd.services.autoprov-import.wantedBy;
        agent = fleet.systemd.services.autoprov-agent.wantedBy;
      };
      want = { packages = [ "autoprov-agent-0.1.0" ]; import = [ "multi-user.target" ]; agent = [ "multi-user.target" ]; };
    };
    config_change_restarts_the_agent = {
      got = map (t: t.name) fleet.systemd.services.autoprov-agent.restartTriggers;
      want = [ "agent.toml" ];
    };
    service_user_and_group_exist = {
      got = { inherit (fleet.users.users.autoprov) isSystemUser group; group_declared = fleet.users.groups ? autoprov; };
      want = { isSystemUser = true; group = "autoprov"; group_declared = true; };
    };
    import_reads_the_default_bundle_source = {
      got = {
        env = fleet.systemd.services.autoprov-import.environment;
        mounts = fleet.systemd.services.autoprov-import.unitConfig.RequiresMountsFor;
      };
      want = { env.AUTOPROV_BUNDLE_SOURCE = "/boot/firmware/autoprov"; mounts = [ "/boot/firmware" ]; };
    };
    firmware_partition_is_mounted_noauto_root_only = {
      got = fleet.fileSystems."/boot/firmware";
      want = {
        device = "/dev/disk/by-label/FIRMWARE";
        fsType = "vfat";
        options = [ "nofail" "noauto" "fmask=0177" "dmask=0077" ];
      };
    };
    firmware_mount_merges_with_sd_image = {
      got = (eval [ (sdImageFirmware "FIRMWARE") ]).fileSystems."/boot/firmware".device;
      want = "/dev/disk/by-label/FIRMWARE";
    };
    firmware_device_conflicting_with_sd_image_is_an_error = {
      got = evaluates (eval [
        (sdImageFirmware "FIRMWARE")
        { services.autoprov-agent.firmwareDevice = "/dev/mmcblk0p1"; }
      ]).fileSystems."/boot/firmware".device;
      want = false;
    };
    null_firmware_device_mounts_nothing = { got = noMount.fileSystems; want = { }; };
    bundle_source_elsewhere_moves_mount_and_import = {
      got = {
        mount = builtins.attrNames elsewhere.fileSystems;
        env = elsewhere.systemd.services.autoprov-import.environment.AUTOPROV_BUNDLE_SOURCE;
      };
      want = { mount = [ "/media/card" ]; env = "/media/card/autoprov"; };
    };
    relative_bundle_source_is_rejected = {
      got = evaluates (eval [{ services.autoprov-agent.bundleSource = "autoprov"; }]).systemd.services.autoprov-import.environment;
      want = false;
    };
    iio_sensor_keeps_the_unit_device_free = {
      got = fleet.systemd.services.autoprov-agent.serviceConfig;
      want = { };
    };
    gpio_sensor_may_open_gpiomem_only = {
      got = { inherit (gpio.systemd.services.autoprov-agent) serviceConfig; rules = gpio.services.udev.extraRules; };
      want = {
        serviceConfig = { PrivateDevices = false; DeviceAllow = [ "/dev/gpiomem rw" ]; };
        rules = "KERNEL==\"gpiomem\", GROUP=\"autoprov\", MODE=\"0660\"\n";
      };
    };
    disabled_module_changes_nothing = {
      got =
        let c = (lib.evalModules { modules = [ ../../modules/autoprov-agent.nix stubs { _module.args = { inherit pkgs; }; } ]; }).config;
        in { inherit (c) fileSystems; services = c.systemd.services; etc = c.environment.etc; };
      want = { fileSystems = { }; services = { }; etc = { }; };
    };
  };

in
# Each test is evaluated on its own by the script, so that an error in one (a missing attribute is
  # not catchable inside Nix) fails that test and not the others.
lib.mapAttrs (_: t: { ok = t.got == t.want; inherit (t) got want; }) tests
