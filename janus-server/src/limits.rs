//! The open-file limit: raised to the hard limit at start-up, and turned
//! into the number of clients one process can hold.

/// File descriptors kept back for listeners, the admin API, logs and the
/// spare descriptor used to refuse connections politely when full.
pub const RESERVED_FDS: u64 = 64;

/// The open-file limits after trying to raise the soft one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit (the ceiling for the soft one).
    pub hard: u64,
}

impl FileLimit {
    /// Client connections that fit in the soft limit.
    pub fn connection_capacity(self) -> usize {
        usize::try_from(self.soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX)
    }
}

/// Raises the soft open-file limit to the hard limit and reports both.
///
/// # Errors
/// The OS error if the limits cannot be read; failing to raise is not an
/// error (the current limit is reported instead).
pub fn raise_nofile_limit() -> std::io::Result<FileLimit> {
    let mut lim = read()?;
    if lim.soft < lim.hard && set(lim.hard, lim.hard).is_ok() {
        lim = read()?;
    }
    Ok(lim)
}

#[allow(unsafe_code)]
fn read() -> std::io::Result<FileLimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FileLimit {
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    })
}

#[allow(unsafe_code)]
fn set(soft: u64, hard: u64) -> std::io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let lim = raise_nofile_limit().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert_eq!(lim.connection_capacity() as u64, lim.soft - RESERVED_FDS);
    }
}
