//! Errors of the HTTP layer: each cause has its own variant, status and `detail` text.

use std::fmt;

use crate::wire::listed::listed;

listed! {
    /// A framing, head or query error; each maps to one status and one `{"detail": ...}` text.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum HttpError {
        /// The request line or a header line breaks the HTTP/1.1 grammar (includes obsolete
        /// line folding, a space before a header's colon, a bare CR). 400.
        Malformed,
        /// The request line has a method and a target but no HTTP version (HTTP/0.9 style). 400.
        MissingVersion,
        /// The target is not origin-form (`/...`), absolute-form (`http://...`) or `*` with OPTIONS. 400.
        BadTarget,
        /// The request target is longer than `MAX_TARGET_BYTES`. 414.
        UriTooLong,
        /// The request head is longer than `MAX_HEAD_BYTES`. 431.
        HeadTooLarge,
        /// The request head has more than `MAX_HEADERS` header fields. 431.
        TooManyHeaders,
        /// The request line names a version other than HTTP/1.0 or HTTP/1.1. 505.
        VersionNotSupported,
        /// A `Content-Length` that is not a plain decimal number fitting in 64 bits. 400.
        BadContentLength,
        /// Several `Content-Length` values that differ. 400.
        ConflictingContentLength,
        /// `Content-Length` together with `Transfer-Encoding` (request smuggling). 400.
        ContentLengthWithTransferEncoding,
        /// A `Transfer-Encoding` other than exactly one `chunked`. 400.
        UnsupportedTransferEncoding,
        /// `Transfer-Encoding` in an HTTP/1.0 request, whose framing is then faulty (RFC 9112 §6.1). 400.
        TransferEncodingInHttp10,
        /// A header field that must appear once (`Host`, `Content-Type`, `Authorization`, `Origin`,
        /// `Sec-WebSocket-Key`, `Sec-WebSocket-Version`) appears several times. 400.
        DuplicateHeader,
        /// The body is, or is announced to be, larger than `max_body_bytes`. 413.
        BodyTooLarge,
        /// A chunk-size line that is not 1..=16 hex digits followed by CRLF or an extension. 400.
        BadChunkSize,
        /// A chunk extension holding a control character or a bare LF. 400.
        BadChunkExtension,
        /// A chunk extension longer than `MAX_CHUNK_EXT_BYTES`. 400.
        ChunkExtensionTooLong,
        /// Chunk data not followed by CRLF. 400.
        MissingChunkDelimiter,
        /// A trailer line that is not `name: value` CRLF. 400.
        BadTrailer,
        /// A trailer section longer than `MAX_TRAILER_BYTES`. 431.
        TrailersTooLarge,
        /// A query string with an invalid percent escape or decoding to invalid UTF-8. 400, keeps
        /// the connection (the request itself is well framed).
        BadQuery,
    }
}

impl HttpError {
    /// The response status for this error.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed
            | Self::MissingVersion
            | Self::BadTarget
            | Self::BadContentLength
            | Self::ConflictingContentLength
            | Self::ContentLengthWithTransferEncoding
            | Self::UnsupportedTransferEncoding
            | Self::TransferEncodingInHttp10
            | Self::DuplicateHeader
            | Self::BadChunkSize
            | Self::BadChunkExtension
            | Self::ChunkExtensionTooLong
            | Self::MissingChunkDelimiter
            | Self::BadTrailer
            | Self::BadQuery => 400,
            Self::BodyTooLarge => 413,
            Self::UriTooLong => 414,
            Self::HeadTooLarge | Self::TooManyHeaders | Self::TrailersTooLarge => 431,
            Self::VersionNotSupported => 505,
        }
    }

    /// Human text for the `{"detail": ...}` body.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Malformed => "Malformed request",
            Self::MissingVersion => "Request line has no HTTP version",
            Self::BadTarget => "Invalid request target",
            Self::UriTooLong => "Request target too long",
            Self::HeadTooLarge => "Request head too large",
            Self::TooManyHeaders => "Too many header fields",
            Self::VersionNotSupported => "HTTP version not supported",
            Self::BadContentLength => "Invalid Content-Length",
            Self::ConflictingContentLength => "Conflicting Content-Length values",
            Self::ContentLengthWithTransferEncoding => {
                "Content-Length together with Transfer-Encoding"
            }
            Self::UnsupportedTransferEncoding => "Transfer-Encoding other than chunked",
            Self::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            Self::DuplicateHeader => "Repeated header field",
            Self::BodyTooLarge => "Request body too large",
            Self::BadChunkSize => "Malformed chunk size",
            Self::BadChunkExtension => "Malformed chunk extension",
            Self::ChunkExtensionTooLong => "Chunk extension too long",
            Self::MissingChunkDelimiter => "Missing CRLF after chunk data",
            Self::BadTrailer => "Malformed trailer field",
            Self::TrailersTooLarge => "Trailer section too large",
            Self::BadQuery => "Malformed query string",
        }
    }

    /// Whether the connection must close after the error response: true for every framing
    /// error (the next request's start is unknown), false for errors in a well-framed request.
    pub fn closes_connection(self) -> bool {
        !matches!(self, Self::BadQuery)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(HttpError::UriTooLong.status(), 414);
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(HttpError::VersionNotSupported.status(), 505);
        assert_eq!(HttpError::BodyTooLarge.status(), 413);
        assert_eq!(HttpError::ContentLengthWithTransferEncoding.status(), 400);
    }

    #[test]
    fn only_query_errors_keep_the_connection() {
        for e in HttpError::every() {
            let keeps = matches!(e, HttpError::BadQuery);
            assert_eq!(e.closes_connection(), !keeps, "{e:?}");
        }
    }

    #[test]
    fn details_are_distinct_and_json_safe() {
        let all = HttpError::every();
        for (i, a) in all.iter().enumerate() {
            assert!(!a.detail().is_empty());
            assert!(!a.detail().contains(['"', '\\']), "{a:?}");
            for b in all.iter().skip(i + 1) {
                assert_ne!(a.detail(), b.detail(), "{a:?} vs {b:?}");
            }
        }
    }
}
