//! Frame boundaries of the bytes a device sends, sans-IO: the checks of RFC 6455 §5.2 that
//! tungstenite does not make. It follows each frame's header and skips its payload by
//! count, so it costs a few instructions per frame, not per byte.

/// A rule of RFC 6455 §5.2 a device broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A 64-bit payload length with its most significant bit set ("MUST be 0").
    LengthMsb,
}

/// Where the watcher stands in the device's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a header: the bytes of it seen so far and how long it is (0 = not known yet).
    Header { seen: [u8; 10], have: usize },
    /// Skipping this many payload bytes (the mask key counts as payload here).
    Payload(u64),
    /// A violation was found; every later call reports it again.
    Broken(Violation),
}

/// Follows the frames of one device's stream.
#[derive(Debug, Clone)]
pub struct FrameWatch {
    state: State,
}

impl Default for FrameWatch {
    fn default() -> Self {
        FrameWatch {
            state: State::Header {
                seen: [0; 10],
                have: 0,
            },
        }
    }
}

impl FrameWatch {
    /// Takes the next bytes the device sent, in order; the stream may be split anywhere.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Broken(v) => return Err(*v),
                State::Payload(left) => {
                    let take = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    *left -= take as u64;
                    bytes = bytes.get(take..).unwrap_or_default();
                    if *left == 0 {
                        self.state = State::Header {
                            seen: [0; 10],
                            have: 0,
                        };
                    }
                }
                State::Header { seen, have } => {
                    let Some((&b, rest)) = bytes.split_first() else {
                        break;
                    };
                    bytes = rest;
                    if let Some(slot) = seen.get_mut(*have) {
                        *slot = b;
                    }
                    *have += 1;
                    if let Some(next) = Self::header_done(seen, *have) {
                        self.state = next;
                    }
                }
            }
        }
        match self.state {
            State::Broken(v) => Err(v),
            _ => Ok(()),
        }
    }

    /// The state after a header of which `have` bytes are in `seen`, once it is complete.
    fn header_done(seen: &[u8; 10], have: usize) -> Option<State> {
        let second = *seen.get(1)?;
        let masked = second & 0x80 != 0;
        let mask_bytes = if masked { 4 } else { 0 };
        let (length_bytes, short) = match second & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        if have < 2 + length_bytes {
            return None;
        }
        let length = match short {
            Some(n) => n,
            None => {
                let raw = seen.get(2..2 + length_bytes)?;
                if length_bytes == 8 && raw.first().is_some_and(|b| b & 0x80 != 0) {
                    return Some(State::Broken(Violation::LengthMsb));
                }
                raw.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b))
            }
        };
        let payload = length + mask_bytes;
        Some(if payload == 0 {
            State::Header {
                seen: [0; 10],
                have: 0,
            }
        } else {
            State::Payload(payload)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len_code: u8, extended: &[u8], payload_len: usize) -> Vec<u8> {
        let mut f = vec![0x81, 0x80 | len_code];
        f.extend_from_slice(extended);
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    fn feed_split(bytes: &[u8]) -> Vec<Result<(), Violation>> {
        (0..=bytes.len())
            .map(|cut| {
                let mut w = FrameWatch::default();
                let (a, b) = bytes.split_at(cut);
                w.feed(a).and_then(|()| w.feed(b))
            })
            .collect()
    }

    #[test]
    fn frames_of_every_length_form_pass_whatever_the_split() {
        let mut stream = frame(5, &[], 5);
        stream.extend(frame(126, &300u16.to_be_bytes(), 300));
        stream.extend(frame(127, &70_000u64.to_be_bytes(), 70_000));
        stream.extend(frame(0, &[], 0));
        for r in feed_split(&stream) {
            assert_eq!(r, Ok(()));
        }
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_refused_whatever_the_split() {
        let mut stream = frame(5, &[], 5);
        stream.extend_from_slice(&[0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]);
        for r in feed_split(&stream) {
            assert_eq!(r, Err(Violation::LengthMsb));
        }
        let mut w = FrameWatch::default();
        assert!(w.feed(&stream).is_err());
        assert_eq!(w.feed(b"more"), Err(Violation::LengthMsb), "sticky");
    }

    #[test]
    fn the_largest_legal_length_passes_the_header() {
        let mut w = FrameWatch::default();
        let mut header = vec![0x82, 0xff];
        header.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert_eq!(w.feed(&header), Ok(()));
    }
}
