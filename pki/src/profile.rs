//! Certificate profiles: what each kind of certificate autoprov signs contains.
//!
//! | profile      | basic constraints    | key usage                      | EKU        | validity |
//! |--------------|----------------------|--------------------------------|------------|----------|
//! | root         | CA, pathLen 1 (0 single-tier) | keyCertSign, cRLSign  | —          | 20 years |
//! | issuing      | CA, pathLen 0        | keyCertSign, cRLSign, digitalSignature | — | 10 years |
//! | device       | not a CA             | digitalSignature               | clientAuth | 2 years  |
//! | server       | not a CA             | digitalSignature, keyEncipherment | serverAuth | 2 years |
//! | verification | not a CA             | digitalSignature               | —          | 30 days  |
//!
//! Every certificate is X.509 v3 with a subject key identifier, and every certificate that is not
//! self-signed carries the authority key identifier of its issuer, so chains build unambiguously
//! (the original script's v1 certificates were refused by rustls). Serials are 16 random bytes
//! with the top bit clear (positive) and the next bit set (no leading zero byte to strip), so each
//! is exactly 16 bytes of DER with 126 random bits. Device and server certificates are backdated
//! by an hour so that a board whose clock is slightly behind still accepts them, and they never
//! outlive their issuer.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

/// Default validity of the root CA, in days (20 years).
pub const ROOT_DAYS: u32 = 20 * 365 + 5;
/// Default validity of the issuing CA, in days (10 years).
pub const ISSUING_DAYS: u32 = 10 * 365 + 2;
/// Default validity of device and server certificates, in days (2 years).
pub const LEAF_DAYS: u32 = 2 * 365 + 1;
/// Validity of a proof-of-possession certificate, in days: it is used once, right away.
pub const VERIFICATION_DAYS: u32 = 30;
/// How far certificates are backdated, for devices whose clock lags a little.
const BACKDATE: Duration = Duration::hours(1);

/// Why a profile could not be filled in.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The issuer's validity has ended: nothing it signs would verify.
    #[error(
        "the issuing CA expired on {0}: certificates it signs would not verify; create a new CA (autoprov ca init in a new --pki-dir)"
    )]
    IssuerExpired(String),
    /// A validity of zero days or one that does not fit a date.
    #[error("--days {0} is not a usable validity: give a number of days from 1 to 36500")]
    BadDays(u32),
    /// A server name or DNS name rcgen cannot encode.
    #[error("{0:?} is not a valid DNS name: {1}")]
    BadDnsName(String, String),
    /// The system random source failed.
    #[error("the system random source failed while drawing a serial number")]
    Random,
}

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start.
    pub not_before: OffsetDateTime,
    /// End.
    pub not_after: OffsetDateTime,
}

/// The current time, whole seconds (X.509 times have no fraction).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn checked_days(days: u32) -> Result<Duration, ProfileError> {
    if days == 0 || days > 36_500 {
        return Err(ProfileError::BadDays(days));
    }
    Ok(Duration::days(i64::from(days)))
}

impl Validity {
    /// `days` from now, for a CA (not backdated: nothing verifies against it yet).
    pub fn for_ca(now: OffsetDateTime, days: u32) -> Result<Self, ProfileError> {
        Ok(Validity {
            not_before: now,
            not_after: now + checked_days(days)?,
        })
    }

    /// `days` from now for a certificate signed by an issuer valid in `issuer`: backdated an hour
    /// but not before the issuer, and cut at the issuer's end.
    pub fn for_leaf(
        now: OffsetDateTime,
        days: u32,
        issuer: &Validity,
    ) -> Result<Self, ProfileError> {
        if issuer.not_after <= now {
            return Err(ProfileError::IssuerExpired(rfc3339(issuer.not_after)));
        }
        Ok(Validity {
            not_before: (now - BACKDATE).max(issuer.not_before),
            not_after: (now + checked_days(days)?).min(issuer.not_after),
        })
    }
}

/// RFC 3339 UTC with whole seconds, the format the inventory and the output use.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses what [`rfc3339`] writes.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// A fresh random serial number (see the module doc for its shape).
pub fn random_serial() -> Result<SerialNumber, ProfileError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ProfileError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A serial number as the inventory and the bundle manifest write it: lower-case hex.
pub fn serial_hex(serial: &SerialNumber) -> String {
    hex::encode(serial.to_bytes())
}

fn base(
    cn: &str,
    org: Option<&str>,
    validity: Validity,
    serial: SerialNumber,
) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(serial);
    params
}

/// The root CA: self-signed; pathLen 1 above an issuing CA, 0 when it signs devices itself.
pub fn root(
    name: &str,
    validity: Validity,
    single_tier: bool,
) -> Result<CertificateParams, ProfileError> {
    let mut p = base(
        &format!("{name} Root CA"),
        Some(name),
        validity,
        random_serial()?,
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(if single_tier {
        0
    } else {
        1
    }));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// The issuing CA, signed by the root: pathLen 0, it signs only end-entity certificates.
pub fn issuing(name: &str, validity: Validity) -> Result<CertificateParams, ProfileError> {
    let mut p = base(
        &format!("{name} Issuing CA"),
        Some(name),
        validity,
        random_serial()?,
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn end_entity(cn: &str, validity: Validity, serial: SerialNumber) -> CertificateParams {
    let mut p = base(cn, None, validity, serial);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    p
}

/// A device certificate: CN = device id, clientAuth.
pub fn device(id: &str, validity: Validity, serial: SerialNumber) -> CertificateParams {
    let mut p = end_entity(id, validity, serial);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

/// A TLS server certificate for a self-hosted broker: serverAuth, the names as SANs.
///
/// keyEncipherment is included for RSA keys under TLS 1.2 RSA key exchange, which some broker
/// builds still negotiate.
pub fn server(
    name: &str,
    dns: &[String],
    ips: &[IpAddr],
    validity: Validity,
    serial: SerialNumber,
) -> Result<CertificateParams, ProfileError> {
    let mut p = end_entity(name, validity, serial);
    p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    for d in dns {
        let name = d
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| ProfileError::BadDnsName(d.clone(), e.to_string()))?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    p.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(p)
}

/// A proof-of-possession certificate: CN = the registration or verification code.
pub fn verification(code: &str, validity: Validity) -> Result<CertificateParams, ProfileError> {
    Ok(end_entity(code, validity, random_serial()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyType;
    use rcgen::Issuer;
    use x509_parser::prelude::{ParsedExtension, X509Version, parse_x509_certificate};

    fn t(s: &str) -> OffsetDateTime {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn serials_are_positive_sixteen_bytes_and_distinct() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0, "{a:?}");
        assert_ne!(a, b);
    }

    #[test]
    fn leaf_validity_never_outlives_the_issuer() {
        let issuer = Validity {
            not_before: t("2026-01-01T00:00:00Z"),
            not_after: t("2027-01-01T00:00:00Z"),
        };
        let v = Validity::for_leaf(t("2026-06-01T12:00:00Z"), 730, &issuer).unwrap();
        assert_eq!(v.not_after, issuer.not_after);
        assert_eq!(v.not_before, t("2026-06-01T11:00:00Z"));
        let early = Validity::for_leaf(t("2026-01-01T00:10:00Z"), 1, &issuer).unwrap();
        assert_eq!(early.not_before, issuer.not_before);
    }

    #[test]
    fn expired_issuer_is_refused_with_its_date() {
        let issuer = Validity {
            not_before: t("2020-01-01T00:00:00Z"),
            not_after: t("2021-01-01T00:00:00Z"),
        };
        let err = Validity::for_leaf(t("2026-01-01T00:00:00Z"), 730, &issuer).unwrap_err();
        assert!(err.to_string().contains("2021-01-01T00:00:00Z"), "{err}");
        assert!(matches!(
            Validity::for_ca(t("2026-01-01T00:00:00Z"), 0),
            Err(ProfileError::BadDays(0))
        ));
    }

    #[test]
    fn device_profile_has_the_promised_extensions() {
        let now = now();
        let ca_key = KeyType::EcdsaP256.generate().unwrap();
        let ca_params = issuing("Test", Validity::for_ca(now, 10).unwrap()).unwrap();
        let ca_validity = Validity {
            not_before: ca_params.not_before,
            not_after: ca_params.not_after,
        };
        let issuer = Issuer::new(ca_params, &*ca_key);
        let key = KeyType::EcdsaP256.generate().unwrap();
        let validity = Validity::for_leaf(now, 730, &ca_validity).unwrap();
        let der = device("sensor-007", validity, random_serial().unwrap())
            .signed_by(&*key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.version(), X509Version::V3);
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "sensor-007");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        assert!(!cert.is_ca());
        let ski = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        assert!(ski.is_some(), "no SKI");
        let aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0)
                }
                _ => None,
            });
        assert!(aki.is_some(), "no AKI");
        assert_eq!(
            cert.validity().not_after.to_datetime(),
            ca_validity.not_after
        );
    }

    #[test]
    fn issuing_ca_is_limited_to_end_entities() {
        let p = issuing("Test", Validity::for_ca(now(), 10).unwrap()).unwrap();
        assert_eq!(p.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
        assert!(p.key_usages.contains(&KeyUsagePurpose::CrlSign));
        let r = root("Test", Validity::for_ca(now(), 10).unwrap(), true).unwrap();
        assert_eq!(r.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
    }

    #[test]
    fn rfc3339_round_trips() {
        let s = "2026-12-03T12:00:05Z";
        assert_eq!(rfc3339(parse_rfc3339(s).unwrap()), s);
    }
}
