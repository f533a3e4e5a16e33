//! `"pidFile"`: the file that holds the pid of the sluice that serves. Written at start (by
//! the new process after an upgrade, once it serves), written again by a process whose
//! upgrade failed, and removed at a clean exit only by the process whose pid it holds, so it
//! follows the live process through an upgrade. Called by [`crate::ops::lifecycle`].

use std::io::{self, Write};
use std::path::Path;

/// Writes this process's pid to `path` whole: to a file beside it, then renamed over it, so
/// a reader never sees half a pid.
pub fn write(path: &Path) -> io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// The pid `path` holds, if it holds one.
pub fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes `path` if it holds this process's pid (another process took it over otherwise).
pub fn remove_if_ours(path: &Path) -> io::Result<()> {
    if read(path) == Some(std::process::id()) {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_removed_only_while_it_holds_our_pid() {
        let dir = std::env::temp_dir().join(format!("sluice-pid-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.pid");
        write(&path).unwrap();
        assert_eq!(read(&path), Some(std::process::id()));
        std::fs::write(&path, "1\n").unwrap();
        remove_if_ours(&path).unwrap();
        assert_eq!(read(&path), Some(1), "another process's file stays");
        write(&path).unwrap();
        remove_if_ours(&path).unwrap();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
