//! What differs between the two servers: paths, request bodies, and how an answer reads.

use std::net::SocketAddr;

use crate::error::LgError;
use crate::http::{self, HttpConn};

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// wssed: `POST /sse/push` with an envelope, devices on `/ws?user_id=`.
    Wssed,
    /// nchan: `POST /pub/{id}` with the data as body, websocket subscribers on `/sub/{id}`.
    Nchan,
}

/// What one push answer says about its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// wssed `success` / nchan 201: written to (or queued for) a connected device.
    Delivered,
    /// wssed `partial` / nchan 202: nobody was connected.
    NotConnected,
    /// wssed 503 `User queue full`.
    QueueFull,
    /// Any other answer.
    Failed,
}

impl Target {
    /// Name used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wssed => "wssed",
            Self::Nchan => "nchan",
        }
    }

    /// Request target of a device's WebSocket.
    pub fn ws_path(self, id: &str) -> String {
        match self {
            Self::Wssed => format!("/ws?user_id={id}"),
            Self::Nchan => format!("/sub/{id}"),
        }
    }

    /// Appends the HTTP request that pushes `data` (a JSON object) to device `id`.
    pub fn push_request(self, out: &mut Vec<u8>, scratch: &mut Vec<u8>, id: &str, data: &[u8]) {
        match self {
            Self::Wssed => {
                scratch.clear();
                scratch.extend_from_slice(b"{\"user_id\":\"");
                scratch.extend_from_slice(id.as_bytes());
                scratch.extend_from_slice(b"\",\"data\":");
                scratch.extend_from_slice(data);
                scratch.push(b'}');
                http::post(out, "/sse/push", scratch);
            }
            Self::Nchan => http::post(out, &format!("/pub/{id}"), data),
        }
    }

    /// Reads a push answer.
    pub fn classify(self, status: u16, body: &[u8]) -> Outcome {
        match self {
            Self::Wssed => match status {
                200 if contains(body, b"\"success\"") => Outcome::Delivered,
                200 if contains(body, b"\"partial\"") => Outcome::NotConnected,
                503 => Outcome::QueueFull,
                _ => Outcome::Failed,
            },
            // nchan: 201 when subscribers were present, 202 when the message was only stored.
            Self::Nchan => match status {
                201 => Outcome::Delivered,
                202 => Outcome::NotConnected,
                _ => Outcome::Failed,
            },
        }
    }

    /// Devices the server counts as connected right now.
    pub async fn registered(self, addr: SocketAddr) -> Result<u64, LgError> {
        let mut conn = HttpConn::connect(addr).await?;
        let mut req = Vec::new();
        let (path, key): (&str, &[u8]) = match self {
            Self::Wssed => ("/health", b"\"connections\":"),
            Self::Nchan => ("/nchan_status", b"subscribers:"),
        };
        http::get(&mut req, path);
        conn.write_all(&req).await?;
        let mut body = Vec::new();
        let status = conn.read_response(&mut body).await?;
        if status != 200 {
            return Err(LgError::BadResponse("status page"));
        }
        find_u64(&body, key).ok_or(LgError::BadResponse("status page count"))
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Offset of the first `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned integer that follows `key` (spaces allowed between).
pub fn find_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    let rest = hay.get(at..)?;
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The JSON string value that follows `key` (`"name":`), without unescaping.
pub fn find_str<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(hay, key)? + key.len();
    let rest = hay.get(at..)?;
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    rest.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans() {
        let f = br#"{"ts":123,"seq": 7,"correlation_id":"lg9","x":1}"#;
        assert_eq!(find_u64(f, b"\"ts\":"), Some(123));
        assert_eq!(find_u64(f, b"\"seq\":"), Some(7));
        assert_eq!(find_str(f, b"\"correlation_id\":"), Some(&b"lg9"[..]));
        assert_eq!(find_u64(f, b"\"nope\":"), None);
        assert_eq!(find_u64(b"subscribers: 42\n", b"subscribers:"), Some(42));
    }

    #[test]
    fn classify_answers() {
        let w = Target::Wssed;
        assert_eq!(
            w.classify(200, br#"{"status":"success"}"#),
            Outcome::Delivered
        );
        assert_eq!(
            w.classify(200, br#"{"status":"partial"}"#),
            Outcome::NotConnected
        );
        assert_eq!(w.classify(503, b""), Outcome::QueueFull);
        assert_eq!(Target::Nchan.classify(201, b""), Outcome::Delivered);
        assert_eq!(Target::Nchan.classify(202, b""), Outcome::NotConnected);
    }
}
