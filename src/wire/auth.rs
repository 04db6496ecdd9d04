//! Opt-in authentication (docs/protocol.md §1.6, §8.2): the upstream bearer token and the HMAC
//! device token. Comparisons run in constant time so a LAN attacker can't time their way to a
//! token.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[cfg(test)]
use crate::wire::ascii::hex_digit;
use crate::wire::ascii::hex_value;

/// Bytes of an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// The token of an `Authorization: Bearer TOKEN` value.
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first().is_none_or(|b| *b != b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// True when the `Authorization` value carries exactly `expected` as bearer token.
pub(crate) fn bearer_matches(value: &[u8], expected: &[u8]) -> bool {
    bearer_token(value).is_some_and(|token| constant_time_eq(token, expected))
}

/// Equality whose time depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The device token for `user_id`: lower-case hex of HMAC-SHA256(secret, user_id).
/// The daemon only checks tokens; operators make them with openssl (README).
#[cfg(test)]
fn device_token(secret: &[u8], user_id: &str) -> String {
    let Some(mac) = mac(secret, user_id) else {
        return String::new();
    };
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(TAG_BYTES * 2);
    for b in &tag {
        out.push(char::from(hex_digit(b >> 4)));
        out.push(char::from(hex_digit(*b)));
    }
    out
}

/// True when `token` (hex, either case) is `user_id`'s device token.
pub(crate) fn device_token_matches(secret: &[u8], user_id: &str, token: &[u8]) -> bool {
    let mut tag = [0u8; TAG_BYTES];
    if token.len() != TAG_BYTES * 2 {
        return false;
    }
    for (out, pair) in tag.iter_mut().zip(token.chunks_exact(2)) {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(hi), Some(lo)) => *out = hi << 4 | lo,
            _ => return false,
        }
    }
    mac(secret, user_id).is_some_and(|mac| mac.verify_slice(&tag).is_ok())
}

/// The MAC of `user_id`; `None` only if the HMAC crate ever refused a key (it takes any length).
fn mac(secret: &[u8], user_id: &str) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(user_id.as_bytes());
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_and_matching() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert!(bearer_matches(b"Bearer s3cret", b"s3cret"));
        assert!(!bearer_matches(b"Bearer s3cre", b"s3cret"));
        assert!(!bearer_matches(b"Bearer s3creT", b"s3cret"));
    }

    #[test]
    fn device_token_matches_rfc4231_vector_and_either_case() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(device_token(b"Jefe", "what do ya want for nothing?"), want);
        assert!(device_token_matches(
            b"Jefe",
            "what do ya want for nothing?",
            want.as_bytes()
        ));
        let upper = want.to_ascii_uppercase();
        assert!(device_token_matches(
            b"Jefe",
            "what do ya want for nothing?",
            upper.as_bytes()
        ));
        assert!(!device_token_matches(b"Jefe", "other", want.as_bytes()));
        assert!(!device_token_matches(
            b"Jefe",
            "what do ya want for nothing?",
            b"zz"
        ));
    }
}
