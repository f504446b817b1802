//! Process hardening for `keyward serve`: no core dumps, no ptrace-style reading by other users'
//! processes, and the vault's memory locked so it is never written to swap.
//!
//! * `prctl(PR_SET_DUMPABLE, 0)`: no core dump, and `/proc/PID/mem` is closed to every process
//!   without `CAP_SYS_PTRACE`;
//! * `setrlimit(RLIMIT_CORE, 0)`: no core file even if something turns dumping back on;
//! * `mlock` of the vault's block of masked seeds, where `RLIMIT_MEMLOCK` allows (a warning otherwise);
//! * a warning for each of the data directory, `tls/` and `store/` that other users can open
//!   ([`open_to_others`]).
#![expect(unsafe_code, reason = "the libc calls this module exists for")]

use std::io;

/// What hardening achieved.
#[derive(Debug)]
pub struct Report {
    /// Core dumps and memory reading by unprivileged processes are off.
    pub not_dumpable: io::Result<()>,
    /// The core file size limit is zero.
    pub no_core_files: io::Result<()>,
}

/// Turns core dumps off for this process.
pub fn process() -> Report {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments and touches no memory of ours.
    let dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let not_dumpable = if dumpable == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    let limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit that lives across the call; setrlimit only reads it.
    let core = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) };
    let no_core_files = if core == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    Report { not_dumpable, no_core_files }
}

/// Those of `dirs` that exist and that group or others may read, write or enter (`mode & 0o077`),
/// with their mode.
pub fn open_to_others(dirs: &[&std::path::Path]) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    dirs.iter()
        .filter_map(|dir| {
            let mode = std::fs::metadata(dir).ok().filter(std::fs::Metadata::is_dir)?.permissions().mode() & 0o7777;
            (mode & 0o077 != 0).then(|| (dir.to_path_buf(), mode))
        })
        .collect()
}

/// Whether this process may be dumped (1) or not (0), as the kernel says.
pub fn dumpable() -> i32 {
    // SAFETY: PR_GET_DUMPABLE takes no pointer and returns the flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
}

/// Locks the pages spanning `[addr, addr + len)` in memory.
pub fn lock(addr: usize, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: sysconf has no memory effects.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let start = addr - addr % page;
    let end = (addr + len).div_ceil(page) * page;
    // SAFETY: mlock only changes whether these pages may be swapped; `start..end` covers memory this
    // process owns (the vault's block, rounded out to whole pages), which stays mapped while it runs.
    let locked = unsafe { libc::mlock(start as *const libc::c_void, end - start) };
    if locked == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// This process's effective uid (the Unix socket's own user).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_turns_dumping_off_and_locks_memory() {
        let report = process();
        assert!(report.not_dumpable.is_ok() && report.no_core_files.is_ok(), "{report:?}");
        assert_eq!(dumpable(), 0);
        let block = vec![7u8; 10_000];
        // Root or a sufficient RLIMIT_MEMLOCK: locking works here, as on the CI machine.
        lock(block.as_ptr() as usize, block.len()).expect("mlock");
    }
}
