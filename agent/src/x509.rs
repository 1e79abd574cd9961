//! Just enough DER to read what the agent shows and checks about a certificate: the subject CN,
//! the serial and the validity period.
//!
//! Signature and chain checks are not done here but by rustls' WebPKI verifier; this reader only
//! extracts fields, and refuses anything that is not well-formed DER on the path it walks.

use crate::clock::days_from_civil;

/// Fields of a certificate the agent reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Serial number, lower-case hex without leading zero bytes.
    pub serial: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct DerError(&'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads one TLV, returning (tag, contents).
    fn next(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let [tag, first, rest @ ..] = self.0 else {
            return Err(DerError("truncated"));
        };
        let (len, rest) = if first & 0x80 == 0 {
            (usize::from(*first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(DerError("bad length"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(DerError("truncated"));
        }
        let (content, tail) = rest.split_at(len);
        self.0 = tail;
        Ok((*tag, content))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        match self.next()? {
            (t, c) if t == tag => Ok(c),
            _ => Err(DerError(what)),
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// Reads the fields of a DER certificate.
pub fn parse(der: &[u8]) -> Result<CertInfo, DerError> {
    let cert = Reader(der).expect(SEQUENCE, "not a SEQUENCE")?;
    let mut tbs = Reader(Reader(cert).expect(SEQUENCE, "no TBSCertificate")?);
    let (mut tag, mut content) = tbs.next()?;
    if tag == 0xa0 {
        (tag, content) = tbs.next()?;
    }
    if tag != 0x02 {
        return Err(DerError("no serial number"));
    }
    let serial = hex_trimmed(content);
    tbs.expect(SEQUENCE, "no signature algorithm")?;
    tbs.expect(SEQUENCE, "no issuer")?;
    let mut validity = Reader(tbs.expect(SEQUENCE, "no validity")?);
    let not_before = parse_time(validity.next()?)?;
    let not_after = parse_time(validity.next()?)?;
    let subject = tbs.expect(SEQUENCE, "no subject")?;
    Ok(CertInfo {
        common_name: common_name(subject)?,
        serial,
        not_before,
        not_after,
    })
}

fn hex_trimmed(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn common_name(name: &[u8]) -> Result<Option<String>, DerError> {
    let mut rdns = Reader(name);
    while !rdns.0.is_empty() {
        let mut set = Reader(rdns.expect(SET, "bad RDN")?);
        while !set.0.is_empty() {
            let mut atv = Reader(set.expect(SEQUENCE, "bad attribute")?);
            let oid = atv.expect(0x06, "bad attribute type")?;
            let (_, value) = atv.next()?;
            if oid == OID_CN {
                return std::str::from_utf8(value)
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| DerError("CN is not text"));
            }
        }
    }
    Ok(None)
}

fn parse_time((tag, content): (u8, &[u8])) -> Result<i64, DerError> {
    // The fields below are cut at fixed byte offsets, which must fall between characters.
    let text = std::str::from_utf8(content)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or(DerError("bad time"))?;
    let (year, rest) = match tag {
        // UTCTime: YYMMDDHHMMSSZ, 50-99 meaning 19xx (RFC 5280 4.1.2.5.1).
        0x17 if text.len() == 13 => {
            let yy: i64 = num(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 15 => (num(&text[..4])?, &text[4..]),
        _ => return Err(DerError("bad time")),
    };
    if !rest.ends_with('Z') {
        return Err(DerError("time not in UTC"));
    }
    let month: u32 = num(&rest[0..2])?;
    let day: u32 = num(&rest[2..4])?;
    let h: i64 = num(&rest[4..6])?;
    let m: i64 = num(&rest[6..8])?;
    let s: i64 = num(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(DerError("bad time"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, DerError> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DerError("bad time"));
    }
    s.parse().map_err(|_| DerError("bad time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Certificates built field by field, so each test states the values it expects; real
    // certificates from the project's PKI go through this parser in the integration tests.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 128 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn name(cn: &str) -> Vec<u8> {
        let o = tlv(0x06, &[0x55, 0x04, 0x0a]);
        let org = tlv(SEQUENCE, &[o, tlv(0x0c, b"fleet")].concat());
        let c = tlv(0x06, OID_CN);
        let cn = tlv(SEQUENCE, &[c, tlv(0x0c, cn.as_bytes())].concat());
        tlv(SEQUENCE, &[tlv(SET, &org), tlv(SET, &cn)].concat())
    }

    fn cert(not_before: (u8, &str), not_after: (u8, &str)) -> Vec<u8> {
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[0x00, 0x9f, 0x2e]),
            tlv(SEQUENCE, &tlv(0x06, &[0x2a, 0x86, 0x48])),
            name("root"),
            tlv(
                SEQUENCE,
                &[
                    tlv(not_before.0, not_before.1.as_bytes()),
                    tlv(not_after.0, not_after.1.as_bytes()),
                ]
                .concat(),
            ),
            name("sensor-007"),
            tlv(SEQUENCE, &[0u8; 200]),
        ]
        .concat();
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[])].concat(),
        )
    }

    #[test]
    fn reads_cn_serial_and_validity() {
        let der = cert((0x17, "250101000000Z"), (0x18, "20491231235959Z"));
        let info = parse(&der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("sensor-007"));
        assert_eq!(info.serial, "9f2e");
        assert_eq!(info.not_before, 1_735_689_600);
        assert_eq!(info.not_after, 2_524_607_999);
    }

    #[test]
    fn utctime_before_1950_rule() {
        let der = cert((0x17, "991231235959Z"), (0x17, "490101000000Z"));
        let info = parse(&der).unwrap();
        assert_eq!(info.not_before, 946_684_799);
        assert_eq!(info.not_after, 2_493_072_000);
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let der = cert((0x17, "250101000000Z"), (0x18, "20491231235959Z"));
        for cut in 0..der.len() {
            let _ = parse(&der[..cut]);
        }
        assert!(parse(b"").is_err());
        assert!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&cert((0x17, "2501010000Z"), (0x18, "20491231235959Z"))).is_err());
    }

    #[test]
    fn non_ascii_time_is_an_error_not_a_panic() {
        // Found by fuzzing (x509_cert): 13 bytes, but a two-byte character straddles the
        // offset where the day ends.
        let der = cert((0x17, "261203\0\u{29a};54Z"), (0x18, "20491231235959Z"));
        assert_eq!(parse(&der), Err(DerError("bad time")));
    }
}
