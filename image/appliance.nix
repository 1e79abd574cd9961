# What makes the image an appliance on a 512 MB board with an SD card and no real-time clock,
# independent of the hardware (the VM tests use it too).
{ config, lib, ... }:

let
  cfg = config.autoprov.image;
in
{
  options.autoprov.image.sshAuthorizedKeys = lib.mkOption {
    type = lib.types.listOf lib.types.str;
    default = [ ];
    example = [ "ssh-ed25519 AAAA… operator@workstation" ];
    description = ''
      Public keys allowed to log in as root over SSH. Empty (the default): no SSH server and no
      inbound port at all. With keys: SSH on port 22, keys only.
    '';
  };

  config = {
    # 512 MB of RAM: compressed swap in RAM instead of swapping onto the SD card.
    zramSwap = {
      enable = true;
      algorithm = "zstd";
      memoryPercent = 50;
    };

    # No RTC: the clock starts wrong at every boot. Where an NTP client runs, time-sync.target
    # (which autoprov-agent.service is ordered after) waits for the first synchronisation.
    systemd = lib.mkIf config.services.timesyncd.enable {
      additionalUpstreamSystemUnits = [ "systemd-time-wait-sync.service" ];
      services.systemd-time-wait-sync.wantedBy = [ "sysinit.target" ];
    };

    # The journal on an SD card: bounded, and written in batches.
    services.journald.extraConfig = ''
      Storage=persistent
      SystemMaxUse=32M
      SystemMaxFileSize=4M
      RuntimeMaxUse=8M
      SyncIntervalSec=5m
      MaxRetentionSec=1month
    '';

    # No inbound port unless SSH keys are given.
    networking.firewall.enable = true;
    services.openssh = {
      enable = cfg.sshAuthorizedKeys != [ ];
      openFirewall = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };
    users.users.root.openssh.authorizedKeys.keys = cfg.sshAuthorizedKeys;
    users.mutableUsers = false;
    # Without SSH keys nobody logs in at all: the fleet is managed by reflashing and
    # `autoprov inject`, not by hand (nixos/modules/config/users-groups.nix asserts otherwise).
    users.allowNoPasswordLogin = true;

    networking.hostName = lib.mkDefault "autoprov";

    # Nothing in the closure that a sensor does not run: no documentation, no default tools, and
    # the build fails if a compiler or toolchain sneaks in (nixos/modules/system/activation/top-level.nix).
    documentation.enable = false;
    documentation.man.enable = false;
    documentation.info.enable = false;
    documentation.doc.enable = false;
    documentation.nixos.enable = false;
    environment.defaultPackages = [ ];
    programs.command-not-found.enable = false;
    fonts.fontconfig.enable = false;
    system.forbiddenDependenciesRegexes = [
      "-gcc-[0-9.]+$"
      "-binutils-[0-9.]+$"
      "-rustc-[0-9.]+$"
      "-cargo-[0-9.]+$"
    ];

    system.stateVersion = lib.mkDefault "26.05";
  };
}
