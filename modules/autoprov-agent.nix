# services.autoprov-agent: the device agent on NixOS.
#
# The two systemd units ship with the agent package (agent/systemd/, installed under
# lib/systemd/system with @bindir@ substituted) and are the single source of truth for Type=notify,
# the watchdog, LoadCredential= and the hardening. This module installs them through
# `systemd.packages` and adds only what is NixOS's own: the rendered agent.toml, the service user,
# the FIRMWARE mount, the bundle path and `wantedBy`. Definitions under `systemd.services.<name>`
# become drop-ins over the packaged unit (nixos/lib/systemd-lib.nix, overrideStrategy
# "asDropinIfExists"). The contract with the agent: docs/agent-interface.md.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  cfg = config.services.autoprov-agent;

  # pkgs/pkgs-lib/formats.nix: `type` for freeform values, `generate` to render the file.
  toml = pkgs.formats.toml { };

  # A TOML table of the agent's configuration: the keys typed here are checked at evaluation,
  # any other key of the schema passes through as written.
  table = options: types.submodule { freeformType = toml.type; inherit options; };

  # Unset typed keys are null and left out of agent.toml (and so are tables left empty), so the
  # agent's own defaults apply (`autoprov-agent print-default-config` shows them); they are not
  # repeated here.
  optional = type: description: mkOption {
    type = types.nullOr type;
    default = null;
    inherit description;
  };

  duration = types.strMatching "[0-9]+(ms|s|m|h)" // {
    description = "duration such as \"500ms\", \"10s\", \"5m\", \"1h\"";
  };

  configFile = toml.generate "agent.toml" (
    lib.filterAttrs (_: v: v != { }) (lib.filterAttrsRecursive (_: v: v != null) cfg.settings)
  );

  # The FIRMWARE partition holds the bundle in its /autoprov folder.
  firmwareMountPoint = dirOf cfg.bundleSource;
in
{
  options.services.autoprov-agent = {
    enable = lib.mkEnableOption "the autoprov device agent (sensor readings to MQTT over mutual TLS)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { crate = "autoprov-agent"; };
      defaultText = lib.literalExpression ''pkgs.callPackage "''${autoprov}/nix/package.nix" { crate = "autoprov-agent"; }'';
      description = "The autoprov-agent package; its lib/systemd/system holds the two units.";
    };

    settings = mkOption {
      type = table {
        cloud = mkOption {
          type = table {
            profile = optional (types.enum [ "mqtt" "aws" "azure" ]) "Where the readings go.";
          };
          default = { };
          description = "The `[cloud]` table.";
        };
        sensor = mkOption {
          type = table {
            kind = optional (types.enum [ "iio" "gpio" "simulated" ])
              "The sensor driver: `iio` (kernel dht11 driver), `gpio` (bit-banged, needs /dev/gpiomem) or `simulated`.";
            gpio = optional (types.ints.between 0 27) "BCM pin of the DHT11 data line (`gpio` sensor).";
            interval = optional duration "Time between readings; a DHT11 needs at least 2s.";
          };
          default = { };
          description = "The `[sensor]` table.";
        };
        mqtt = mkOption {
          type = table {
            host = optional types.str "Broker host name (`mqtt` profile).";
            port = optional types.port "Broker TLS port (`mqtt` profile).";
          };
          default = { };
          description = "The `[mqtt]` table.";
        };
        aws = mkOption {
          type = table {
            endpoint = optional types.str "AWS IoT data endpoint, `PREFIX-ats.iot.REGION.amazonaws.com` (`aws` profile).";
            port = optional (types.enum [ 443 8883 ]) "8883, or 443 with ALPN `x-amzn-mqtt-ca` (`aws` profile).";
          };
          default = { };
          description = "The `[aws]` table.";
        };
        azure = mkOption {
          type = table {
            id_scope = optional types.str "The DPS ID scope, `0ne…` (`azure` profile).";
          };
          default = { };
          description = "The `[azure]` table.";
        };
      };
      default = { };
      example = lib.literalExpression ''
        {
          cloud.profile = "mqtt";
          mqtt = { host = "broker.example.net"; port = 8883; };
          sensor = { kind = "iio"; interval = "30s"; };
          spool.max_size = "32MiB";
        }
      '';
      description = ''
        The image's agent configuration, rendered to /etc/autoprov/agent.toml (schema:
        docs/agent-interface.md). Each card's device.toml is merged over it at run time.
      '';
    };

    bundleSource = mkOption {
      type = types.strMatching "/.+/[^/]+";
      default = "/boot/firmware/autoprov";
      description = ''
        Where `autoprov-import.service` finds the bundle. Its parent directory is where the
        FIRMWARE partition is mounted.
      '';
    };

    firmwareDevice = mkOption {
      type = types.nullOr types.str;
      default = "/dev/disk/by-label/FIRMWARE";
      description = ''
        The FAT partition that `autoprov flash|inject` writes the bundle to, mounted (noauto, for
        the import only) at the parent of `bundleSource`; null when something else mounts it.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    environment.etc."autoprov/agent.toml".source = configFile;
    environment.systemPackages = [ cfg.package ];

    # The import chowns the credentials to this user (`--owner autoprov` in the unit).
    users.users.autoprov = {
      isSystemUser = true;
      group = "autoprov";
      home = "/var/lib/autoprov";
      description = "autoprov device agent";
    };
    users.groups.autoprov = { };

    # nixos/modules/system/boot/systemd.nix: units from $package/lib/systemd/system.
    systemd.packages = [ cfg.package ];

    systemd.services.autoprov-import = {
      wantedBy = [ "multi-user.target" ];
      environment.AUTOPROV_BUNDLE_SOURCE = cfg.bundleSource;
      unitConfig.RequiresMountsFor = [ firmwareMountPoint ];
    };

    systemd.services.autoprov-agent = {
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ configFile ];
      # The gpio sensor bit-bangs through /dev/gpiomem: the one device node it may open.
      serviceConfig = lib.mkIf (cfg.settings.sensor.kind == "gpio") {
        PrivateDevices = false;
        DeviceAllow = [ "/dev/gpiomem rw" ];
      };
    };

    services.udev.extraRules = lib.mkIf (cfg.settings.sensor.kind == "gpio") ''
      KERNEL=="gpiomem", GROUP="autoprov", MODE="0660"
    '';

    # Equal to what nixpkgs' sd-image defines for /boot/firmware by default, so both merge; a
    # different firmwareDevice there is a loud conflict, not a silent override. The masks keep
    # the key on the FAT partition readable by root only until the import erases it.
    fileSystems.${firmwareMountPoint} = lib.mkIf (cfg.firmwareDevice != null) {
      device = cfg.firmwareDevice;
      fsType = "vfat";
      options = [ "nofail" "noauto" "fmask=0177" "dmask=0077" ];
    };
  };
}
