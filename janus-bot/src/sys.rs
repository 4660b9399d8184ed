//! The few operating-system calls the standard library does not offer.
//!
//! Everything `unsafe` in this crate lives here, one small function per call:
//! the shared monotonic clock, the process's CPU time, the open-file limit and
//! one socket option. Each wraps a single libc call whose arguments are plain
//! values or pointers to locals.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Nanoseconds on `CLOCK_MONOTONIC`.
///
/// `std::time::Instant` reads the same clock but cannot be serialized, and its
/// epoch is private to the process. Raw `CLOCK_MONOTONIC` nanoseconds are the
/// same number in every process of one machine, which is what lets a worker
/// process compare its receive instant with the coordinator's send instant.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call, and
    // CLOCK_MONOTONIC is always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// Raises the soft open-file limit to the hard limit and returns the new soft
/// limit.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
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
pub fn set_bind_address_no_port(socket: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is open for the duration of the call (borrowed
    // from `socket`), and the option value points to a c_int local whose size
    // is passed along.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

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
}
