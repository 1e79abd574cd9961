//! The public roots the cloud profiles trust, compiled in from `agent/roots/*.pem`.
//!
//! A device must recognise its cloud's server certificate from the first boot, offline, without
//! a distribution trust store (the image has none worth relying on), and nothing else: the
//! profiles trust exactly these roots plus, optionally, one CA file the operator names
//! (`aws.extra_ca_file`, `azure.extra_ca_file`: a TLS-inspecting proxy, or a test stand-in).
//! Verification is never relaxed.
//!
//! The PEM files are the certificates as distributed in Mozilla's root store (Debian's
//! `ca-certificates`). The unit test below checks each against fingerprints its operator
//! publishes, so a wrong or swapped file cannot pass:
//!
//! - Amazon Root CA 1 and 3: the SHA-256 of the certificate as listed in Mozilla's CCADB, and the
//!   SHA-256 of the subject public key info as Amazon Trust Services lists it
//!   (<https://www.amazontrust.com/repository/>). Sources: AWS IoT developer guide
//!   `server-authentication` (ATS endpoints chain to Amazon Root CA 1, RSA, and 3, ECC).
//! - DigiCert Global Root G2, Baltimore CyberTrust Root, Microsoft RSA Root Certificate Authority
//!   2017: the SHA-1 thumbprints and serial numbers of learn.microsoft.com
//!   `azure/security/fundamentals/azure-ca-details`, and the SHA-256 thumbprints of Microsoft's
//!   certificate-chain pages (learn.microsoft.com `purview/encryption-office-365-certificate-chains`
//!   for DigiCert G2 and Baltimore; the Azure CA details page's SHA-256 for Microsoft RSA 2017).
//!   Source for trusting all three: learn.microsoft.com `azure/iot/iot-hub-tls-support`.
//!
//! Baltimore CyberTrust Root expired on 2025-05-12; it stays in the list as PROTOCOLS.md asks
//! (hubs not yet migrated), which costs nothing: WebPKI does not check a trust anchor's dates,
//! and no current Azure endpoint chains to it.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A compiled-in root certificate.
#[derive(Debug, Clone, Copy)]
pub struct TrustRoot {
    /// Its common name.
    pub name: &'static str,
    /// The PEM text.
    pub pem: &'static str,
}

impl TrustRoot {
    /// The certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        // The files are checked by the tests below; a file that does not parse cannot ship.
        CertificateDer::from_pem_slice(self.pem.as_bytes())
            .map(CertificateDer::into_owned)
            .unwrap_or_else(|_| CertificateDer::from(Vec::new()))
    }
}

/// Amazon Root CA 1 (RSA 2048).
pub const AMAZON_ROOT_CA_1: TrustRoot = TrustRoot {
    name: "Amazon Root CA 1",
    pem: include_str!("../../roots/Amazon_Root_CA_1.pem"),
};
/// Amazon Root CA 3 (ECC P-256).
pub const AMAZON_ROOT_CA_3: TrustRoot = TrustRoot {
    name: "Amazon Root CA 3",
    pem: include_str!("../../roots/Amazon_Root_CA_3.pem"),
};
/// DigiCert Global Root G2: Azure IoT Hub and DPS today.
pub const DIGICERT_GLOBAL_ROOT_G2: TrustRoot = TrustRoot {
    name: "DigiCert Global Root G2",
    pem: include_str!("../../roots/DigiCert_Global_Root_G2.pem"),
};
/// Baltimore CyberTrust Root: Azure's legacy root (expired 2025-05-12).
pub const BALTIMORE_CYBERTRUST_ROOT: TrustRoot = TrustRoot {
    name: "Baltimore CyberTrust Root",
    pem: include_str!("../../roots/Baltimore_CyberTrust_Root.pem"),
};
/// Microsoft RSA Root Certificate Authority 2017: Azure's own root.
pub const MICROSOFT_RSA_ROOT_2017: TrustRoot = TrustRoot {
    name: "Microsoft RSA Root Certificate Authority 2017",
    pem: include_str!("../../roots/Microsoft_RSA_Root_Certificate_Authority_2017.pem"),
};

/// What the `aws` profile trusts.
pub const AWS: [TrustRoot; 2] = [AMAZON_ROOT_CA_1, AMAZON_ROOT_CA_3];
/// What the `azure` profile trusts (DPS and IoT Hub alike).
pub const AZURE: [TrustRoot; 3] = [
    DIGICERT_GLOBAL_ROOT_G2,
    BALTIMORE_CYBERTRUST_ROOT,
    MICROSOFT_RSA_ROOT_2017,
];

/// The certificates of `roots`, DER.
pub fn ders(roots: &[TrustRoot]) -> Vec<CertificateDer<'static>> {
    roots.iter().map(TrustRoot::der).collect()
}

/// The names of `roots`, for messages.
pub fn names(roots: &[TrustRoot]) -> String {
    roots.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cert_sha256(r: &TrustRoot) -> String {
        hex(digest(&SHA256, &r.der()).as_ref())
    }

    /// SHA-256 of the DER certificate, as the CCADB / Microsoft pages list it.
    const PUBLISHED_SHA256: [(&str, &str); 5] = [
        (
            "Amazon Root CA 1",
            "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
        ),
        (
            "Amazon Root CA 3",
            "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
        ),
        (
            "DigiCert Global Root G2",
            "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f",
        ),
        (
            "Baltimore CyberTrust Root",
            "16af57a9f676b0ab126095aa5ebadef22ab31119d644ac95cd4b93dbf3f26aeb",
        ),
        (
            "Microsoft RSA Root Certificate Authority 2017",
            "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0",
        ),
    ];

    #[test]
    fn every_root_matches_its_published_sha256_fingerprint() {
        let all: Vec<TrustRoot> = AWS.iter().chain(AZURE.iter()).copied().collect();
        assert_eq!(all.len(), PUBLISHED_SHA256.len());
        for r in &all {
            let (_, want) = PUBLISHED_SHA256
                .iter()
                .find(|(n, _)| *n == r.name)
                .unwrap_or_else(|| panic!("no published fingerprint for {}", r.name));
            assert_eq!(&cert_sha256(r), want, "{}", r.name);
            // The file is the certificate it claims to be.
            let der = r.der();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let cn = cert.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), r.name);
        }
    }

    #[test]
    fn amazon_roots_match_the_public_key_hashes_amazon_trust_services_publishes() {
        for (r, want) in [
            (
                AMAZON_ROOT_CA_1,
                "fbe3018031f9586bcbf41727e417b7d1c45c2f47f93be372a17b96b50757d5a2",
            ),
            (
                AMAZON_ROOT_CA_3,
                "36abc32656acfc645c61b71613c4bf21c787f5cabbee48348d58597803d7abc9",
            ),
        ] {
            let der = r.der();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let spki = cert.public_key().raw;
            assert_eq!(hex(digest(&SHA256, spki).as_ref()), want, "{}", r.name);
        }
    }

    #[test]
    fn azure_roots_match_the_thumbprints_and_serials_microsoft_publishes() {
        for (r, sha1, serial) in [
            (
                DIGICERT_GLOBAL_ROOT_G2,
                "df3c24f9bfd666761b268073fe06d1cc8d4f82a4",
                "033af1e6a711a9a0bb2864b11d09fae5",
            ),
            (
                BALTIMORE_CYBERTRUST_ROOT,
                "d4de20d05e66fc53fe1a50882c78db2852cae474",
                "020000b9",
            ),
            (
                MICROSOFT_RSA_ROOT_2017,
                "73a5e64a3bff8316ff0edccc618a906e4eae4d74",
                "1ed397095fd8b4b347701eaabe7f45b3",
            ),
        ] {
            let der = r.der();
            assert_eq!(
                hex(digest(&SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref()),
                sha1,
                "{}",
                r.name
            );
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert_eq!(hex(cert.raw_serial()), serial, "{}", r.name);
        }
    }
}
