# The Raspberry Pi 3A+ appliance image: nixpkgs' aarch64 SD image (FIRMWARE + ext4 root, U-Boot,
# .img.zst) for the 3A+, with the DHT11 overlay, Wi-Fi from the card's bundle and the appliance
# settings. What makes a card one device is not here: `autoprov flash` writes it onto FIRMWARE.
{ lib, pkgs, modulesPath, ... }:

{
  imports = [
    # nixos/modules/installer/sd-card/sd-image-aarch64.nix: Pi firmware, config.txt, U-Boot
    # (rpi3 kernel=u-boot-rpi3.bin), extlinux; it imports sd-image.nix (the image, the
    # /boot/firmware mount, root resize on first boot).
    "${modulesPath}/installer/sd-card/sd-image-aarch64.nix"
    ./appliance.nix
    ./dht11.nix
    ./wifi.nix
  ];

  # sd-image-aarch64 imports profiles/base.nix, the installer's rescue tools and file systems
  # (ZFS among them): nothing an appliance needs.
  disabledModules = [ "profiles/base.nix" ];

  # Only the Wi-Fi firmware of the 3A+ (BCM43455, redistributable), not all of linux-firmware.
  hardware.enableRedistributableFirmware = lib.mkForce false;
  hardware.firmware = [ pkgs.raspberrypiWirelessFirmware ];

  # sd-image-aarch64 defaults to the most verbose console (7); warnings and worse suffice.
  boot.consoleLogLevel = 3;

  sdImage = {
    # A bundle is a few KiB; FIRMWARE keeps nixpkgs' size and label, which `autoprov flash`
    # looks for.
    firmwarePartitionName = "FIRMWARE";
    compressImage = true;
  };
  image.baseName = lib.mkDefault "autoprov-rpi3a";
}
