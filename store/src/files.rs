//! File system helpers: private modes, durable writes, overwrite-then-unlink.
//!
//! Nothing here puts a path into an error message: errors carry an `io::ErrorKind` only.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory the store creates or owns.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates or owns.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700, and sets `dir` itself to 0700 if it existed.
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    set_mode(dir, DIR_MODE)
}

/// Sets a path's permission bits if they differ (does not follow the mode of a symlink's target:
/// callers only pass paths they found with `symlink_metadata` or created themselves).
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let metadata = fs::symlink_metadata(path)?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    if metadata.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Sets every directory under `root` (and `root`) to 0700 and every file to 0600. Symlinks are left
/// alone and not followed. Entries that vanish during the walk (fjall compacts in the background)
/// are skipped.
pub(crate) fn tighten_tree(root: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = if metadata.is_dir() {
        set_mode(root, DIR_MODE).and_then(|()| {
            for entry in fs::read_dir(root)? {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                tighten_tree(&entry.path())?;
            }
            Ok(())
        })
    } else if metadata.is_file() {
        set_mode(root, FILE_MODE)
    } else {
        Ok(())
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens (creating it with mode 0600 if needed) a file for writing, without truncating it.
pub(crate) fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(path)
}

/// Writes `bytes` to `path` durably and atomically: a temporary file `temp` in the same directory
/// (mode 0600) is written and fsynced, renamed over `path`, and the directory is fsynced. After a
/// crash, `path` is either absent (or its old content) or complete; never partial.
pub(crate) fn write_atomic(dir: &Path, temp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)?;
    sync_dir(dir)
}

/// Overwrites a file's bytes with zeros (fsynced), then unlinks it. A missing file is not an error.
/// The directory is not fsynced here (the caller does that once for a group of removals).
///
/// Overwriting is defence in depth for file systems that rewrite blocks in place; the guarantee the
/// store gives ("no file under the data directory holds the record") comes from the unlink.
pub(crate) fn overwrite_and_remove(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).open(path) {
        Ok(mut file) => {
            let len = file.metadata()?.len();
            let zeros = [0u8; 4096];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_data()?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_file_is_zeroed_first_as_another_link_to_it_shows() {
        let temp = tempfile::tempdir().expect("temp dir");
        let path = temp.path().join("record");
        let other = temp.path().join("other link");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        fs::write(&path, &content).expect("written");
        fs::hard_link(&path, &other).expect("linked");
        overwrite_and_remove(&path).expect("removed");
        assert!(!path.exists());
        assert_eq!(fs::read(&other).expect("read"), vec![0; content.len()], "same length, all zeros");
        overwrite_and_remove(&path).expect("a missing file is not an error");
    }

    #[test]
    fn tightening_a_path_that_cannot_exist_is_an_error_and_a_missing_one_is_not() {
        let temp = tempfile::tempdir().expect("temp dir");
        let file = temp.path().join("file");
        fs::write(&file, b"x").expect("written");
        let error = tighten_tree(&file.join("below a file")).expect_err("not a directory");
        assert_eq!(error.kind(), io::ErrorKind::NotADirectory);
        tighten_tree(&temp.path().join("missing")).expect("nothing to tighten");
    }
}
