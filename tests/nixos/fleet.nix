# The fleet in two VMs: a Mosquitto broker that requires client certificates (TLS listener,
# use_identity_as_username, a per-device ACL, a CRL) and a device running the NixOS module with
# the simulated sensor, booted with a FAT disk labelled FIRMWARE that holds a bundle the
# `autoprov` package made at build time. The operator's steps (rotate, revoke) run on the test
# host against a copy of that build-time PKI, as they would on a workstation with the card out.
#
# Card writes use mtools: `autoprov inject` (issue 7) writes the same /autoprov folder and can
# take their place once it exists.
{ autoprov, autoprov-agent, agentModule }:
{ pkgs, lib, ... }:

let
  deviceId = "sensor-1";
  port = 8883;
  # The FAT partition's offset in the card image, as nixpkgs' sd-image lays it out (8 MiB gap).
  firmwareOffsetMiB = 8;

  fixtures = pkgs.runCommand "autoprov-vm-fixtures"
    {
      nativeBuildInputs = [ autoprov pkgs.dosfstools pkgs.mtools pkgs.util-linux ];
    } ''
    export AUTOPROV_PKI_DIR=$out/pki
    autoprov ca init --name "autoprov VM test fleet"
    autoprov issue-server broker --out $out/broker --dns broker
    autoprov issue ${deviceId} --out $out/${deviceId}
    autoprov issue monitor --out $out/monitor
    autoprov crl --out $out/crl.pem
    # Mosquitto checks the CRL of the leaf's issuer, the issuing CA: trust both tiers.
    cat $out/pki/root.crt $out/pki/issuing.crt > $out/broker-cafile.pem

    # The card: an MBR disk with one FAT partition labelled FIRMWARE, the bundle in /autoprov.
    truncate -s 64M card.img
    echo 'start=${toString firmwareOffsetMiB}M, type=b, bootable' | sfdisk --no-reread --no-tell-kernel card.img
    truncate -s 56M part.img
    mkfs.vfat -n FIRMWARE part.img
    export MTOOLS_SKIP_CHECK=1
    mmd -i part.img ::/autoprov
    mcopy -i part.img $out/${deviceId}/* ::/autoprov/
    dd conv=notrunc if=part.img of=card.img bs=1M seek=${toString firmwareOffsetMiB}
    install -Dm0444 card.img $out/card.img
  '';

  # mosquitto_{pub,sub} with a bundle's certificate against the broker.
  mqtt = tool: bundle: args: lib.concatStringsSep " " [
    "${pkgs.mosquitto}/bin/mosquitto_${tool}"
    "-h broker -p ${toString port} -V mqttv311"
    "--cafile ${bundle}/ca.crt --cert ${bundle}/device.crt --key ${bundle}/device.key"
    args
  ];
  credentials = "/var/lib/autoprov/credentials/current";
in
{
  name = "autoprov-fleet";

  nodes = {
    broker = { ... }: {
      networking.firewall.allowedTCPPorts = [ port ];
      # The CRL lives in the data directory so that a new one can replace it at run time.
      systemd.tmpfiles.rules = [
        "C /var/lib/mosquitto/crl.pem 0644 mosquitto mosquitto - ${fixtures}/crl.pem"
      ];
      # nixos/modules/services/networking/mosquitto.nix; ExecReload sends SIGHUP, on which
      # Mosquitto ≥ 2.0 reloads the listener's certificates and CRL.
      services.mosquitto = {
        enable = true;
        logType = [ "all" ];
        listeners = [{
          inherit port;
          # Authentication is the client certificate; its CN becomes the user name.
          omitPasswordAuth = true;
          settings = {
            cafile = "${fixtures}/broker-cafile.pem";
            certfile = "${fixtures}/broker/server.crt";
            keyfile = "${fixtures}/broker/server.key";
            crlfile = "/var/lib/mosquitto/crl.pem";
            require_certificate = true;
            use_identity_as_username = true;
          };
          # Each device writes under its own id only.
          acl = [ "pattern write dt/%u/#" ];
          users.monitor.acl = [ "read dt/#" ];
        }];
      };
    };

    device = { ... }: {
      imports = [ agentModule ../../image/appliance.nix ../../image/wifi.nix ];
      services.autoprov-agent = {
        enable = true;
        package = autoprov-agent;
        settings = {
          cloud.profile = "mqtt";
          mqtt = { host = "broker"; inherit port; };
          sensor = { kind = "simulated"; interval = "2s"; };
        };
      };
      environment.systemPackages = [ pkgs.mosquitto pkgs.openssl ];

      # The card, attached as a second disk; the test copies the image in before each boot.
      virtualisation.qemu.drives = [{
        name = "card";
        file = ''"$TMPDIR"/card.img'';
        driveExtraOpts = { format = "raw"; cache = "writeback"; werror = "report"; };
      }];
      # qemu-vm.nix replaces `fileSystems` with `virtualisation.fileSystems` in VMs
      # (mkVMOverride), dropping the module's FIRMWARE mount: the same definition, repeated.
      virtualisation.fileSystems."/boot/firmware" = {
        device = "/dev/disk/by-label/FIRMWARE";
        fsType = "vfat";
        options = [ "nofail" "noauto" "fmask=0177" "dmask=0077" ];
      };
    };
  };

  testScript = ''
    import json
    import os
    import shutil
    import subprocess
    import tempfile
    import tomllib
    from pathlib import Path

    autoprov = "${autoprov}/bin/autoprov"
    openssl = "${pkgs.openssl}/bin/openssl"
    fixtures = Path("${fixtures}")
    card = device.state_dir / "card.img"
    work = Path(tempfile.mkdtemp())
    pki = work / "pki"

    def host(*args):
        return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout

    def write_card(bundle):
        """Replaces /autoprov on the card image with `bundle`, as `autoprov inject` would."""
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        image = f"{card}@@${toString firmwareOffsetMiB}M"
        subprocess.run(["${pkgs.mtools}/bin/mdeltree", "-i", image, "::/autoprov"], env=env, check=False)
        subprocess.run(["${pkgs.mtools}/bin/mmd", "-i", image, "::/autoprov"], env=env, check=True)
        for f in sorted(Path(bundle).iterdir()):
            subprocess.run(["${pkgs.mtools}/bin/mcopy", "-i", image, str(f), "::/autoprov/"], env=env, check=True)

    def on_card(name):
        """Whether the card image holds /autoprov/<name> (read while the device is off)."""
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        image = f"{card}@@${toString firmwareOffsetMiB}M"
        return subprocess.run(["${pkgs.mtools}/bin/mtype", "-i", image, f"::/autoprov/{name}"],
                              env=env, capture_output=True).returncode == 0

    def serial(pem):
        return host(openssl, "x509", "-noout", "-serial", "-in", pem).strip().split("=")[1].lower().lstrip("0")

    def readings(count, timeout=60):
        out = broker.succeed("${mqtt "sub" "${fixtures}/monitor" "-i monitor-check -t dt/${deviceId}/telemetry"} "
                             f"-C {count} -W {timeout}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    shutil.copyfile(fixtures / "card.img", card)
    os.chmod(card, 0o644)
    shutil.copytree(fixtures / "pki", pki)
    subprocess.run(["chmod", "-R", "u+w", str(pki)], check=True)
    first_serial = tomllib.loads((fixtures / "${deviceId}" / "manifest.toml").read_text())["serial"]

    start_all()
    broker.wait_for_unit("mosquitto.service")
    broker.wait_for_open_port(${toString port})

    with subtest("the import ran and erased the key from the card"):
        device.wait_for_unit("autoprov-import.service")
        device.succeed("test -s ${credentials}/device.crt")
        device.fail("test -e /boot/firmware/autoprov/device.key")
        device.succeed("test -e /boot/firmware/autoprov/manifest.toml")

    with subtest("credentials belong to the service user with mode 0600"):
        key = device.succeed("stat -L -c '%U %G %a' ${credentials}/device.key").strip()
        assert key == "autoprov autoprov 600", f"device.key: {key}"
        device.fail("runuser -u nobody -- cat ${credentials}/device.key")

    with subtest("readings arrive at a subscriber on the broker"):
        device.wait_for_unit("autoprov-agent.service")
        got = readings(3)
        assert [r["device_id"] for r in got] == ["${deviceId}"] * 3, got
        seqs = [r["seq"] for r in got]
        assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
        last_seq_before_reboot = seqs[-1]

    with subtest("the device cannot publish under another device's topic"):
        broker.succeed("${mqtt "sub" "${fixtures}/monitor" "-i monitor-acl -v -t 'dt/#'"} > /tmp/acl.log 2>&1 &")
        broker.sleep(2)
        own = "--cafile ${credentials}/ca.crt --cert ${credentials}/device.crt --key ${credentials}/device.key"
        pub = f"mosquitto_pub -h broker -p ${toString port} -V mqttv311 -q 1 -i ${deviceId}-acl {own}"
        device.succeed(f"{pub} -t dt/sensor-2/telemetry -m forged-reading")
        device.succeed(f"{pub} -t dt/${deviceId}/acl-control -m control-reading")
        broker.wait_until_succeeds("grep -q control-reading /tmp/acl.log", timeout=30)
        broker.fail("grep -q forged-reading /tmp/acl.log")

    with subtest("after rotate and a new bundle on the card and a reboot, it reconnects with the new certificate"):
        host(autoprov, "--pki-dir", pki, "rotate", "${deviceId}", "--out", work / "rotated")
        new_serial = serial(work / "rotated" / "device.crt")
        device.shutdown()
        write_card(work / "rotated")
        assert on_card("device.key") and on_card("manifest.toml")
        device.start()
        device.wait_for_unit("autoprov-import.service")
        on_device = device.succeed("openssl x509 -noout -serial -in ${credentials}/device.crt").strip().split("=")[1].lower().lstrip("0")
        assert on_device == new_serial, f"device has serial {on_device}, the rotated bundle {new_serial}"
        device.shutdown()
        assert on_card("manifest.toml") and not on_card("device.key"), "the import left the key on the card"
        device.start()
        device.wait_for_unit("autoprov-agent.service")
        got = readings(2)
        assert got[0]["seq"] > last_seq_before_reboot, f"seq went back after the reboot: {got[0]['seq']} <= {last_seq_before_reboot}"

    with subtest("after revoke and a CRL reload, the old certificate is refused"):
        old = "${mqtt "pub" "${fixtures}/${deviceId}" "-i old-cert -t dt/${deviceId}/probe -m probe"}"
        broker.succeed(old)  # superseded, not yet revoked
        host(autoprov, "--pki-dir", pki, "revoke", "${deviceId}", "--serial", first_serial)
        broker.copy_from_host(str(pki / "crl.pem"), "/var/lib/mosquitto/crl.pem")
        broker.succeed("chown mosquitto:mosquitto /var/lib/mosquitto/crl.pem && systemctl reload mosquitto")
        broker.wait_until_fails(old, timeout=30)
        # The device, on its new certificate, goes on publishing.
        readings(1)

    with subtest("systemd-analyze security rates the agent at most 2.0"):
        out = device.succeed("systemd-analyze security autoprov-agent.service --no-pager | tail -1")
        exposure = float(out.split("autoprov-agent.service:")[1].split()[0])
        assert exposure <= 2.0, out

    with subtest("no port listens beyond loopback on the device"):
        # Columns: Netid State Recv-Q Send-Q Local:Port Peer:Port
        local = [line.split()[4] for line in device.succeed("ss -Htlnu").splitlines() if line.strip()]
        exposed = [a for a in local if not (a.startswith("127.") or a.startswith("[::1]"))]
        assert exposed == [], f"listening beyond loopback: {exposed}"
  '';
}
