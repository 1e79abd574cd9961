//! Private keys: the key types autoprov makes, generating them, and storing CA keys on disk.
//!
//! Every key is PKCS#8. ring signs with all three types but cannot generate RSA keys, so RSA-2048
//! keys come from the `rsa` crate and are handed to rcgen as PKCS#8 DER. CA keys may be stored
//! encrypted (PKCS#8 PBES2, scrypt + AES-256-CBC, the parameters OpenSSL 3 also reads); they are
//! decrypted only in memory, into buffers that are zeroized on drop.

use std::fmt;
use std::str::FromStr;

use pkcs8::der::pem::LineEnding;
use pkcs8::pkcs5::pbes2;
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef, SecretDocument};
use rcgen::KeyPair;
use zeroize::Zeroizing;

/// PEM label of an unencrypted PKCS#8 key.
const PLAIN_LABEL: &str = "PRIVATE KEY";
/// PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// Why a key could not be made, read or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key type name is not one autoprov knows.
    #[error("unknown key type {0:?}: use ecdsa-p256, ecdsa-p384 or rsa-2048")]
    UnknownType(String),
    /// Key generation failed (the system random source or the crypto library refused).
    #[error("could not generate a {0} key: {1}")]
    Generate(KeyType, String),
    /// The file is not a PKCS#8 PEM key this build can use.
    #[error("not a PKCS#8 PEM private key autoprov can use ({0})")]
    Unreadable(String),
    /// The key is encrypted and no passphrase was given.
    #[error(
        "the key is encrypted: set AUTOPROV_CA_PASSPHRASE or run from a terminal to be asked for the passphrase"
    )]
    PassphraseRequired,
    /// Decryption failed: almost always a wrong passphrase.
    #[error("wrong passphrase (the key could not be decrypted)")]
    WrongPassphrase,
    /// Encrypting a key failed.
    #[error("could not encrypt the key: {0}")]
    Encrypt(String),
}

/// A key algorithm autoprov can generate and sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256: small, fast, accepted by AWS, Azure and Mosquitto.
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures, for systems that still want RSA.
    Rsa2048,
}

impl KeyType {
    /// Every key type, in the order the help text lists them.
    pub const ALL: [KeyType; 3] = [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048];

    /// The name used on the command line and in the inventory.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
        }
    }

    /// The key type of an existing key pair, if it is one of ours.
    pub fn of(key: &KeyPair) -> Option<KeyType> {
        let alg = key.algorithm();
        if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Some(KeyType::EcdsaP256)
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            Some(KeyType::EcdsaP384)
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            Some(KeyType::Rsa2048)
        } else {
            None
        }
    }

    /// Generates a fresh key pair of this type, wiped when dropped (as far as rcgen can: its
    /// serialized key; ring's own copy is ring's).
    pub fn generate(self) -> Result<Zeroizing<KeyPair>, KeyError> {
        let fail = |e: &dyn fmt::Display| KeyError::Generate(self, e.to_string());
        let key = match self {
            KeyType::EcdsaP256 => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))
            }
            KeyType::EcdsaP384 => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(|e| fail(&e))
            }
            KeyType::Rsa2048 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key =
                    rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).map_err(|e| fail(&e))?;
                let der = key.to_pkcs8_der().map_err(|e| fail(&e))?;
                KeyPair::try_from(der.as_bytes()).map_err(|e| fail(&e))
            }
        }?;
        Ok(Zeroizing::new(key))
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| KeyError::UnknownType(s.to_owned()))
    }
}

/// A passphrase held in memory that is wiped when dropped.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(s: impl Into<String>) -> Self {
        Passphrase(Zeroizing::new(s.into()))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// The private key as unencrypted PKCS#8 PEM, in a buffer wiped on drop.
pub fn to_pem(key: &KeyPair) -> Zeroizing<String> {
    Zeroizing::new(key.serialize_pem())
}

/// The private key as encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`).
pub fn to_encrypted_pem(key: &KeyPair, passphrase: &Passphrase) -> Result<String, KeyError> {
    let der = Zeroizing::new(key.serialize_der());
    let info = PrivateKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    let params = pbes2::Parameters::generate_scrypt(&mut getrandom::SysRng)
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    let doc = info
        .encrypt_with_params(params, passphrase.bytes())
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    doc.to_pem(ENCRYPTED_LABEL, LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| KeyError::Encrypt(e.to_string()))
}

/// Whether a PEM key file holds an encrypted key.
pub fn is_encrypted(pem: &str) -> bool {
    pem.contains(&format!("-----BEGIN {ENCRYPTED_LABEL}-----"))
}

/// Reads a PKCS#8 PEM key, decrypting it with `passphrase` if it is encrypted.
pub fn from_pem(
    pem: &str,
    passphrase: Option<&Passphrase>,
) -> Result<Zeroizing<KeyPair>, KeyError> {
    let (label, doc) =
        SecretDocument::from_pem(pem).map_err(|e| KeyError::Unreadable(e.to_string()))?;
    let der = Zeroizing::new(match label {
        PLAIN_LABEL => doc.to_bytes(),
        ENCRYPTED_LABEL => {
            let passphrase = passphrase.ok_or(KeyError::PassphraseRequired)?;
            let info = EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes())
                .map_err(|e| KeyError::Unreadable(e.to_string()))?;
            info.decrypt(passphrase.bytes())
                .map_err(|_| KeyError::WrongPassphrase)?
                .to_bytes()
        }
        other => {
            return Err(KeyError::Unreadable(format!(
                "PEM label {other:?}, expected {PLAIN_LABEL:?}"
            )));
        }
    });
    KeyPair::try_from(der.as_slice())
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for t in KeyType::ALL {
            assert_eq!(t.name().parse::<KeyType>().unwrap(), t);
        }
        let err = "ed25519".parse::<KeyType>().unwrap_err().to_string();
        assert!(err.contains("ecdsa-p256, ecdsa-p384 or rsa-2048"), "{err}");
    }

    #[test]
    fn generated_keys_have_the_asked_type_and_reload() {
        for t in KeyType::ALL {
            let key = t.generate().unwrap();
            assert_eq!(KeyType::of(&key), Some(t));
            let back = from_pem(&to_pem(&key), None).unwrap();
            assert_eq!(back.public_key_raw(), key.public_key_raw(), "{t}");
            assert_eq!(KeyType::of(&back), Some(t));
        }
    }

    #[test]
    fn encrypted_key_needs_the_right_passphrase() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let pass = Passphrase::new("correct horse");
        let pem = to_encrypted_pem(&key, &pass).unwrap();
        assert!(is_encrypted(&pem));
        assert!(!pem.contains(&*to_pem(&key)));
        assert!(matches!(
            from_pem(&pem, None),
            Err(KeyError::PassphraseRequired)
        ));
        assert!(matches!(
            from_pem(&pem, Some(&Passphrase::new("wrong"))),
            Err(KeyError::WrongPassphrase)
        ));
        let back = from_pem(&pem, Some(&pass)).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        assert!(matches!(
            from_pem("not a key", None),
            Err(KeyError::Unreadable(_))
        ));
    }
}
