# The example fleet behind nixosConfigurations.rpi3a and packages.*.sd-image-rpi3a: a
# self-hosted Mosquitto broker (the `mqtt` profile). A real fleet writes this file in its own
# flake (templates/fleet) and builds with autoprov.lib.mkSdImage.
{ ... }:

{
  services.autoprov-agent = {
    enable = true;
    settings = {
      cloud.profile = "mqtt";
      mqtt = {
        host = "mqtt.example.net";
        port = 8883;
      };
      sensor = {
        kind = "iio";
        interval = "30s";
      };
    };
  };
}
