//! The `@mention` scanner on arbitrary text, and `route_target` on that text as it reaches the
//! daemon inside an envelope (plain, with JSON's usual escapes, and with every char escaped).
//!
//! Invariants for `first_mention(text)`: the result is a listed name, it is preceded by `@`, that
//! `@` is at the start or after a char outside `[A-Za-z0-9_]`, the name is the whole run of name
//! chars after it, and no earlier `@` qualifies (checked against a char-by-char reference).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssed::wire::mention::{first_mention, route_target, MAX_ACCOUNT_NAME_BYTES};
use wssed::wire::envelope::parse_envelope;

const LISTED: [&str; 7] = ["ci_bot", "deploy_bot", "x", "a", "_", "A9", "Bot_2"];

/// Listed names, plus a family so that long and odd names can be listed too.
fn is_public(name: &str) -> bool {
    LISTED.contains(&name) || name.starts_with("pub")
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The specification, written over chars rather than bytes.
fn reference(text: &str, public: impl Fn(&str) -> bool) -> Option<(usize, String)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(at, c)) in chars.iter().enumerate() {
        if c != '@' {
            continue;
        }
        if i > 0 && chars.get(i - 1).is_some_and(|&(_, p)| is_name_char(p)) {
            continue;
        }
        let name: String = chars
            .iter()
            .skip(i + 1)
            .map(|&(_, c)| c)
            .take_while(|&c| is_name_char(c))
            .collect();
        if !name.is_empty() && public(&name) {
            return Some((at + 1, name));
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let got = first_mention(&text, is_public);
    let want = reference(&text, is_public);
    assert_eq!(got, want.as_ref().map(|(_, n)| n.as_str()), "{text:?}");
    if let Some(name) = got {
        // The result borrows from the text, right after its `@`.
        let start = name.as_ptr() as usize - text.as_ptr() as usize;
        assert_eq!(Some(start), want.as_ref().map(|(s, _)| *s), "position");
        assert!(is_public(name));
        assert_eq!(text.as_bytes().get(start - 1), Some(&b'@'));
        let before = text.get(..start - 1).and_then(|s| s.chars().next_back());
        assert!(before.is_none_or(|c| !is_name_char(c)), "boundary before @");
        let after = text
            .get(start + name.len()..)
            .and_then(|s| s.chars().next());
        assert!(after.is_none_or(|c| !is_name_char(c)), "name cut short");
    }

    // As the daemon sees it: the text as data.message of an envelope.
    let expected =
        reference(&text, |n| n.len() <= MAX_ACCOUNT_NAME_BYTES && is_public(n)).map(|(_, n)| n);
    for literal in [
        plain_literal(&text),
        serde_json::to_string(&*text).ok(),
        Some(escaped_literal(&text)),
    ]
    .into_iter()
    .flatten()
    {
        let body = format!(r#"{{"user_id":"u","data":{{"message":{literal}}}}}"#);
        let Ok(env) = parse_envelope(body.as_bytes()) else {
            panic!("envelope refused: {body:?}");
        };
        let mut scratch = String::new();
        let routed = route_target(&env, &mut scratch, is_public);
        assert_eq!(routed.as_deref(), expected.as_deref(), "{body:?}");
    }
});

/// The text between quotes as it is, when that is a valid literal (no escapes needed).
fn plain_literal(text: &str) -> Option<String> {
    let ok = !text.contains(['"', '\\']) && !text.chars().any(|c| c < '\u{20}');
    ok.then(|| format!("\"{text}\""))
}

/// Every char as `\uXXXX` (surrogate pairs beyond the BMP): the decoder does all the work.
fn escaped_literal(text: &str) -> String {
    let mut out = String::from("\"");
    for unit in text.encode_utf16() {
        out.push_str(&format!("\\u{unit:04X}"));
    }
    out.push('"');
    out
}
