//! Human-friendly durations (`"500ms"`, `"10s"`, `"5m"`, `"1h"`) and sizes (`"512KiB"`, `"64MiB"`).
//!
//! Both deserialize from TOML strings, so a typo is reported by the TOML parser with the file,
//! line and key it occurred at.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as a number followed by `ms`, `s`, `m` or `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// A size in bytes written as a number followed by `B`, `KiB`, `MiB` or `GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanSize(pub u64);

/// Why a duration or size string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error(
        "{0:?} is not a duration: write a whole number and a unit, e.g. \"500ms\", \"10s\", \"5m\", \"1h\""
    )]
    Duration(String),
    /// Not a size.
    #[error(
        "{0:?} is not a size: write a whole number and a unit, e.g. \"512KiB\", \"64MiB\", \"1GiB\""
    )]
    Size(String),
}

fn split_number(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n = s[..digits].parse().ok()?;
    Some((n, s[digits..].trim_start()))
}

impl std::str::FromStr for HumanDuration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Duration(s.to_owned());
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        Ok(Self(Duration::from_millis(
            n.checked_mul(ms).ok_or_else(bad)?,
        )))
    }
}

impl std::str::FromStr for HumanSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Size(s.to_owned());
        let (n, unit) = split_number(s).ok_or_else(bad)?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        Ok(Self(n.checked_mul(factor).ok_or_else(bad)?))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            _ if ms.is_multiple_of(3_600_000) && ms > 0 => write!(f, "{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) && ms > 0 => write!(f, "{}m", ms / 60_000),
            _ if ms.is_multiple_of(1_000) => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_documented_unit() {
        for (s, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                s.parse::<HumanDuration>().unwrap().0,
                Duration::from_millis(ms)
            );
        }
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!("512KiB".parse::<HumanSize>().unwrap().0, 512 * 1024);
        assert_eq!("64MiB".parse::<HumanSize>().unwrap().0, 64 << 20);
        assert_eq!("100".parse::<HumanSize>().unwrap().0, 100);
    }

    #[test]
    fn typos_are_refused_with_an_example() {
        for bad in ["10", "10x", "s", "-1s", "1.5s", ""] {
            let err = bad.parse::<HumanDuration>().unwrap_err().to_string();
            assert!(err.contains("\"10s\""), "{bad}: {err}");
        }
        assert!("64MB".parse::<HumanSize>().is_err());
        assert!("99999999999999999999GiB".parse::<HumanSize>().is_err());
    }

    #[test]
    fn durations_display_in_their_largest_whole_unit() {
        assert_eq!(HumanDuration(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }
}
