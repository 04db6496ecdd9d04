//! CORS response fields (docs/protocol.md §17), sans-IO: the lines an answer to a listed
//! browser origin carries, and whether an `Origin` is the server's own.

/// Request fields a preflight may ask to send: the bearer token and the JSON type.
pub(crate) const ALLOW_HEADERS: &str = "Authorization, Content-Type";
/// How long a browser may keep a preflight's answer, in seconds (Chromium caps it at 7200).
pub(crate) const MAX_AGE_SECS: &str = "600";
/// Answer fields a page may read beyond the CORS-safelisted ones.
pub(crate) const EXPOSE_HEADERS: &str = "Retry-After, WWW-Authenticate";

/// Appends the fields of an answer to `origin`, a listed origin (already matched, so visible
/// ASCII). A preflight (`allow_methods`: the path's `Allow` list) gets the methods, request
/// fields and cache time it may use; any other answer the fields a page may read.
pub(crate) fn write_allowed(lines: &mut Vec<u8>, origin: &[u8], allow_methods: Option<&str>) {
    lines.extend_from_slice(b"Access-Control-Allow-Origin: ");
    lines.extend(origin.iter().filter(|b| b.is_ascii_graphic()));
    lines.extend_from_slice(b"\r\n");
    match allow_methods {
        Some(methods) => {
            for (name, value) in [
                ("Access-Control-Allow-Methods", methods),
                ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                ("Access-Control-Max-Age", MAX_AGE_SECS),
            ] {
                push_line(lines, name, value);
            }
        }
        None => push_line(lines, "Access-Control-Expose-Headers", EXPOSE_HEADERS),
    }
    write_vary(lines);
}

/// Appends `Vary: Origin`: the answer depends on the request's `Origin`, so no cache may hand
/// it to a page of another origin.
pub(crate) fn write_vary(lines: &mut Vec<u8>) {
    push_line(lines, "Vary", "Origin");
}

/// True when `origin` (`scheme://authority`) names the authority the request was sent to
/// (`host`, the `Host` value): a page the server itself served. Compared ASCII
/// case-insensitively; the scheme is not compared (a TLS proxy may sit in front).
pub(crate) fn is_same_origin(origin: &[u8], host: Option<&[u8]>) -> bool {
    let Some(host) = host.map(<[u8]>::trim_ascii).filter(|h| !h.is_empty()) else {
        return false;
    };
    origin
        .windows(3)
        .position(|w| w == b"://")
        .and_then(|i| origin.get(i + 3..))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

fn push_line(lines: &mut Vec<u8>, name: &str, value: &str) {
    lines.extend_from_slice(name.as_bytes());
    lines.extend_from_slice(b": ");
    lines.extend_from_slice(value.as_bytes());
    lines.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or("<not utf-8>")
    }

    #[test]
    fn a_preflight_names_methods_fields_and_cache_time() {
        let mut lines = Vec::new();
        write_allowed(&mut lines, b"http://nas.lan:8123", Some("POST, OPTIONS"));
        assert_eq!(
            text(&lines),
            "Access-Control-Allow-Origin: http://nas.lan:8123\r\n\
             Access-Control-Allow-Methods: POST, OPTIONS\r\n\
             Access-Control-Allow-Headers: Authorization, Content-Type\r\n\
             Access-Control-Max-Age: 600\r\n\
             Vary: Origin\r\n"
        );
    }

    #[test]
    fn an_answer_names_the_origin_and_the_readable_fields() {
        let mut lines = Vec::new();
        write_allowed(&mut lines, b"https://a.example", None);
        assert_eq!(
            text(&lines),
            "Access-Control-Allow-Origin: https://a.example\r\n\
             Access-Control-Expose-Headers: Retry-After, WWW-Authenticate\r\n\
             Vary: Origin\r\n"
        );
    }

    #[test]
    fn an_origin_cannot_split_the_head() {
        let mut lines = Vec::new();
        write_allowed(&mut lines, b"http://a\r\nX-Evil: 1", None);
        assert!(text(&lines).starts_with("Access-Control-Allow-Origin: http://aX-Evil:1\r\n"));
    }

    #[test]
    fn same_origin_compares_the_authority_with_host() {
        assert!(is_same_origin(b"http://gw:8080", Some(b"gw:8080")));
        assert!(is_same_origin(b"https://GW:8080", Some(b" gw:8080 ")));
        assert!(!is_same_origin(b"http://gw:8081", Some(b"gw:8080")));
        assert!(!is_same_origin(b"http://gw", Some(b"gw:8080")));
        assert!(!is_same_origin(b"null", Some(b"null")));
        assert!(!is_same_origin(b"http://gw:8080", None));
        assert!(!is_same_origin(b"http://", Some(b"")));
    }
}
