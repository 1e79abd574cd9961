# The DHT11 on GPIO4 as a kernel iio device (/sys/bus/iio/devices/iio:device0), read by the
# agent's default `iio` sensor. The image boots the mainline kernel's device trees through U-Boot,
# so the overlay is merged at build time (hardware.deviceTree, nixos/modules/hardware/device-tree.nix)
# and must match the mainline root `compatible`: the Raspberry Pi foundation's dht11 overlay
# names "brcm,bcm2835" and is silently skipped on these trees.
{ ... }:

{
  hardware.deviceTree = {
    enable = true;
    # The Pi 3 family; the 3A+ is bcm2837-rpi-3-a-plus.dtb.
    filter = "bcm2837-rpi-3-*.dtb";
    overlays = [{
      name = "autoprov-dht11-gpio4";
      dtsText = ''
        /dts-v1/;
        /plugin/;

        / {
          compatible = "brcm,bcm2837";

          fragment@0 {
            target-path = "/";
            __overlay__ {
              dht11 {
                /* drivers/iio/humidity/dht11.c binds "dht11" and reads the "gpios" line. */
                compatible = "dht11";
                gpios = <&gpio 4 0>;
                status = "okay";
              };
            };
          };
        };
      '';
    }];
  };
}
