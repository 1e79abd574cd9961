//! The DHT11 single-wire protocol, decoded from a captured pulse train.
//!
//! After the host pulls the line low for at least 18 ms and releases it, the sensor answers with
//! ~80 µs low, ~80 µs high, then 40 bits, each ~50 µs low followed by a high pulse of 26–28 µs for
//! a 0 or ~70 µs for a 1, most significant bit first: humidity integer, humidity decimal,
//! temperature integer, temperature decimal, checksum (the low byte of the sum of the first four).
//! Capturing from user space on a Pi jitters by tens of microseconds, so the windows below are wide
//! but disjoint; anything outside them is an error, never a guess.

/// One level of the data line and how long it lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    /// `true` for high.
    pub high: bool,
    /// Duration in microseconds.
    pub micros: u32,
}

/// A decoded, checksum-verified measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Relative humidity, %.
    pub humidity_pct: f64,
    /// Temperature, °C.
    pub temperature_c: f64,
}

/// Why a pulse train is not a valid DHT11 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The sensor never pulled the line low after the start signal.
    #[error("no response from the DHT11 (check wiring, pull-up and power)")]
    NoResponse,
    /// The response preamble has the wrong shape.
    #[error("bad response preamble: {0} µs {1} where ~80 µs is expected")]
    BadPreamble(u32, &'static str),
    /// A bit's high pulse is neither a 0 nor a 1.
    #[error("bit {bit}: high pulse of {micros} µs is neither a 0 (~27 µs) nor a 1 (~70 µs)")]
    BadBit {
        /// Index of the bit, 0-based.
        bit: usize,
        /// Its duration.
        micros: u32,
    },
    /// A low gap between bits is too long or too short (a missed edge merges pulses).
    #[error("bit {bit}: low gap of {micros} µs (expected ~50 µs): an edge was missed")]
    BadGap {
        /// Index of the bit, 0-based.
        bit: usize,
        /// Its duration.
        micros: u32,
    },
    /// Fewer than 40 bits.
    #[error("{0} bits received, a DHT11 frame has 40")]
    WrongLength(usize),
    /// The checksum byte does not match.
    #[error("checksum {got:#04x} does not match the data ({want:#04x})")]
    Checksum {
        /// The checksum byte received.
        got: u8,
        /// The sum of the data bytes.
        want: u8,
    },
}

const PREAMBLE: std::ops::RangeInclusive<u32> = 40..=130;
const GAP: std::ops::RangeInclusive<u32> = 20..=110;
const ZERO: std::ops::RangeInclusive<u32> = 8..=45;
const ONE: std::ops::RangeInclusive<u32> = 50..=110;

/// Decodes the levels seen after the host released the line.
///
/// Leading high time (the pull-up before the sensor answers) is skipped. Levels after the 40th
/// bit are ignored.
pub fn decode(pulses: &[Pulse]) -> Result<Frame, DecodeError> {
    let mut it = pulses.iter().skip_while(|p| p.high).copied();
    let low = it.next().ok_or(DecodeError::NoResponse)?;
    if !PREAMBLE.contains(&low.micros) {
        return Err(DecodeError::BadPreamble(low.micros, "low"));
    }
    let high = it.next().ok_or(DecodeError::WrongLength(0))?;
    if !PREAMBLE.contains(&high.micros) {
        return Err(DecodeError::BadPreamble(high.micros, "high"));
    }
    let mut bytes = [0u8; 5];
    for bit in 0..40 {
        let gap = it.next().ok_or(DecodeError::WrongLength(bit))?;
        if !GAP.contains(&gap.micros) {
            return Err(DecodeError::BadGap {
                bit,
                micros: gap.micros,
            });
        }
        let pulse = it.next().ok_or(DecodeError::WrongLength(bit))?;
        let one = if ONE.contains(&pulse.micros) {
            true
        } else if ZERO.contains(&pulse.micros) {
            false
        } else {
            return Err(DecodeError::BadBit {
                bit,
                micros: pulse.micros,
            });
        };
        bytes[bit / 8] = (bytes[bit / 8] << 1) | u8::from(one);
    }
    let want = bytes[..4].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if want != bytes[4] {
        return Err(DecodeError::Checksum {
            got: bytes[4],
            want,
        });
    }
    // Bit 7 of the temperature decimal byte marks negative values on the clones that report
    // them; a genuine DHT11 never goes below 0 °C and the range check rejects it anyway.
    let magnitude = f64::from(bytes[2]) + f64::from(bytes[3] & 0x7f) / 10.0;
    Ok(Frame {
        humidity_pct: f64::from(bytes[0]) + f64::from(bytes[1]) / 10.0,
        temperature_c: if bytes[3] & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        },
    })
}

/// Turns edge timestamps (µs since release, each the instant the line took `level`) into pulses.
pub fn pulses_from_edges(edges: &[(u64, bool)]) -> Vec<Pulse> {
    edges
        .windows(2)
        .map(|w| Pulse {
            high: w[0].1,
            micros: u32::try_from(w[1].0.saturating_sub(w[0].0)).unwrap_or(u32::MAX),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic answer for `bytes`, with `jitter(i)` µs added to the i-th pulse.
    fn train(bytes: [u8; 5], jitter: impl Fn(usize) -> i32) -> Vec<Pulse> {
        let mut levels = vec![(true, 30), (false, 80), (true, 80)];
        for bit in 0..40 {
            let one = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
            levels.push((false, 50));
            levels.push((true, if one { 70 } else { 27 }));
        }
        levels.push((false, 50));
        levels
            .into_iter()
            .enumerate()
            .map(|(i, (high, us))| Pulse {
                high,
                micros: (us + jitter(i)).max(1) as u32,
            })
            .collect()
    }

    fn frame(h: u8, t: u8, t_dec: u8) -> [u8; 5] {
        [h, 0, t, t_dec, h.wrapping_add(t).wrapping_add(t_dec)]
    }

    #[test]
    fn clean_train_decodes() {
        let f = decode(&train(frame(45, 21, 3), |_| 0)).unwrap();
        assert_eq!(f.humidity_pct, 45.0);
        assert_eq!(f.temperature_c, 21.3);
    }

    #[test]
    fn tolerates_user_space_jitter() {
        // ±15 µs alternating: 27 µs zeros become 12..42, 70 µs ones 55..85.
        let jit = |i: usize| if i.is_multiple_of(3) { 15 } else { -15 };
        let f = decode(&train(frame(60, 30, 0), jit)).unwrap();
        assert_eq!((f.humidity_pct, f.temperature_c), (60.0, 30.0));
    }

    #[test]
    fn wrong_checksum_is_refused() {
        let mut bytes = frame(45, 21, 0);
        bytes[4] ^= 1;
        assert_eq!(
            decode(&train(bytes, |_| 0)),
            Err(DecodeError::Checksum {
                got: 66 ^ 1,
                want: 66
            })
        );
    }

    #[test]
    fn truncated_train_reports_its_length() {
        let mut t = train(frame(45, 21, 0), |_| 0);
        t.truncate(3 + 2 * 25);
        assert_eq!(decode(&t), Err(DecodeError::WrongLength(25)));
    }

    #[test]
    fn missing_edge_is_detected_not_misread() {
        // Dropping the falling edge after bit 10's high pulse merges it with the next gap.
        let t = train(frame(45, 21, 0), |_| 0);
        let i = 3 + 2 * 10 + 1;
        let mut merged = t[..i].to_vec();
        merged.push(Pulse {
            high: true,
            micros: t[i].micros + t[i + 1].micros,
        });
        merged.extend_from_slice(&t[i + 2..]);
        // Merged, the 27 µs zero plus the 50 µs gap looks like a one; what follows is shifted by
        // one level, so the frame must still fail (short, bad gap or checksum), never decode.
        let err = decode(&merged).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::WrongLength(39)
                    | DecodeError::BadGap { .. }
                    | DecodeError::Checksum { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn ambiguous_pulse_is_an_error() {
        let mut t = train(frame(45, 21, 0), |_| 0);
        t[3 + 2 * 5 + 1].micros = 48;
        assert!(matches!(
            decode(&t),
            Err(DecodeError::BadBit { bit: 5, micros: 48 })
        ));
    }

    #[test]
    fn silent_line_means_no_response() {
        assert_eq!(decode(&[]), Err(DecodeError::NoResponse));
        assert_eq!(
            decode(&[Pulse {
                high: true,
                micros: 5000
            }]),
            Err(DecodeError::NoResponse)
        );
    }

    #[test]
    fn edges_become_pulses() {
        let p = pulses_from_edges(&[(0, true), (30, false), (110, true)]);
        assert_eq!(
            p,
            vec![
                Pulse {
                    high: true,
                    micros: 30
                },
                Pulse {
                    high: false,
                    micros: 80
                }
            ]
        );
    }
}
