//! The memory limit of the cgroup the daemon runs in: cgroup v2 `memory.max` (systemd's
//! `MemoryMax=`) or cgroup v1 `memory.limit_in_bytes`, the smallest along the path to the
//! root, since every ancestor's limit applies too.
//!
//! Parsing is separate from reading so that the unit tests run on fixture files.

use std::path::{Path, PathBuf};

/// cgroup v1 writes "no limit" as a huge page-aligned number; anything from here up is none.
pub const V1_UNLIMITED_FROM_BYTES: u64 = 1 << 62;

/// The limit found, and the file that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The limit, in bytes.
    pub bytes: u64,
    /// The control file holding it.
    pub file: PathBuf,
}

/// What the search found besides a limit: why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLimit {
    /// The process is in no memory cgroup this code can find (no cgroup file, no mount).
    NoCgroup,
    /// The cgroup and its ancestors set no limit (`max`, or v1's "unlimited").
    Unlimited,
    /// A control file held something that is not a limit; named so the operator can look.
    Garbage(PathBuf),
}

/// The process's memory limit, from `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub fn memory_limit() -> Result<MemoryLimit, NoLimit> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let cgroup = read(Path::new("/proc/self/cgroup")).ok_or(NoLimit::NoCgroup)?;
    let mountinfo = read(Path::new("/proc/self/mountinfo")).ok_or(NoLimit::NoCgroup)?;
    find_limit(&cgroup, &mountinfo, read)
}

/// The limit for a process whose `/proc/self/cgroup` and `/proc/self/mountinfo` are given,
/// reading control files with `read`. cgroup v2 is preferred when the process is in a v2
/// memory hierarchy; else v1's `memory` controller.
pub fn find_limit(
    cgroup: &str,
    mountinfo: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Result<MemoryLimit, NoLimit> {
    let mut found = Err(NoLimit::NoCgroup);
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "memory") {
            continue;
        }
        let Some(dir) = mount_dir(mountinfo, v2, path) else {
            continue;
        };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        // A v2 line exists on hybrid systems whose memory controller lives in v1: only a
        // directory that has the control file counts.
        if read(&dir.join(file)).is_none() {
            continue;
        }
        let limit = smallest_up_to_root(&dir, path, file, v2, &read);
        match limit {
            Ok(l) => return Ok(l),
            Err(NoLimit::Garbage(f)) => return Err(NoLimit::Garbage(f)),
            Err(other) => found = Err(other),
        }
    }
    found
}

/// The directory of cgroup `path` under the mount of the right kind, from mountinfo:
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPEROPTIONS`.
fn mount_dir(mountinfo: &str, v2: bool, path: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = left.split(' ');
        let (Some(root), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let mut tail = right.split(' ');
        let fstype = tail.next().unwrap_or("");
        let options = tail.nth(1).unwrap_or("");
        let wanted = if v2 {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup" && options.split(',').any(|o| o == "memory")
        };
        if !wanted {
            continue;
        }
        // Inside a cgroup namespace the mount's root is a subtree: the path is below it.
        let relative = path.strip_prefix(root).unwrap_or(path);
        let mut dir = PathBuf::from(unescape_mount_point(mount_point));
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            if part == ".." {
                return None;
            }
            dir.push(part);
        }
        return Some(dir);
    }
    None
}

/// mountinfo writes space, tab, newline and backslash in octal (`\040`).
fn unescape_mount_point(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The smallest limit in `dir` and each parent directory of it that belongs to the cgroup
/// hierarchy (as many levels as `path` has).
fn smallest_up_to_root(
    dir: &Path,
    path: &str,
    file: &str,
    v2: bool,
    read: &impl Fn(&Path) -> Option<String>,
) -> Result<MemoryLimit, NoLimit> {
    let levels = path.split('/').filter(|p| !p.is_empty()).count();
    let mut best: Option<MemoryLimit> = None;
    let mut here = dir.to_path_buf();
    for _ in 0..=levels {
        let control = here.join(file);
        if let Some(text) = read(&control) {
            match parse_limit(&text, v2) {
                Some(Some(bytes)) => {
                    if best.as_ref().is_none_or(|b| bytes < b.bytes) {
                        best = Some(MemoryLimit {
                            bytes,
                            file: control,
                        });
                    }
                }
                Some(None) => {}
                None => return Err(NoLimit::Garbage(control)),
            }
        }
        if !here.pop() {
            break;
        }
    }
    best.ok_or(NoLimit::Unlimited)
}

/// A control file's value: `Some(None)` for no limit, `None` when it is no value at all.
fn parse_limit(text: &str, v2: bool) -> Option<Option<u64>> {
    let text = text.trim();
    if v2 && text == "max" {
        return Some(None);
    }
    let bytes: u64 = text.parse().ok()?;
    Some(if !v2 && bytes >= V1_UNLIMITED_FROM_BYTES {
        None
    } else {
        Some(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const V2_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
28 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
";
    const V1_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = pairs
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_string()))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    #[test]
    fn v2_memory_max_of_the_service() {
        let read = files(&[
            (
                "/sys/fs/cgroup/system.slice/wssed.service/memory.max",
                "134217728\n",
            ),
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
        ]);
        let got = find_limit("0::/system.slice/wssed.service\n", V2_MOUNTINFO, read);
        assert_eq!(
            got,
            Ok(MemoryLimit {
                bytes: 134_217_728,
                file: PathBuf::from("/sys/fs/cgroup/system.slice/wssed.service/memory.max"),
            })
        );
    }

    #[test]
    fn an_ancestor_with_a_smaller_limit_wins() {
        let read = files(&[
            ("/sys/fs/cgroup/a/b/memory.max", "max"),
            ("/sys/fs/cgroup/a/memory.max", "1048576"),
        ]);
        let got = find_limit("0::/a/b\n", V2_MOUNTINFO, read).map(|l| l.bytes);
        assert_eq!(got, Ok(1_048_576));
    }

    #[test]
    fn v2_max_everywhere_is_unlimited() {
        let read = files(&[("/sys/fs/cgroup/x/memory.max", "max\n")]);
        assert_eq!(
            find_limit("0::/x\n", V2_MOUNTINFO, read),
            Err(NoLimit::Unlimited)
        );
    }

    #[test]
    fn v1_limit_in_bytes_and_its_unlimited_value() {
        let cgroup = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
                "268435456\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(
            find_limit(cgroup, V1_MOUNTINFO, read).map(|l| l.bytes),
            Ok(268_435_456)
        );
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(
            find_limit(cgroup, V1_MOUNTINFO, read),
            Err(NoLimit::Unlimited)
        );
    }

    #[test]
    fn missing_files_mean_no_cgroup() {
        assert_eq!(
            find_limit("0::/x\n", V2_MOUNTINFO, files(&[])),
            Err(NoLimit::NoCgroup)
        );
        assert_eq!(find_limit("", "", files(&[])), Err(NoLimit::NoCgroup));
        assert_eq!(
            find_limit("garbage line\n", V2_MOUNTINFO, files(&[])),
            Err(NoLimit::NoCgroup)
        );
    }

    #[test]
    fn garbage_in_a_control_file_is_named() {
        let read = files(&[("/sys/fs/cgroup/x/memory.max", "lots\n")]);
        assert_eq!(
            find_limit("0::/x\n", V2_MOUNTINFO, read),
            Err(NoLimit::Garbage(PathBuf::from(
                "/sys/fs/cgroup/x/memory.max"
            )))
        );
    }

    #[test]
    fn a_namespaced_mount_root_is_stripped_and_dot_dot_refused() {
        let mountinfo = "28 24 0:25 /lxc/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let read = files(&[("/sys/fs/cgroup/app/memory.max", "4096")]);
        assert_eq!(
            find_limit("0::/lxc/c1/app\n", mountinfo, read).map(|l| l.bytes),
            Ok(4096)
        );
        let read = files(&[("/sys/fs/cgroup/memory.max", "4096")]);
        assert_eq!(
            find_limit("0::/../x\n", V2_MOUNTINFO, read),
            Err(NoLimit::NoCgroup)
        );
    }
}
