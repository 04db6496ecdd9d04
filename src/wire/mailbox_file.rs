//! The offline mailbox's state file (docs/protocol.md §20.7): what the daemon writes on a clean
//! stop and reads at start. Like the rest of `wire` it knows no files, paths or shared state: it
//! reads and writes through `std::io`'s traits, and the caller says how long the input is.
//!
//! Layout, integers little-endian:
//!
//! ```text
//! magic     8 bytes   "WSSEDMBX"
//! version   u32       1
//! per device with kept messages or a pending gap:
//!   tag     u8        1
//!   id      u8 length (1-64), then the user id's bytes (UTF-8)
//!   dropped u64       messages dropped since the device last heard of a gap
//!   count   u32       messages that follow
//!   per message: kept at (u64, milliseconds since the Unix epoch), u32 length, the frame's bytes
//! end       u8        0
//! crc       u32       CRC-32 (IEEE 802.3) of every byte before it
//! ```
//!
//! Ids and frames are length-prefixed bytes, never lines of text, so every user id (any UTF-8
//! without control characters, C1 characters included) and every frame round-trips exactly. A
//! file is trusted only when all of it reads back: magic, version, checksum and every record.

use std::io::{self, Read, Write};

use super::envelope::is_id_control;
use super::limits::MAX_USER_ID_BYTES;

/// The first bytes of every state file: a file without them is not ours.
pub const MAGIC: [u8; 8] = *b"WSSEDMBX";
/// The layout this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest frame a file may hold, in bytes: the ceiling of `mailbox_bytes` (a longer length
/// is damage, and is refused before anything is allocated for it).
pub const MAX_FRAME_BYTES: u32 = 1 << 30;

const TAG_END: u8 = 0;
const TAG_DEVICE: u8 = 1;
const HEADER_BYTES: u64 = 12;
const CRC_BYTES: u64 = 4;

/// CRC-32 as Ethernet, zip and PNG compute it (reflected polynomial 0xEDB88320).
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// The checksum of nothing yet.
    pub const fn new() -> Crc32 {
        Crc32(0xFFFF_FFFF)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let i = usize::from((self.0 as u8) ^ b);
            self.0 = CRC_TABLE[i] ^ (self.0 >> 8);
        }
    }

    /// The checksum of everything added.
    pub fn value(self) -> u32 {
        !self.0
    }
}

/// Writes a state file: [`Writer::device`] then its messages, for each device, then
/// [`Writer::finish`].
pub struct Writer<W: Write> {
    out: W,
    crc: Crc32,
}

impl<W: Write> Writer<W> {
    /// Starts a file on `out` (writes the magic and the version).
    pub fn new(out: W) -> io::Result<Writer<W>> {
        let mut w = Writer {
            out,
            crc: Crc32::new(),
        };
        w.put(&MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    /// Starts device `user`'s record: `dropped` messages lost for it so far, `count` messages
    /// to follow.
    pub fn device(&mut self, user: &str, dropped: u64, count: u32) -> io::Result<()> {
        let len = u8::try_from(user.len())
            .ok()
            .filter(|&n| (1..=MAX_USER_ID_BYTES).contains(&usize::from(n)))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "user id length"))?;
        self.put(&[TAG_DEVICE, len])?;
        self.put(user.as_bytes())?;
        self.put(&dropped.to_le_bytes())?;
        self.put(&count.to_le_bytes())
    }

    /// One message of the current device, kept at `kept_at_ms`.
    pub fn message(&mut self, kept_at_ms: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&n| n <= MAX_FRAME_BYTES)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame length"))?;
        self.put(&kept_at_ms.to_le_bytes())?;
        self.put(&len.to_le_bytes())?;
        self.put(frame)
    }

    /// Ends the file (the end tag and the checksum) and hands the output back.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[TAG_END])?;
        let crc = self.crc.value();
        self.out.write_all(&crc.to_le_bytes())?;
        Ok(self.out)
    }
}

/// Why a state file cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// It does not start with [`MAGIC`]: not a state file of wssed.
    Foreign,
    /// A layout this build does not know.
    Version(u32),
    /// It ends before its checksum.
    Truncated,
    /// A record breaks the layout.
    Malformed(&'static str),
    /// The checksum does not match the bytes.
    Checksum,
    /// Reading failed.
    Unreadable(io::ErrorKind),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Foreign => write!(f, "not a wssed mailbox file (wrong magic)"),
            Damage::Version(v) => {
                write!(f, "unknown format version {v} (this build reads {VERSION})")
            }
            Damage::Truncated => write!(f, "truncated"),
            Damage::Malformed(why) => write!(f, "malformed: {why}"),
            Damage::Checksum => write!(f, "checksum mismatch"),
            Damage::Unreadable(kind) => write!(f, "unreadable: {kind}"),
        }
    }
}

/// One record of a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A device's record begins; `count` messages follow.
    Device {
        /// The user id.
        user: String,
        /// Messages dropped for it so far.
        dropped: u64,
        /// Messages that follow.
        count: u32,
    },
    /// A message of the last device.
    Message {
        /// When it was kept, in milliseconds since the Unix epoch.
        kept_at_ms: u64,
        /// The frame, as the device would have received it.
        frame: String,
    },
}

/// Reads a state file record by record, checking as it goes; the checksum is checked when
/// the end is reached, so a caller that must not act on a damaged file reads it through
/// once ([`verify`]) before acting on a second read.
pub struct Reader<R: Read> {
    input: R,
    /// Bytes left before the checksum.
    left: u64,
    /// Messages left in the current device's record.
    messages_left: u32,
    crc: Crc32,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the header of a file of `len` bytes.
    pub fn new(input: R, len: u64) -> Result<Reader<R>, Damage> {
        let mut r = Reader {
            input,
            left: len.saturating_sub(CRC_BYTES),
            messages_left: 0,
            crc: Crc32::new(),
            done: false,
        };
        let mut magic = [0u8; 8];
        // A short file that starts like ours is truncated; one that does not is foreign.
        let have = r.left.min(8) as usize;
        r.take(&mut magic[..have])?;
        if magic[..have] != MAGIC[..have] {
            return Err(Damage::Foreign);
        }
        if len < HEADER_BYTES + 1 + CRC_BYTES {
            return Err(Damage::Truncated);
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(Damage::Version(version));
        }
        Ok(r)
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<(), Damage> {
        if buf.len() as u64 > self.left {
            return Err(Damage::Truncated);
        }
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Damage::Truncated,
            kind => Damage::Unreadable(kind),
        })?;
        self.left -= buf.len() as u64;
        self.crc.update(buf);
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, Damage> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, Damage> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, Damage> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn text(&mut self, len: usize) -> Result<String, Damage> {
        let mut bytes = vec![0u8; len];
        self.take(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| Damage::Malformed("text that is not UTF-8"))
    }

    /// The next record; `None` once the end and a matching checksum were read.
    pub fn next_item(&mut self) -> Result<Option<Item>, Damage> {
        if self.done {
            return Ok(None);
        }
        if self.messages_left > 0 {
            self.messages_left -= 1;
            let kept_at_ms = self.u64()?;
            let len = self.u32()?;
            if len > MAX_FRAME_BYTES || u64::from(len) > self.left {
                return Err(Damage::Malformed("a frame length past the end"));
            }
            let frame = self.text(len as usize)?;
            return Ok(Some(Item::Message { kept_at_ms, frame }));
        }
        match self.u8()? {
            TAG_END => {
                if self.left != 0 {
                    return Err(Damage::Malformed("bytes after the end"));
                }
                let expected = self.crc.value();
                let mut b = [0u8; 4];
                self.left = CRC_BYTES;
                self.take(&mut b)?;
                if u32::from_le_bytes(b) != expected {
                    return Err(Damage::Checksum);
                }
                self.done = true;
                Ok(None)
            }
            TAG_DEVICE => {
                let len = usize::from(self.u8()?);
                if !(1..=MAX_USER_ID_BYTES).contains(&len) {
                    return Err(Damage::Malformed("a user id length outside 1-64"));
                }
                let user = self.text(len)?;
                if user.chars().any(is_id_control) {
                    return Err(Damage::Malformed("a user id with a control character"));
                }
                let dropped = self.u64()?;
                let count = self.u32()?;
                self.messages_left = count;
                Ok(Some(Item::Device {
                    user,
                    dropped,
                    count,
                }))
            }
            _ => Err(Damage::Malformed("an unknown record")),
        }
    }
}

/// Reads a whole file of `len` bytes and checks it, keeping nothing: `Ok` means a second read
/// of the same bytes yields only valid records. Returns the devices and messages it holds.
pub fn verify<R: Read>(input: R, len: u64) -> Result<(usize, usize), Damage> {
    let mut r = Reader::new(input, len)?;
    let (mut devices, mut messages) = (0, 0);
    while let Some(item) = r.next_item()? {
        match item {
            Item::Device { .. } => devices += 1,
            Item::Message { .. } => messages += 1,
        }
    }
    Ok((devices, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record<'a> = (&'a str, u64, Vec<(u64, &'a str)>);

    fn file(records: &[Record<'_>]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        for (user, dropped, messages) in records {
            w.device(user, *dropped, messages.len() as u32).unwrap();
            for (at, frame) in messages {
                w.message(*at, frame.as_bytes()).unwrap();
            }
        }
        w.finish().unwrap()
    }

    fn read(bytes: &[u8]) -> Result<Vec<Item>, Damage> {
        let mut r = Reader::new(bytes, bytes.len() as u64)?;
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xCBF4_3926);
        assert_eq!(Crc32::new().value(), 0);
    }

    #[test]
    fn every_user_id_and_frame_round_trips_exactly() {
        let long = "é".repeat(32);
        let ids = [
            "a",
            "dev 1",
            "\u{85}\u{9f}c1",
            "été",
            "🦀x",
            "a\"b\\c,d=e\u{7e}",
            long.as_str(),
            &"x".repeat(MAX_USER_ID_BYTES),
        ];
        let frames = ["{}", "{\"a\":\"\\u0000\\n\"}", "{ \"é\" : \"\u{85}\" }", ""];
        let records: Vec<Record<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let messages = frames
                    .iter()
                    .enumerate()
                    .map(|(j, f)| (u64::MAX - (i * 10 + j) as u64, *f))
                    .collect();
                (*id, i as u64 * 7, messages)
            })
            .collect();
        let bytes = file(&records);
        let items = read(&bytes).unwrap();
        let mut want = Vec::new();
        for (user, dropped, messages) in &records {
            want.push(Item::Device {
                user: (*user).to_owned(),
                dropped: *dropped,
                count: messages.len() as u32,
            });
            for (at, frame) in messages {
                want.push(Item::Message {
                    kept_at_ms: *at,
                    frame: (*frame).to_owned(),
                });
            }
        }
        assert_eq!(items, want);
        assert_eq!(
            verify(&bytes[..], bytes.len() as u64),
            Ok((ids.len(), ids.len() * frames.len()))
        );
    }

    #[test]
    fn an_empty_file_and_a_gap_only_device_round_trip() {
        let bytes = file(&[]);
        assert_eq!(bytes.len() as u64, HEADER_BYTES + 1 + CRC_BYTES);
        assert_eq!(read(&bytes), Ok(Vec::new()));
        let bytes = file(&[("gone", 3, Vec::new())]);
        assert_eq!(
            read(&bytes),
            Ok(vec![Item::Device {
                user: "gone".into(),
                dropped: 3,
                count: 0
            }])
        );
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_caught() {
        let bytes = file(&[
            ("dev1", 1, vec![(5, "{\"n\":1}"), (6, "{\"n\":2}")]),
            ("\u{85}", 0, vec![(7, "{}")]),
        ]);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(read(&bad).is_err(), "byte {i} bit {bit} passed");
                assert!(verify(&bad[..], bad.len() as u64).is_err());
            }
        }
        for len in 0..bytes.len() {
            assert!(read(&bytes[..len]).is_err(), "cut at {len} passed");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read(&longer).is_err());
    }

    #[test]
    fn foreign_files_and_other_versions_are_named() {
        assert_eq!(
            read(b"hello world, this is no mailbox").err(),
            Some(Damage::Foreign)
        );
        assert_eq!(read(b"").err(), Some(Damage::Truncated));
        assert_eq!(read(b"WSSED").err(), Some(Damage::Truncated));
        let mut v2 = file(&[]);
        v2[8] = 2;
        assert_eq!(read(&v2).err(), Some(Damage::Version(2)));
        let mut bad_crc = file(&[("a", 0, vec![(1, "{}")])]);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0x80;
        assert_eq!(read(&bad_crc).err(), Some(Damage::Checksum));
    }

    /// A file whose checksum is right but whose records are not (a writer's bug, or a crafted
    /// file) is refused too, and a length past the end allocates nothing.
    #[test]
    fn records_are_checked_even_under_a_good_checksum() {
        fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
            let mut c = Crc32::new();
            c.update(&body);
            body.extend_from_slice(&c.value().to_le_bytes());
            body
        }
        let header = |rest: &[u8]| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&VERSION.to_le_bytes());
            b.extend_from_slice(rest);
            b
        };
        let control = with_crc(header(&[
            1, 2, b'a', 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]));
        assert_eq!(
            read(&control).err(),
            Some(Damage::Malformed("a user id with a control character"))
        );
        let empty_id = with_crc(header(&[1, 0, 0]));
        assert!(matches!(read(&empty_id), Err(Damage::Malformed(_))));
        let mut huge = header(&[1, 1, b'a']);
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.push(0);
        let huge = with_crc(huge);
        assert_eq!(
            read(&huge).err(),
            Some(Damage::Malformed("a frame length past the end"))
        );
        let not_utf8 = {
            let mut b = header(&[1, 1, b'a']);
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&[0xff, 0]);
            with_crc(b)
        };
        assert_eq!(
            read(&not_utf8).err(),
            Some(Damage::Malformed("text that is not UTF-8"))
        );
        let unknown = with_crc(header(&[7, 0]));
        assert_eq!(
            read(&unknown).err(),
            Some(Damage::Malformed("an unknown record"))
        );
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would() {
        let mut w = Writer::new(Vec::new()).unwrap();
        assert!(w.device("", 0, 0).is_err());
        assert!(w.device(&"x".repeat(65), 0, 0).is_err());
    }
}
