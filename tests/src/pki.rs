//! Certificates for tests, made by the project's own PKI (`autoprov`), in a temporary directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use autoprov::{DeviceId, InitOptions, IssueOptions, Pki};
use autoprov_bundle::Bundle;
use tempfile::TempDir;

/// A broker's TLS identity: chain, key and the root its clients must trust.
#[derive(Clone)]
pub struct ServerTls {
    /// PEM chain, leaf first.
    pub chain_pem: String,
    /// PKCS#8 PEM key.
    pub key_pem: String,
    /// The root, PEM (also what client certificates must chain to).
    pub ca_pem: String,
}

/// A fleet CA in a temporary directory.
pub struct TestPki {
    _dir: TempDir,
    pki: Pki,
}

impl TestPki {
    /// A new two-tier CA named `name`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions {
            name: name.into(),
            ..InitOptions::default()
        };
        Pki::init(dir.path(), &opts).expect("ca init");
        let pki = Pki::open(dir.path(), None).expect("open pki");
        Self { _dir: dir, pki }
    }

    /// Issues and activates a device bundle, with `settings` merged into its `device.toml`.
    pub fn device(&mut self, id: &str, settings: toml::Table) -> Bundle {
        let id = DeviceId::new(id).expect("valid device id");
        let opts = IssueOptions {
            settings,
            ..IssueOptions::default()
        };
        let issued = self.pki.issue_device(&id, &opts).expect("issue device");
        self.pki.activate(&issued, false).expect("activate");
        crate::leaks::record_key(issued.bundle.device_key());
        issued.bundle
    }

    /// Rotates a device (a newer bundle, new serial) and activates it.
    pub fn rotate(&mut self, id: &str) -> Bundle {
        let id = DeviceId::new(id).expect("valid device id");
        let issued = self
            .pki
            .rotate_device(&id, &IssueOptions::default())
            .expect("rotate device");
        self.pki.activate(&issued, false).expect("activate");
        crate::leaks::record_key(issued.bundle.device_key());
        issued.bundle
    }

    /// A device bundle whose certificate is valid from `not_before` to `not_after` (Unix
    /// seconds): the project's device profile and issuing CA, with a validity no `autoprov`
    /// command would choose — to show what a broker does with expired and not-yet-valid
    /// certificates. It is not recorded in the inventory.
    pub fn device_valid_between(&self, id: &str, not_before: i64, not_after: i64) -> Bundle {
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("a valid time");
        let validity = autoprov::profile::Validity {
            not_before: at(not_before),
            not_after: at(not_after),
        };
        let serial = autoprov::profile::random_serial().expect("serial");
        let serial_hex = autoprov::profile::serial_hex(&serial);
        let key = autoprov::KeyType::EcdsaP256.generate().expect("key");
        let ca = self.pki.ca();
        let cert = autoprov::profile::device(id, validity, serial)
            .signed_by(&*key, &ca.signer_issuer().expect("issuing CA"))
            .expect("sign");
        let key_pem = autoprov::keys::to_pem(&key);
        crate::leaks::record_key(key_pem.as_bytes());
        Bundle::new(autoprov_bundle::Contents {
            device_id: DeviceId::new(id).expect("valid device id"),
            serial: serial_hex,
            created_at: autoprov::profile::rfc3339(autoprov::profile::now()),
            device_crt: format!("{}{}", cert.pem(), ca.chain_pem()).into_bytes(),
            device_key: zeroize::Zeroizing::new(key_pem.as_bytes().to_vec()),
            ca_crt: ca.root().pem.clone().into_bytes(),
            device_toml: format!("[device]\nid = \"{id}\"\n").into_bytes(),
            wifi_conf: None,
        })
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&mut self) -> ServerTls {
        self.server_with_ips(&[])
    }

    /// A server certificate for `localhost`, 127.0.0.1 and `ips` (a broker in a network
    /// namespace is reached by its address).
    pub fn server_with_ips(&mut self, ips: &[IpAddr]) -> ServerTls {
        let mut all = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        all.extend_from_slice(ips);
        let s = self
            .pki
            .issue_server("broker", &["localhost".into()], &all, &Default::default())
            .expect("issue server");
        self.pki
            .activate_serial(&s.serial, false)
            .expect("activate server");
        ServerTls {
            chain_pem: s.chain_pem,
            key_pem: {
                crate::leaks::record_key(s.key_pem.as_bytes());
                s.key_pem.to_string()
            },
            ca_pem: s.ca_pem,
        }
    }

    /// Revokes every certificate of `id` and returns the new CRL, PEM.
    pub fn revoke(&mut self, id: &str) -> String {
        let id = DeviceId::new(id).expect("valid device id");
        self.pki
            .revoke(&id, None, "key-compromise")
            .expect("revoke");
        std::fs::read_to_string(self.pki.dir().join("crl.pem")).expect("crl.pem")
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        self.pki.dir()
    }
}

/// Writes a bundle into `dir` (as `autoprov issue --out` would).
pub fn write_bundle(bundle: &Bundle, dir: &Path) {
    autoprov_bundle::write_dir(bundle, dir, true).expect("write bundle");
}
