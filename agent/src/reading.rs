//! A reading as published: `{"device_id","seq","ts","temperature_c","humidity_pct"}`.

use serde::{Deserialize, Serialize};

/// One published reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The device id.
    pub device_id: String,
    /// Per-device sequence number, strictly increasing.
    pub seq: u64,
    /// When it was measured, RFC 3339 UTC.
    pub ts: String,
    /// Temperature, °C.
    pub temperature_c: f64,
    /// Relative humidity, %.
    pub humidity_pct: f64,
}

impl Reading {
    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and finite floats always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_fields() {
        let r = Reading {
            device_id: "sensor-007".into(),
            seq: 42,
            ts: "2026-12-03T12:00:00Z".into(),
            temperature_c: 21.0,
            humidity_pct: 45.0,
        };
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"device_id":"sensor-007","seq":42,"ts":"2026-12-03T12:00:00Z","temperature_c":21.0,"humidity_pct":45.0}"#
        );
    }
}
