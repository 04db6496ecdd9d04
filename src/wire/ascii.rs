//! Byte-level primitives every writer and parser of the wire layer shares: hex digits, decimal
//! and hex numbers, HTTP tokens. One of each, so two writers can never disagree.

/// Lowercase hex digits, indexed by nibble.
pub(crate) const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The lowercase hex digit of the low nibble of `n`.
pub(crate) fn hex_digit(n: u8) -> u8 {
    HEX_DIGITS[usize::from(n & 0x0f)]
}

/// The value of one hex digit, either case.
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    push_digits(out, n, 10);
}

/// Appends `n` in lowercase hex, without leading zeros.
pub(crate) fn push_hex(out: &mut Vec<u8>, n: u64) {
    push_digits(out, n, 16);
}

fn push_digits(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    // 20 digits hold u64::MAX in decimal, so the buffer never runs out.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while start > 0 {
        start -= 1;
        // `n % radix` is below 16, so the cast keeps every bit.
        digits[start] = hex_digit((n % radix) as u8);
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// A `tchar` of RFC 9110 §5.6.2 (the bytes of methods, header names and chunk extension names).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(n: u64) -> String {
        let mut out = Vec::new();
        push_decimal(&mut out, n);
        String::from_utf8(out).unwrap()
    }

    fn hex(n: u64) -> String {
        let mut out = Vec::new();
        push_hex(&mut out, n);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_match_the_standard_formatter_at_the_edges() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            1_000_000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(decimal(n), n.to_string());
            assert_eq!(hex(n), format!("{n:x}"));
        }
    }

    #[test]
    fn hex_digits_round_trip() {
        for n in 0..16u8 {
            assert_eq!(hex_value(hex_digit(n)), Some(n));
            assert_eq!(hex_value(hex_digit(n).to_ascii_uppercase()), Some(n));
        }
        assert_eq!(hex_value(b'g'), None);
    }

    #[test]
    fn tchars_are_rfc_9110s() {
        let all: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
        assert_eq!(all.len(), 62 + 15);
        assert!(!is_tchar(b' ') && !is_tchar(b':') && !is_tchar(b'"') && !is_tchar(0x7f));
    }
}
