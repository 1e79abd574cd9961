//! The certificate revocation list, signed by the CA that signs devices.
//!
//! `crl.pem` in the PKI directory is regenerated from the inventory whenever something is revoked
//! (and by `autoprov crl`), with an increasing CRL number, so Mosquitto (`crlfile`) and OpenSSL
//! (`-crl_check`) see every revoked device. A CRL has a next-update date after which verifiers
//! refuse it: regenerate it before then (`autoprov crl`, e.g. from a timer).

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams};
use time::Duration;

use crate::ca::{Ca, CaError};
use crate::inventory::RevokedRow;
use crate::profile;

/// Default days until the CRL's next update.
pub const NEXT_UPDATE_DAYS: u32 = 30;

/// Why the CRL could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// An unknown revocation reason.
    #[error("unknown revocation reason {0:?}; use one of: {REASONS}")]
    UnknownReason(String),
    /// A stored serial or date that does not parse (a damaged inventory).
    #[error("inventory row for serial {0:?} is damaged ({1}); restore inventory.db from backup")]
    BadRow(String, String),
    /// Next update out of range.
    #[error("--next-update-days {0} must be between 1 and 3650")]
    BadNextUpdate(u32),
    /// The CA could not sign.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// rcgen refused to sign.
    #[error("signing the CRL failed: {0}")]
    Sign(String),
}

/// The reasons `revoke --reason` accepts, as listed in errors and help.
pub const REASONS: &str = "unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation, privilege-withdrawn";

/// Maps a reason name to its RFC 5280 code.
pub fn reason(name: &str) -> Result<RevocationReason, CrlError> {
    Ok(match name {
        "unspecified" => RevocationReason::Unspecified,
        "key-compromise" => RevocationReason::KeyCompromise,
        "affiliation-changed" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessation-of-operation" => RevocationReason::CessationOfOperation,
        "privilege-withdrawn" => RevocationReason::PrivilegeWithdrawn,
        other => return Err(CrlError::UnknownReason(other.to_owned())),
    })
}

/// A signed CRL.
#[derive(Clone, Debug)]
pub struct Crl {
    /// PEM text (`X509 CRL`).
    pub pem: String,
    /// How many certificates it lists.
    pub entries: usize,
    /// Its CRL number.
    pub number: u64,
    /// When verifiers stop accepting it, RFC 3339.
    pub next_update: String,
}

/// Signs a CRL listing `rows`.
pub fn build(
    ca: &Ca,
    rows: &[RevokedRow],
    number: u64,
    next_update_days: u32,
) -> Result<Crl, CrlError> {
    if next_update_days == 0 || next_update_days > 3650 {
        return Err(CrlError::BadNextUpdate(next_update_days));
    }
    let now = profile::now();
    let revoked_certs = rows
        .iter()
        .map(|r| {
            let bad = |e: &dyn std::fmt::Display| CrlError::BadRow(r.serial.clone(), e.to_string());
            let serial = hex::decode(&r.serial).map_err(|e| bad(&e))?;
            let when = profile::parse_rfc3339(&r.revoked_at).ok_or_else(|| bad(&"revoked_at"))?;
            Ok(RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&serial),
                revocation_time: when,
                // An unknown stored reason still revokes; it just carries no reason code.
                reason_code: reason(&r.reason).ok(),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, CrlError>>()?;
    let next_update = now + Duration::days(i64::from(next_update_days));
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update,
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::PreSpecified(signer_key_id(ca)?),
    };
    let issuer = ca.signer_issuer()?;
    let crl = params
        .signed_by(&issuer)
        .map_err(|e| CrlError::Sign(e.to_string()))?;
    Ok(Crl {
        pem: crl.pem().map_err(|e| CrlError::Sign(e.to_string()))?,
        entries: rows.len(),
        number,
        next_update: profile::rfc3339(next_update),
    })
}

/// The signer's subject key identifier, so the CRL's AKI matches the certificate exactly.
fn signer_key_id(ca: &Ca) -> Result<Vec<u8>, CrlError> {
    use x509_parser::prelude::*;
    let signer = ca.signer();
    let (_, cert) = parse_x509_certificate(&signer.der)
        .map_err(|e| CaError::BadCert(signer.path.clone(), e.to_string()))?;
    Ok(cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_reason_maps() {
        for name in REASONS.split(", ") {
            reason(name).unwrap();
        }
        let err = reason("lost").unwrap_err().to_string();
        assert!(err.contains("key-compromise"), "{err}");
    }
}
