# What every card of this fleet shares: where the readings go and how the sensor is read.
# What makes a card one device (its certificate, key, Wi-Fi) is written by `autoprov flash`,
# never here. Keys: docs/agent-interface.md in autoprov; options: modules/autoprov-agent.nix.
{ ... }:

{
  services.autoprov-agent = {
    enable = true;
    settings = {
      # A self-hosted broker; for AWS IoT Core use
      #   cloud.profile = "aws"; aws.endpoint = "PREFIX-ats.iot.REGION.amazonaws.com";
      # and for Azure IoT Hub through DPS
      #   cloud.profile = "azure"; azure.id_scope = "0ne…";
      cloud.profile = "mqtt";
      mqtt = {
        host = "mqtt.example.net";
        port = 8883;
      };
      sensor = {
        kind = "iio"; # the DHT11 on GPIO4, through the kernel driver the image enables
        interval = "30s";
      };
    };
  };

  # Optional: SSH for the operator, keys only (no inbound port at all when empty).
  # autoprov.image.sshAuthorizedKeys = [ "ssh-ed25519 AAAA… operator@workstation" ];
}
