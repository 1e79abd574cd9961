# Wi-Fi from the card: the 3A+ has no Ethernet, and the networks differ per site, so they come
# with the bundle (`autoprov flash --wifi-ssid … --wifi-psk-file …` writes wifi.conf, in
# wpa_supplicant syntax), not with the image. After the import, autoprov-wifi.service installs
# the imported wifi.conf where wpa_supplicant reads it (networking.wireless.extraConfigFiles,
# nixos/modules/services/networking/wpa_supplicant.nix), readable by wpa_supplicant only.
{ config, lib, pkgs, ... }:

let
  imported = "/var/lib/autoprov/credentials/current/wifi.conf";
  installed = "/etc/wpa_supplicant/autoprov.conf";
in
{
  networking.wireless = {
    enable = lib.mkDefault true;
    extraConfigFiles = [ installed ];
  };

  # wpa_supplicant refuses to start on a missing -I file, so an empty one stands in for a card
  # without Wi-Fi settings.
  systemd.services.autoprov-wifi = lib.mkIf config.networking.wireless.enable {
    description = "autoprov: Wi-Fi networks from the imported bundle";
    after = [ "autoprov-import.service" ];
    wants = [ "autoprov-import.service" ];
    before = [ "wpa_supplicant.service" ];
    requiredBy = [ "wpa_supplicant.service" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      UMask = "0077";
    };
    path = [ pkgs.coreutils ];
    script = ''
      if [ -f ${imported} ]; then
        install -D -m 0600 -o wpa_supplicant -g wpa_supplicant ${imported} ${installed}
      else
        install -D -m 0600 -o wpa_supplicant -g wpa_supplicant /dev/null ${installed}
      fi
    '';
  };
}
