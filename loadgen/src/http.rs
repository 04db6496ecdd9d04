//! A minimal HTTP/1.1 keep-alive client over one TCP stream: writes prepared requests (pipelined
//! if the caller wants) and reads answers framed by Content-Length or chunked encoding.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::LgError;

/// Initial size of a connection's read buffer.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Largest buffered answer (head plus body) before the read fails.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most headers read from one answer.
const MAX_RESPONSE_HEADERS: usize = 32;

/// How an answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// One keep-alive connection.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl HttpConn {
    /// Connects to `addr` with Nagle off (requests are latency-measured).
    pub async fn connect(addr: SocketAddr) -> Result<Self, LgError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; READ_BUF_BYTES],
            start: 0,
            end: 0,
        })
    }

    /// Writes bytes (one or several whole requests).
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), LgError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), LgError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_RESPONSE_BYTES {
                let n = (self.buf.len() * 2).min(MAX_RESPONSE_BYTES);
                self.buf.resize(n, 0);
            } else {
                return Err(LgError::ResponseTooLarge);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(LgError::Closed);
        }
        self.end += n;
        Ok(())
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads one whole answer; its body goes to `body` (cleared first). Returns the status.
    /// 1xx interim answers are skipped.
    pub async fn read_response(&mut self, body: &mut Vec<u8>) -> Result<u16, LgError> {
        body.clear();
        loop {
            let (status, framing) = self.read_head().await?;
            if (100..200).contains(&status) {
                continue;
            }
            match framing {
                Some(Framing::Length(n)) => {
                    if n > MAX_RESPONSE_BYTES {
                        return Err(LgError::ResponseTooLarge);
                    }
                    while self.end - self.start < n {
                        self.fill().await?;
                    }
                    body.extend_from_slice(&self.buf[self.start..self.start + n]);
                    self.start += n;
                }
                Some(Framing::Chunked) => self.read_chunked(body).await?,
                None => {}
            }
            return Ok(status);
        }
    }

    async fn read_head(&mut self) -> Result<(u16, Option<Framing>), LgError> {
        loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(self.pending()) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.ok_or(LgError::BadResponse("no status"))?;
                        let mut framing = None;
                        for h in resp.headers.iter() {
                            if h.name.eq_ignore_ascii_case("content-length") {
                                let v = std::str::from_utf8(h.value)
                                    .ok()
                                    .and_then(|v| v.trim().parse().ok())
                                    .ok_or(LgError::BadResponse("content-length"))?;
                                framing = Some(Framing::Length(v));
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                                && h.value.eq_ignore_ascii_case(b"chunked")
                            {
                                framing = Some(Framing::Chunked);
                            }
                        }
                        Some((n, status, framing))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(_) => return Err(LgError::BadResponse("head")),
                }
            };
            match parsed {
                Some((n, status, framing)) => {
                    self.start += n;
                    return Ok((status, framing));
                }
                None => self.fill().await?,
            }
        }
    }

    async fn read_line_end(&mut self) -> Result<usize, LgError> {
        loop {
            if let Some(p) = self.pending().windows(2).position(|w| w == b"\r\n") {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    async fn read_chunked(&mut self, body: &mut Vec<u8>) -> Result<(), LgError> {
        loop {
            let line_len = self.read_line_end().await?;
            let size = {
                let line = &self.pending()[..line_len];
                let hex = line.split(|&b| b == b';').next().unwrap_or(line);
                let hex =
                    std::str::from_utf8(hex).map_err(|_| LgError::BadResponse("chunk size"))?;
                usize::from_str_radix(hex.trim(), 16)
                    .map_err(|_| LgError::BadResponse("chunk size"))?
            };
            self.start += line_len + 2;
            if size == 0 {
                // Trailers are not expected from either server: the terminating empty line.
                let l = self.read_line_end().await?;
                self.start += l + 2;
                return Ok(());
            }
            if body.len() + size > MAX_RESPONSE_BYTES {
                return Err(LgError::ResponseTooLarge);
            }
            while self.end - self.start < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[self.start..self.start + size]);
            self.start += size + 2;
        }
    }
}

/// Appends a `POST` request with a JSON body to `out`.
pub fn post(out: &mut Vec<u8>, path: &str, body: &[u8]) {
    use std::io::Write;
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// Appends a `GET` request to `out`.
pub fn get(out: &mut Vec<u8>, path: &str) {
    use std::io::Write;
    let _ = write!(out, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}
