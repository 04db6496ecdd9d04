//! The state directory (docs/protocol.md §20.7): the offline mailbox is written there on a
//! clean stop and read back at start, so a restart or an upgrade loses nothing it kept.
//!
//! One file, written once per stop: to a temporary file, flushed to the disk, renamed over
//! the old one, and the directory flushed too, so a stop cut short leaves no half file. Never a
//! write per message (SD cards wear out). A file that does not read back whole (wrong magic,
//! unknown version, bad checksum, broken record) is set aside under a new name, logged, and
//! never trusted; the daemon starts with an empty mailbox. A file read at start is removed once
//! its messages are in memory, so a crash later cannot deliver them twice after the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::hub::mailbox::now_ms;
use crate::hub::Hub;
use crate::wire::mailbox_file::{self, Damage, Reader, Writer};

/// The mailbox's file in the state directory.
pub(crate) const MAILBOX_FILE: &str = "mailbox.bin";
/// Where it is written before the rename.
pub(crate) const MAILBOX_TEMP_FILE: &str = "mailbox.bin.tmp";
/// What a damaged file is renamed to, followed by the Unix time.
pub(crate) const SET_ASIDE_SUFFIX: &str = ".corrupt-";

/// Reads the mailbox back from `dir` at start, if a file is there; never fails the start.
pub(crate) fn load(hub: &Hub, dir: &Path) {
    // Left behind by a stop that was cut short: the file it was to replace is the good one.
    let _ = fs::remove_file(dir.join(MAILBOX_TEMP_FILE));
    let path = dir.join(MAILBOX_FILE);
    let len = match fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            log::warn!(
                "mailbox: cannot read {}: {e}; starting empty",
                path.display()
            );
            return;
        }
    };
    if !hub.mailbox.is_on() {
        log::info!(
            "mailbox: off (mailbox_messages = 0); {} left as it is",
            path.display()
        );
        return;
    }
    let verified = File::open(&path)
        .map_err(|e| Damage::Unreadable(e.kind()))
        .and_then(|f| mailbox_file::verify(BufReader::new(f), len));
    let (devices, messages) = match verified {
        Ok(counts) => counts,
        Err(Damage::Unreadable(kind)) => {
            log::warn!(
                "mailbox: cannot read {}: {kind}; starting empty",
                path.display()
            );
            return;
        }
        Err(damage) => {
            set_aside(&path, &damage);
            return;
        }
    };
    // Read a second time, now known whole: nothing of a damaged file is ever kept.
    let restored = File::open(&path)
        .map_err(|e| Damage::Unreadable(e.kind()))
        .and_then(|f| Reader::new(BufReader::new(f), len))
        .and_then(|mut reader| hub.mailbox.restore(&mut reader, hub.budget, now_ms()));
    match restored {
        Ok(kept) => log::info!(
            "mailbox: restored {kept} of {messages} messages for {devices} devices from {}",
            path.display()
        ),
        Err(damage) => log::warn!(
            "mailbox: {} changed while it was read ({damage}); kept what was read before",
            path.display()
        ),
    }
    if let Err(e) = fs::remove_file(&path).and_then(|()| sync_dir(dir)) {
        log::error!(
            "mailbox: cannot remove {} after reading it ({e}): after a crash its messages \
             would be delivered again",
            path.display()
        );
    }
}

/// Moves a damaged file out of the way, so the next clean stop can write a good one.
fn set_aside(path: &Path, damage: &Damage) {
    let secs = now_ms() / 1000;
    let mut name = path.as_os_str().to_owned();
    name.push(format!("{SET_ASIDE_SUFFIX}{secs}"));
    let aside = PathBuf::from(name);
    match fs::rename(path, &aside) {
        Ok(()) => log::warn!(
            "mailbox: {} is damaged ({damage}); set aside as {}; starting empty",
            path.display(),
            aside.display()
        ),
        Err(e) => log::error!(
            "mailbox: {} is damaged ({damage}) and cannot be set aside ({e}); starting empty",
            path.display()
        ),
    }
}

/// Writes the mailbox to `dir` on a clean stop; logs what it wrote, or why it could not.
pub(crate) fn save(hub: &Hub, dir: &Path) {
    if !hub.mailbox.is_on() {
        return;
    }
    let path = dir.join(MAILBOX_FILE);
    if hub.mailbox.len() == 0 {
        log::info!("mailbox: nothing kept, {} not written", path.display());
        return;
    }
    match write(hub, dir) {
        Ok((devices, messages)) => log::info!(
            "mailbox: wrote {messages} messages for {devices} devices to {}",
            path.display()
        ),
        Err(e) => {
            let _ = fs::remove_file(dir.join(MAILBOX_TEMP_FILE));
            log::error!(
                "mailbox: cannot write {}: {e}; the kept messages are lost",
                path.display()
            );
        }
    }
}

fn write(hub: &Hub, dir: &Path) -> io::Result<(usize, usize)> {
    fs::create_dir_all(dir)?;
    let temp = dir.join(MAILBOX_TEMP_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Frames may carry anything the upstream sent.
        .mode(0o600)
        .open(&temp)?;
    let mut writer = Writer::new(BufWriter::new(file))?;
    let counts = hub.mailbox.save(&mut writer)?;
    let file = writer
        .finish()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    fs::rename(&temp, dir.join(MAILBOX_FILE))?;
    sync_dir(dir)?;
    Ok(counts)
}

/// Flushes a directory's entries (a rename or a removal) to the disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
