//! `@mention` routing (docs/protocol.md §9): a message that names a public account goes to that
//! account.

use crate::wire::envelope::Envelope;
use crate::wire::json;
pub use crate::wire::limits::MAX_ACCOUNT_NAME_BYTES;

/// True for the bytes a name is made of: `[A-Za-z0-9_]`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first `@name` in `text` (by position) for which `is_public(name)` holds.
///
/// `@` counts at the start of the text or after a character outside `[A-Za-z0-9_]` (so the
/// `a@ci_bot` of an e-mail address does not), and `name` is the longest run of `[A-Za-z0-9_]`
/// after it (so `@ci_bot_x` names `ci_bot_x`, never `ci_bot`).
pub fn first_mention(text: &str, is_public: impl Fn(&str) -> bool) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes.get(from..)?.iter().position(|&b| b == b'@') {
        let at = from + offset;
        let start = at + 1;
        let len = bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| is_name_byte(b))
            .count();
        // A non-ASCII char before `@` ends in a byte >= 0x80, which is not a name byte.
        let boundary = at == 0 || bytes.get(at - 1).is_some_and(|&b| !is_name_byte(b));
        if boundary && len > 0 {
            // `@` and name bytes are ASCII, so both ends are char boundaries.
            if let Some(name) = text.get(start..start + len) {
                if is_public(name) {
                    return Some(name);
                }
            }
        }
        from = start + len;
    }
    None
}

/// Validates a configured public account name: 1–64 of `[A-Za-z0-9_]`.
pub fn is_valid_account_name(name: &str) -> bool {
    (1..=MAX_ACCOUNT_NAME_BYTES).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// The mention target of an envelope: the first public account mentioned in the first string
/// among `data.message`, `data.text`, `data.content`, `data.body`.
///
/// The text is borrowed when its literal has no escapes; otherwise it is decoded into `scratch`
/// (lone surrogates as U+FFFD, which no name contains).
pub fn route_target(
    env: &Envelope<'_>,
    scratch: &mut String,
    is_public: impl Fn(&str) -> bool,
) -> Option<heapless::String<MAX_ACCOUNT_NAME_BYTES>> {
    let literal = env.mention_text?;
    let text = match json::plain_str(literal) {
        Some(text) => text,
        None => {
            json::unescape_lossy(literal, scratch);
            scratch.as_str()
        }
    };
    let name = first_mention(text, |n| n.len() <= MAX_ACCOUNT_NAME_BYTES && is_public(n))?;
    heapless::String::try_from(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::parse_envelope;

    const PUBLIC: [&str; 3] = ["ci_bot", "deploy_bot", "x"];

    fn public(name: &str) -> bool {
        PUBLIC.contains(&name)
    }

    fn first(text: &str) -> Option<&str> {
        first_mention(text, public)
    }

    #[test]
    fn mentions_at_start_and_after_separators() {
        assert_eq!(first("@ci_bot run"), Some("ci_bot"));
        assert_eq!(first("Please run tests @ci_bot"), Some("ci_bot"));
        assert_eq!(first("(@ci_bot)"), Some("ci_bot"));
        assert_eq!(first("hi,@ci_bot."), Some("ci_bot"));
        assert_eq!(first("@ci_bot's job"), Some("ci_bot"));
        assert_eq!(first("@ci_bot-x"), Some("ci_bot"));
        assert_eq!(first("\n@ci_bot"), Some("ci_bot"));
        assert_eq!(first("@@ci_bot"), Some("ci_bot"));
        assert_eq!(first("@x"), Some("x"));
    }

    #[test]
    fn email_like_and_longer_names_do_not_count() {
        assert_eq!(first("mail a@ci_bot"), None);
        assert_eq!(first("mail a_@ci_bot"), None);
        assert_eq!(first("mail 9@ci_bot"), None);
        assert_eq!(first("@ci_bot_x"), None);
        assert_eq!(first("@ci_bot2"), None);
        assert_eq!(first("@CI_BOT"), None);
        assert_eq!(first("@ ci_bot"), None);
        assert_eq!(first("@"), None);
        assert_eq!(first("ci_bot@"), None);
        assert_eq!(first(""), None);
        // The e-mail is skipped, the real mention after it counts.
        assert_eq!(first("a@ci_bot then @deploy_bot"), Some("deploy_bot"));
    }

    #[test]
    fn first_by_position_in_text_wins() {
        assert_eq!(first("@deploy_bot and @ci_bot"), Some("deploy_bot"));
        assert_eq!(first("@ci_bot and @deploy_bot"), Some("ci_bot"));
        assert_eq!(first("@nobody then @deploy_bot"), Some("deploy_bot"));
    }

    #[test]
    fn unicode_around_mentions() {
        assert_eq!(first("é@ci_bot"), Some("ci_bot"));
        assert_eq!(first("日本@ci_bot語"), Some("ci_bot"));
        assert_eq!(first("@ci_bot\u{e9}"), Some("ci_bot"));
        assert_eq!(first("@\u{e9}ci_bot"), None);
        assert_eq!(first("😀@x😀"), Some("x"));
    }

    #[test]
    fn account_names_are_checked() {
        assert!(is_valid_account_name("ci_bot"));
        assert!(is_valid_account_name("A9_"));
        assert!(is_valid_account_name(&"a".repeat(64)));
        assert!(!is_valid_account_name(&"a".repeat(65)));
        assert!(!is_valid_account_name(""));
        assert!(!is_valid_account_name("ci-bot"));
        assert!(!is_valid_account_name("ci bot"));
        assert!(!is_valid_account_name("bötchen"));
        assert!(!is_valid_account_name("@ci_bot"));
    }

    fn target(body: &str) -> Option<heapless::String<64>> {
        let env = match parse_envelope(body.as_bytes()) {
            Ok(env) => env,
            Err(e) => panic!("{body}: {e:?}"),
        };
        let mut scratch = String::new();
        route_target(&env, &mut scratch, public)
    }

    #[test]
    fn route_target_reads_the_first_string_field() {
        let t = |data: &str| target(&format!(r#"{{"user_id":"u","data":{data}}}"#));
        assert_eq!(t(r#"{"message":"hi @ci_bot"}"#).as_deref(), Some("ci_bot"));
        assert_eq!(t(r#"{"text":"hi @ci_bot"}"#).as_deref(), Some("ci_bot"));
        assert_eq!(t(r#"{"content":"hi @ci_bot"}"#).as_deref(), Some("ci_bot"));
        assert_eq!(t(r#"{"body":"hi @ci_bot"}"#).as_deref(), Some("ci_bot"));
        // message comes first whatever the member order.
        assert_eq!(
            t(r#"{"text":"@deploy_bot","message":"@ci_bot"}"#).as_deref(),
            Some("ci_bot")
        );
        // The first *string*: a non-string message is skipped.
        assert_eq!(
            t(r#"{"message":{"x":"@ci_bot"},"text":"@deploy_bot"}"#).as_deref(),
            Some("deploy_bot")
        );
        assert_eq!(t(r#"{"message":null,"body":"@x"}"#).as_deref(), Some("x"));
        // An empty string is a string: the search stops there.
        assert_eq!(t(r#"{"message":"","text":"@ci_bot"}"#), None);
        // A string without a mention stops the search too.
        assert_eq!(t(r#"{"message":"hello","text":"@ci_bot"}"#), None);
        assert_eq!(t(r#"{"other":"@ci_bot"}"#), None);
        assert_eq!(t(r#"{}"#), None);
        // Duplicate keys inside data: the last one counts, as in a Python dict.
        assert_eq!(
            t(r#"{"message":"@ci_bot","message":"@deploy_bot"}"#).as_deref(),
            Some("deploy_bot")
        );
    }

    #[test]
    fn route_target_decodes_escapes() {
        let t = |data: &str| target(&format!(r#"{{"user_id":"u","data":{data}}}"#));
        assert_eq!(
            t(r#"{"message":"\u0040ci_bot"}"#).as_deref(),
            Some("ci_bot")
        );
        assert_eq!(
            t(r#"{"message":"@ci\u005fbot"}"#).as_deref(),
            Some("ci_bot")
        );
        assert_eq!(t(r#"{"message":"a\u0040ci_bot"}"#), None);
        assert_eq!(
            t(r#"{"message":"line\n@ci_bot"}"#).as_deref(),
            Some("ci_bot")
        );
        assert_eq!(
            t(r#"{"message":"\ud800@ci_bot"}"#).as_deref(),
            Some("ci_bot")
        );
        assert_eq!(
            t(r#"{"m\u0065ssage":"@ci_bot"}"#).as_deref(),
            Some("ci_bot")
        );
        assert_eq!(t(r#"{"message":"\"@x\""}"#).as_deref(), Some("x"));
    }

    #[test]
    fn route_target_ignores_names_over_the_limit() {
        let long = "a".repeat(65);
        let env_body = format!(r#"{{"user_id":"u","data":{{"message":"@{long}"}}}}"#);
        let env = parse_envelope(env_body.as_bytes()).ok();
        let mut scratch = String::new();
        let got = env.and_then(|e| route_target(&e, &mut scratch, |_| true));
        assert_eq!(got, None);
    }
}
