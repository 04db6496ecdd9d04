//! Frame boundaries of the bytes a device sends, sans-IO: the checks of RFC 6455 §5.2 that
//! tungstenite does not make. It follows each frame's header and skips its payload by
//! count, so it costs a few instructions per frame, not per byte.

/// A rule of RFC 6455 §5.2 a device broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
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
pub(crate) struct FrameWatch {
    state: State,
    /// Payload bytes announced by the data frames of the message being received.
    message: u64,
    /// The message being received has more than one data frame.
    fragmented: bool,
    /// The payload being skipped ends a message (a data frame with FIN).
    ends_message: bool,
}

impl Default for FrameWatch {
    fn default() -> Self {
        FrameWatch {
            state: State::Header {
                seen: [0; 10],
                have: 0,
            },
            message: 0,
            fragmented: false,
            ends_message: false,
        }
    }
}

impl FrameWatch {
    /// Takes the next bytes the device sent, in order; the stream may be split anywhere.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
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
                        self.payload_done();
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
                    if let Some((next, length)) = Self::header_done(seen, *have) {
                        let first = seen[0];
                        self.state = next;
                        self.header_seen(first, length);
                    }
                }
            }
        }
        match self.state {
            State::Broken(v) => Err(v),
            _ => Ok(()),
        }
    }

    /// Payload bytes announced so far by the data frames of the message being received: what
    /// the WebSocket layer will buffer for it. Back to 0 once its last frame has passed.
    pub(crate) fn message_bytes(&self) -> u64 {
        self.message
    }

    /// True when the message being received came in more than one data frame (the layer
    /// above then also assembles the frames into one message).
    pub(crate) fn fragmented(&self) -> bool {
        self.fragmented
    }

    /// Books a complete header whose first byte is `first` and payload `length` bytes.
    fn header_seen(&mut self, first: u8, length: u64) {
        let opcode = first & 0x0f;
        // Continuation, text and binary frames carry a message; control frames do not.
        if opcode > 2 {
            return;
        }
        if self.message > 0 || opcode == 0 {
            self.fragmented = true;
        }
        self.message = self.message.saturating_add(length);
        self.ends_message = first & 0x80 != 0;
        if matches!(self.state, State::Header { .. }) {
            self.payload_done();
        }
    }

    /// The payload just skipped is complete.
    fn payload_done(&mut self) {
        if std::mem::take(&mut self.ends_message) {
            self.message = 0;
            self.fragmented = false;
        }
    }

    /// The state after a header of which `have` bytes are in `seen`, once it is complete,
    /// and the header's payload length.
    fn header_done(seen: &[u8; 10], have: usize) -> Option<(State, u64)> {
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
                    return Some((State::Broken(Violation::LengthMsb), 0));
                }
                raw.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b))
            }
        };
        let payload = length + mask_bytes;
        let next = if payload == 0 {
            State::Header {
                seen: [0; 10],
                have: 0,
            }
        } else {
            State::Payload(payload)
        };
        Some((next, length))
    }
}

/// The header of an unmasked text frame with FIN set, as a server sends it (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextFrameHead {
    bytes: [u8; 10],
    len: usize,
}

impl TextFrameHead {
    /// The header for a payload of `payload_len` bytes.
    pub(crate) fn new(payload_len: usize) -> TextFrameHead {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x81;
        let len = match payload_len {
            0..=125 => {
                bytes[1] = payload_len as u8;
                2
            }
            126..=0xffff => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
                10
            }
        };
        TextFrameHead { bytes, len }
    }

    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
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

    /// A text frame of `len` payload bytes, masked, with or without FIN, opcode `op`.
    fn data_frame(fin: bool, op: u8, len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 | op } else { op }];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn a_message_is_announced_until_its_last_frame_has_passed() {
        let mut w = FrameWatch::default();
        let single = data_frame(true, 1, 300);
        w.feed(&single[..10]).unwrap();
        assert_eq!((w.message_bytes(), w.fragmented()), (300, false));
        w.feed(&single[10..]).unwrap();
        assert_eq!(w.message_bytes(), 0);
        // Three fragments with a ping between the second and the third.
        w.feed(&data_frame(false, 1, 200)).unwrap();
        assert_eq!((w.message_bytes(), w.fragmented()), (200, false));
        w.feed(&data_frame(false, 0, 100)).unwrap();
        assert_eq!((w.message_bytes(), w.fragmented()), (300, true));
        w.feed(&data_frame(true, 9, 4)).unwrap();
        assert_eq!(
            w.message_bytes(),
            300,
            "a control frame is no part of the message"
        );
        let last = data_frame(true, 0, 50);
        w.feed(&last[..8]).unwrap();
        assert_eq!((w.message_bytes(), w.fragmented()), (350, true));
        w.feed(&last[8..]).unwrap();
        assert_eq!((w.message_bytes(), w.fragmented()), (0, false));
        // An empty final frame ends its message at its header.
        w.feed(&data_frame(false, 1, 10)).unwrap();
        w.feed(&data_frame(true, 0, 0)).unwrap();
        assert_eq!(w.message_bytes(), 0);
    }

    #[test]
    fn text_frame_heads_use_the_shortest_length_form() {
        assert_eq!(TextFrameHead::new(0).as_bytes(), [0x81, 0]);
        assert_eq!(TextFrameHead::new(125).as_bytes(), [0x81, 125]);
        assert_eq!(TextFrameHead::new(126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(
            TextFrameHead::new(65_535).as_bytes(),
            [0x81, 126, 0xff, 0xff]
        );
        assert_eq!(
            TextFrameHead::new(65_536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }
}
