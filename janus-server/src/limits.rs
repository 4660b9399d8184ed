//! The open-file limit: raised to the hard limit at start-up, and turned
//! into the number of clients one process can hold; and the process's
//! memory pages, kept small.

/// File descriptors kept back for the process itself: listeners, the
/// runtimes' event descriptors, standard streams, logs, the backplane's
/// connections and the spare descriptor used to refuse connections politely
/// when out of them (the server holds about 15 when idle).
pub const BASE_FDS: u64 = 32;

/// Refused connections that may linger (each holding its descriptor for up
/// to a second) so that the client reads why it was refused.
pub const REFUSALS_LINGERING: u64 = 32;

/// Descriptors kept back from clients whatever the configuration.
pub const RESERVED_FDS: u64 = BASE_FDS + REFUSALS_LINGERING;

/// The open-file limits after trying to raise the soft one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit (the ceiling for the soft one).
    pub hard: u64,
}

impl FileLimit {
    /// Client connections that fit in the soft limit once [`RESERVED_FDS`]
    /// and `admin_connections` (the admin API's own cap, 0 when it is off)
    /// are kept back.
    pub fn connection_capacity(self, admin_connections: usize) -> usize {
        let reserved = RESERVED_FDS.saturating_add(admin_connections as u64);
        usize::try_from(self.soft.saturating_sub(reserved)).unwrap_or(usize::MAX)
    }

    /// The open-file limits of this process now.
    ///
    /// # Errors
    /// The OS error if they cannot be read.
    pub fn current() -> std::io::Result<FileLimit> {
        read()
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

/// Turns transparent huge pages off for this process (as Redis does by
/// default). The allocator asks for them; then the first touch of a fresh
/// 2 MiB region zeroes all of it while a client waits, resident memory grows
/// in 2 MiB steps, and after a burst the kernel's `khugepaged` merges
/// half-used pages into huge ones, so an idle server's memory grows by
/// itself (figures under "Huge pages off" in ARCHITECTURE.md).
///
/// # Errors
/// The OS error if the kernel refuses (older than Linux 3.15).
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from)
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
        assert_eq!(lim.connection_capacity(0) as u64, lim.soft - RESERVED_FDS);
        assert_eq!(
            lim.connection_capacity(100) as u64,
            lim.soft - RESERVED_FDS - 100
        );
        let tiny = FileLimit { soft: 80, hard: 80 };
        assert_eq!(tiny.connection_capacity(64), 0);
    }
}
