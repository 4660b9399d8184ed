//! The few operating-system calls the standard library does not offer: the
//! shared monotonic clock, the process's CPU time, the open-file limit and
//! one socket option, each through `nix`'s safe wrappers (this crate has no
//! `unsafe` code at all).

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use nix::time::{clock_gettime, ClockId};

/// Nanoseconds of `clock`, or 0 if it cannot be read.
fn clock_ns(clock: ClockId) -> u64 {
    let Ok(ts) = clock_gettime(clock) else {
        return 0;
    };
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Nanoseconds on `CLOCK_MONOTONIC`.
///
/// `std::time::Instant` reads the same clock but cannot be serialized, and its
/// epoch is private to the process. Raw `CLOCK_MONOTONIC` nanoseconds are the
/// same number in every process of one machine, which is what lets a worker
/// process compare its receive instant with the coordinator's send instant.
pub fn monotonic_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Duration {
    Duration::from_nanos(clock_ns(ClockId::CLOCK_PROCESS_CPUTIME_ID))
}

/// Raises the soft open-file limit to the hard limit and returns the new soft
/// limit.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`, so that binding a client socket to a
/// source address leaves the port to `connect`.
///
/// Without it, `bind(ip, 0)` picks a port unique across every destination,
/// and one source address runs out after ~28,000 clients however many
/// servers they reach; with it, the port only has to be unique per
/// destination.
///
/// # Errors
/// When the kernel refuses the option.
pub fn set_bind_address_no_port(socket: &impl AsFd) -> io::Result<()> {
    setsockopt(socket, IpBindAddressNoPort, &true).map_err(io::Error::from)
}

/// Resident memory (`VmRSS`) of process `pid` on this machine, in KiB.
///
/// # Errors
/// When `/proc/PID/status` cannot be read or has no `VmRSS` line (the
/// process is gone, or this is not Linux).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// The name of process `pid` on this machine (`/proc/PID/comm`: the
/// executable's name, at most 15 bytes).
///
/// # Errors
/// [`io::ErrorKind::NotFound`] when there is no such process; other errors
/// when `/proc` cannot be read (not Linux).
pub fn process_name(pid: u32) -> io::Result<String> {
    if pid == 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, "pid 0"));
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    Ok(comm.trim_end_matches('\n').to_owned())
}

/// The name a Janus server process has (`/proc/PID/comm`).
pub const SERVER_PROCESS_NAME: &str = "janus-server";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward_and_matches_instant_rate() {
        let a = monotonic_ns();
        let i = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic_ns();
        let elapsed = i.elapsed().as_nanos() as u64;
        assert!(b > a);
        // Same clock as Instant: the two measures agree within a millisecond.
        assert!(
            (b - a).abs_diff(elapsed) < 1_000_000,
            "{} vs {elapsed}",
            b - a
        );
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time() > before);
    }

    #[test]
    fn open_file_limit_is_readable() {
        assert!(raise_open_file_limit().unwrap() >= 64);
    }

    #[test]
    fn own_memory_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(rss_kib(u32::MAX).is_err());
    }

    #[test]
    fn process_names_are_read() {
        let own = process_name(std::process::id()).unwrap();
        assert!(!own.is_empty() && !own.ends_with('\n'), "{own:?}");
        let gone = process_name(u32::MAX).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        assert_eq!(process_name(0).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn bind_address_no_port_is_accepted() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_bind_address_no_port(&s).unwrap();
    }
}
