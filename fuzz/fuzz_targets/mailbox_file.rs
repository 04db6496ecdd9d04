//! `mailbox_file::Reader` and `verify` on any bytes: the offline mailbox's state file, which the
//! daemon reads at start and must never trust when damaged (docs/protocol.md §20.7).
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - `verify` accepts exactly the inputs whose every record reads, with the same counts, and
//!   refuses the others with the same damage the reading ran into;
//! - every user id read is 1–64 bytes without control characters;
//! - an input that reads whole is written again byte for byte by `Writer` from its records (the
//!   format has one spelling per content, so nothing in it goes unchecked);
//! - no proper prefix of an input that reads whole reads whole (a cut file is never trusted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssed::wire::envelope::is_id_control;
use wssed::wire::mailbox_file::{verify, Damage, Item, Reader, Writer};

fn read_all(bytes: &[u8]) -> Result<Vec<Item>, Damage> {
    let mut reader = Reader::new(bytes, bytes.len() as u64)?;
    let mut items = Vec::new();
    while let Some(item) = reader.next_item()? {
        items.push(item);
    }
    Ok(items)
}

fuzz_target!(|data: &[u8]| {
    let read = read_all(data);
    let verified = verify(data, data.len() as u64);
    let items = match (read, verified) {
        (Ok(items), Ok((devices, messages))) => {
            let d = items.iter().filter(|i| matches!(i, Item::Device { .. })).count();
            assert_eq!((d, items.len() - d), (devices, messages));
            items
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (read, verified) => panic!("read {read:?} but verify {verified:?}"),
    };

    let mut w = Writer::new(Vec::new()).unwrap();
    for item in &items {
        match item {
            Item::Device {
                user,
                dropped,
                count,
            } => {
                assert!((1..=64).contains(&user.len()), "{user:?}");
                assert!(!user.chars().any(is_id_control), "{user:?}");
                w.device(user, *dropped, *count).unwrap();
            }
            Item::Message { kept_at_ms, frame } => w.message(*kept_at_ms, frame.as_bytes()).unwrap(),
        }
    }
    assert_eq!(w.finish().unwrap(), data, "written again differently");

    for cut in [0, 1, data.len() / 2, data.len() - 1] {
        if cut < data.len() {
            assert!(read_all(&data[..cut]).is_err(), "a prefix of {cut} bytes reads whole");
        }
    }
});
