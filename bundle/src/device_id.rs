//! Device identifiers.
//!
//! A device id is the leaf certificate's CN, the MQTT client id, the AWS thing name and the Azure
//! registration id at once, so it must be valid for all of them: `^[a-z0-9][a-z0-9_:-]{0,63}$`.
//! AWS thing names allow `[a-zA-Z0-9:_-]{1,128}`; Azure DPS registration ids must be lower case
//! alphanumerics plus `-._:` and the CN caps them at 64 characters. The intersection is what is
//! left (the dot is dropped because AWS refuses it in thing names).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest id accepted: an X.509 CN holds at most 64 characters (RFC 5280 ub-common-name).
pub const MAX_LEN: usize = 64;

/// A validated device id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

/// Why a string is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDeviceId {
    /// The empty string.
    #[error("a device id must not be empty")]
    Empty,
    /// More than [`MAX_LEN`] characters.
    #[error("device id {0:?} is {1} characters long; at most 64 fit a certificate CN")]
    TooLong(String, usize),
    /// The first character is not a lower-case letter or digit.
    #[error(
        "device id {0:?} must start with a lower-case letter or a digit (it becomes an AWS thing name and an Azure registration id)"
    )]
    BadStart(String),
    /// A character outside `[a-z0-9_:-]`.
    #[error(
        "device id {id:?} contains {ch:?}; allowed are a-z, 0-9, '_', ':' and '-' (the characters both AWS thing names and Azure registration ids accept)"
    )]
    BadChar {
        /// The rejected id.
        id: String,
        /// The first offending character.
        ch: char,
    },
}

impl DeviceId {
    /// Validates `s` as a device id.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidDeviceId> {
        let s = s.into();
        let Some(first) = s.chars().next() else {
            return Err(InvalidDeviceId::Empty);
        };
        let len = s.chars().count();
        if len > MAX_LEN {
            return Err(InvalidDeviceId::TooLong(s, len));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(InvalidDeviceId::BadStart(s));
        }
        if let Some(ch) = s.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | ':' | '-'))
        }) {
            return Err(InvalidDeviceId::BadChar { id: s, ch });
        }
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = InvalidDeviceId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for DeviceId {
    type Error = InvalidDeviceId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "0", "sensor-007", "pi_3a:kitchen", &"a".repeat(64)] {
            assert_eq!(DeviceId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_what_aws_or_azure_would_refuse() {
        assert_eq!(DeviceId::new(""), Err(InvalidDeviceId::Empty));
        assert!(matches!(
            DeviceId::new("a".repeat(65)),
            Err(InvalidDeviceId::TooLong(_, 65))
        ));
        assert!(matches!(
            DeviceId::new("-x"),
            Err(InvalidDeviceId::BadStart(_))
        ));
        assert!(matches!(
            DeviceId::new("Sensor"),
            Err(InvalidDeviceId::BadStart(_))
        ));
        for (bad, ch) in [
            ("sensor.1", '.'),
            ("a b", ' '),
            ("aB", 'B'),
            ("a/b", '/'),
            ("ä", 'ä'),
        ] {
            match DeviceId::new(bad) {
                Err(InvalidDeviceId::BadChar { ch: got, .. }) => assert_eq!(got, ch, "{bad}"),
                Err(InvalidDeviceId::BadStart(_)) => assert_eq!(bad, "ä"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_explain_the_rule() {
        let msg = DeviceId::new("Sensor.1").unwrap_err().to_string();
        assert!(msg.contains("lower-case"), "{msg}");
    }
}
