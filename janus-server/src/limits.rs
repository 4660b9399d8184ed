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

fn read() -> std::io::Result<FileLimit> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok(FileLimit { soft, hard })
}

fn set(soft: u64, hard: u64) -> std::io::Result<()> {
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard)
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
