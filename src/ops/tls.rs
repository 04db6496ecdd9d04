//! The TLS certificate and key files (`tls_cert_file`, `tls_key_file`; README "TLS"): read
//! and checked at start and on SIGHUP, with what the operator needs to know about the
//! certificate (its subject and when it expires) read from the certificate itself.
//!
//! A bad file is one line naming the setting (`tls_key_file: ...`); `main` exits 2 with it
//! at start, and a reload that fails keeps the certificate in use and logs the same line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::calendar::{civil_from_days, days_from_civil};
use super::settings::Config;

/// Largest certificate or key file read, in bytes: a chain of a few certificates is a few KiB.
pub const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;
/// Most certificates read from `tls_cert_file` (the server's and its chain).
pub const MAX_CHAIN_CERTIFICATES: usize = 16;

/// A certificate and key file that cannot serve: the setting, the file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    /// The setting at fault (`tls_cert_file` or `tls_key_file`).
    pub key: &'static str,
    /// The file it names.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.key, self.path.display(), self.why)
    }
}

impl std::error::Error for TlsFileError {}

/// What the operator is told about a certificate: start log, reload log, `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's distinguished name, attributes in certificate order (`C=DE, CN=gw.local`).
    pub subject: String,
    /// The end of its validity (`notAfter`), in seconds since the Unix epoch.
    pub not_after: i64,
    /// Certificates in the chain served (the server's first).
    pub chain_len: usize,
    /// Bytes of the chain as sent in every full handshake.
    pub chain_bytes: usize,
}

impl CertInfo {
    /// Seconds until it expires (negative once expired).
    pub fn expires_in_secs(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now)
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.expires_in_secs(unix_now()) / 86_400;
        write!(
            f,
            "subject {}, expires {} ({days} days), chain of {} ({} bytes)",
            self.subject,
            utc_text(self.not_after),
            self.chain_len,
            self.chain_bytes
        )
    }
}

/// A certificate with its key, checked to belong together, ready to serve.
#[derive(Debug)]
pub struct Loaded {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// What the operator is told.
    pub info: CertInfo,
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reads `config`'s certificate and key files; None when TLS is not configured.
pub fn load_configured(config: &Config) -> Option<Result<Loaded, TlsFileError>> {
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(load(cert, key)),
        _ => None,
    }
}

/// Reads a PEM certificate chain and its PEM private key, and checks that they belong
/// together. An expired certificate is no error here (the caller warns and serves it).
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Loaded, TlsFileError> {
    let cert_err = |why: String| TlsFileError {
        key: "tls_cert_file",
        path: cert_file.to_owned(),
        why,
    };
    let key_err = |why: String| TlsFileError {
        key: "tls_key_file",
        path: key_file.to_owned(),
        why,
    };
    let cert_pem = read_bounded(cert_file).map_err(cert_err)?;
    let key_pem = read_bounded(key_file).map_err(key_err)?;

    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&cert_pem) {
        let cert = item.map_err(|e| cert_err(pem_problem(&e)))?;
        if chain.len() == MAX_CHAIN_CERTIFICATES {
            return Err(cert_err(format!(
                "more than {MAX_CHAIN_CERTIFICATES} certificates"
            )));
        }
        chain.push(cert);
    }
    let Some(first) = chain.first() else {
        return Err(cert_err(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    };
    let fields = read_fields(first.as_ref())
        .ok_or_else(|| cert_err("the first certificate is not a valid X.509 certificate".into()))?;
    let info = CertInfo {
        subject: fields.subject,
        not_after: fields.not_after,
        chain_len: chain.len(),
        chain_bytes: chain.iter().map(|c| c.as_ref().len()).sum(),
    };

    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(key_err(
            "no private key in it (expected PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                .to_owned(),
        )),
        Err(e) => return Err(key_err(pem_problem(&e))),
    };
    let provider = provider::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unusable private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(key_err(format!(
                "the key does not match the certificate in {}",
                cert_file.display()
            )))
        }
        Err(e) => return Err(cert_err(format!("unusable certificate ({e})"))),
    }
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

/// A file's bytes, refused past `MAX_TLS_FILE_BYTES`.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_TLS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_TLS_FILE_BYTES {
        return Err(format!("larger than {MAX_TLS_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

fn pem_problem(e: &pem::Error) -> String {
    format!("not valid PEM ({e:?})")
}

/// The fields of a certificate wssed reports.
struct Fields {
    subject: String,
    not_after: i64,
}

/// Reads the subject and `notAfter` of a DER X.509 certificate (RFC 5280 §4.1): the
/// TBSCertificate's version, serial, signature algorithm and issuer are skipped, then come
/// the validity and the subject. None when the bytes are not shaped so.
fn read_fields(der: &[u8]) -> Option<Fields> {
    let (cert, _) = Der::read(der, SEQUENCE)?;
    let (tbs, _) = Der::read(cert, SEQUENCE)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = Der::read(rest, 0xa0)?.1;
    }
    rest = Der::read(rest, INTEGER)?.1; // serialNumber
    rest = Der::read(rest, SEQUENCE)?.1; // signature
    rest = Der::read(rest, SEQUENCE)?.1; // issuer
    let (validity, rest) = Der::read(rest, SEQUENCE)?;
    let (subject, _) = Der::read(rest, SEQUENCE)?;
    let (_, _, after) = Der::any(validity)?; // notBefore, skipped
    let (tag, time, _) = Der::any(after)?;
    Some(Fields {
        subject: name_text(subject)?,
        not_after: time_secs(tag, time)?,
    })
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// A minimal DER reader: one tag-length-value at a time, definite lengths only.
struct Der;

impl Der {
    /// The first element of `bytes` when its tag is `tag`: its contents and what follows it.
    fn read(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        match Der::any(bytes)? {
            (t, contents, rest) if t == tag => Some((contents, rest)),
            _ => None,
        }
    }

    /// The first element of `bytes`: its tag, its contents and what follows it.
    fn any(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (digits, rest) = rest.split_at(n);
            let len = digits
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        Some((tag, contents, rest))
    }
}

/// A Name as `C=DE, O=Example, CN=gw.local`, attributes in certificate order; attributes
/// other than the common ones are shown by their OID.
fn name_text(mut name: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (rdn, rest) = Der::read(name, SET)?;
        name = rest;
        let mut rdn = rdn;
        while !rdn.is_empty() {
            let (attribute, rest) = Der::read(rdn, SEQUENCE)?;
            rdn = rest;
            let (oid, value) = Der::read(attribute, OID)?;
            let (_, text, _) = Der::any(value)?;
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN".to_owned(),
                [0x55, 0x04, 0x06] => "C".to_owned(),
                [0x55, 0x04, 0x07] => "L".to_owned(),
                [0x55, 0x04, 0x08] => "ST".to_owned(),
                [0x55, 0x04, 0x0a] => "O".to_owned(),
                [0x55, 0x04, 0x0b] => "OU".to_owned(),
                other => other
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            };
            parts.push(format!("{label}={}", String::from_utf8_lossy(text)));
        }
    }
    if parts.is_empty() {
        return Some("(empty)".to_owned());
    }
    Some(parts.join(", "))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, RFC 5280 §4.1.2.5.1) or GeneralizedTime (`YYYYMMDDHHMMSSZ`)
/// as seconds since the Unix epoch.
fn time_secs(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (year, at) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(0..2)?;
            // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(at..at + 2)?;
    let day = digits(at + 2..at + 4)?;
    let hour = digits(at + 4..at + 6)?;
    let minute = digits(at + 6..at + 8)?;
    let second = digits(at + 8..at + 10)?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_text(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        let t = time_secs(UTC_TIME, b"491231235959Z").unwrap();
        assert_eq!(utc_text(t), "2049-12-31 23:59:59 UTC");
        let t = time_secs(UTC_TIME, b"500101000000Z").unwrap();
        assert_eq!(utc_text(t), "1950-01-01 00:00:00 UTC");
        let t = time_secs(GENERALIZED_TIME, b"20991231000000Z").unwrap();
        assert_eq!(utc_text(t), "2099-12-31 00:00:00 UTC");
    }

    #[test]
    fn bad_times_and_truncated_der_are_refused() {
        assert_eq!(time_secs(UTC_TIME, b"4912312359Z"), None);
        assert_eq!(time_secs(UTC_TIME, b"491331235959Z"), None);
        assert_eq!(time_secs(UTC_TIME, b"49123123595xZ"), None);
        assert_eq!(time_secs(GENERALIZED_TIME, b"491231235959Z"), None);
        assert!(read_fields(&[]).is_none());
        assert!(read_fields(&[0x30, 0x82, 0xff, 0xff, 0x30]).is_none());
        assert!(read_fields(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        // Any prefix of a real certificate's DER is refused, never a panic.
        let der = sample_der();
        for n in 0..der.len() {
            assert!(read_fields(&der[..n]).is_none(), "prefix of {n} bytes");
        }
        assert!(read_fields(&der).is_some());
    }

    /// A self-signed certificate (`openssl req -x509 -newkey ec -pkeyopt
    /// ec_paramgen_curve:P-256 -subj "/C=DE/O=wssed test/CN=gw.local" -days 3650`).
    fn sample_der() -> Vec<u8> {
        CertificateDer::from_pem_slice(SAMPLE_PEM.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    const SAMPLE_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBvzCCAWWgAwIBAgIURpC4qNsLcsRktvokyUu6y/lUOscwCgYIKoZIzj0EAwIw
NTELMAkGA1UEBhMCREUxEzARBgNVBAoMCndzc2VkIHRlc3QxETAPBgNVBAMMCGd3
LmxvY2FsMB4XDTI2MTIwMzE5NTIyMVoXDTM2MTEzMDE5NTIyMVowNTELMAkGA1UE
BhMCREUxEzARBgNVBAoMCndzc2VkIHRlc3QxETAPBgNVBAMMCGd3LmxvY2FsMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0et/db/z6Iry6UW/DdxXCNd3QURAN09k
yiIxu8I3x2ToH78py3R6HmN9N3znSYaELr2vT8SAQE12bUBX2a+sEaNTMFEwHQYD
VR0OBBYEFJb1eyxA/GBAkJsVCu0hxQ1NVTicMB8GA1UdIwQYMBaAFJb1eyxA/GBA
kJsVCu0hxQ1NVTicMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg
ZxmI+3KbgtuaFJ5OIUFj/+Vof7GCfH08MKa8IFuYlYUCIQD626eDMY7taq21+U7U
9KxQaAW1oFhIc1l2VM/zyTN0aw==
-----END CERTIFICATE-----
";

    #[test]
    fn subject_and_expiry_of_a_real_certificate() {
        let f = read_fields(&sample_der()).unwrap();
        assert_eq!(f.subject, "C=DE, O=wssed test, CN=gw.local");
        assert_eq!(utc_text(f.not_after), "2036-11-30 19:52:21 UTC");
    }
}
