//! Child processes that never outlive the load test, and what `/proc` says
//! about them.
//!
//! Every child (server, bots) starts in a process group of its own, led by
//! itself, and is registered in [`LIVE`]. It is stopped through its pid:
//! SIGTERM to its group, a grace period, then SIGKILL. That happens when its
//! [`ChildGuard`] is dropped (normal end, error, timeout, panic unwinding),
//! and on Ctrl-C or SIGTERM to xtask, whose handler ([`install_signal_handlers`])
//! stops every registered child before exiting, because `process::exit` runs
//! no destructors. Its own group also keeps a terminal's Ctrl-C from reaching
//! the server before xtask has collected its figures.
//!
//! Signals are sent with `nix`'s safe `killpg` (the workspace denies
//! `unsafe_code`).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{sysconf, Pid, SysconfVar};

/// Pids of children that are (or may be) still running.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A child process that is stopped, by pid, when this guard goes away.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    /// How long SIGTERM is given before SIGKILL.
    grace: Duration,
    /// Set once the child has been reaped.
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `command` in a process group of its own and registers it.
    ///
    /// # Errors
    /// The program cannot be started.
    pub fn spawn(command: &mut Command, name: &str, grace: Duration) -> Result<ChildGuard> {
        command.process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child.id());
        Ok(ChildGuard {
            child,
            name: name.to_owned(),
            grace,
            status: None,
        })
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has ended, without waiting.
    ///
    /// # Errors
    /// The status cannot be read.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("cannot check on {}", self.name))?;
            if self.status.is_some() {
                unregister(self.pid());
            }
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the child to end on its own (blocking: in
    /// the async runtime, call it through `block_in_place`).
    ///
    /// # Errors
    /// The status cannot be read.
    pub fn wait_for(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Asks the child to stop (SIGTERM to its group), waits up to the grace
    /// period, then kills the group. Returns the exit status and whether the
    /// child needed SIGKILL.
    ///
    /// # Errors
    /// The child could not be waited for.
    pub fn stop(&mut self) -> Result<(ExitStatus, bool)> {
        if let Some(status) = self.try_wait()? {
            // Leftover grandchildren of a finished child still go.
            signal_group(self.pid(), "KILL");
            return Ok((status, false));
        }
        signal_group(self.pid(), "TERM");
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                signal_group(self.pid(), "KILL");
                return Ok((status, false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.pid(), "KILL");
        // `Child::kill` also sends SIGKILL, by pid, should `kill` be missing.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .with_context(|| format!("cannot reap {}", self.name))?;
        self.status = Some(status);
        unregister(self.pid());
        Ok((status, true))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "xtask: could not stop {} (pid {}): {e:#}",
                self.name,
                self.pid()
            );
        }
    }
}

fn unregister(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|p| *p != pid);
}

/// Sends `signal` (`TERM` or `KILL`) to the process group led by `pid`.
/// A group that is already gone is not an error.
fn signal_group(pid: u32, signal: &str) {
    let signal = if signal == "KILL" {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Stops every registered child: SIGTERM, up to `grace`, then SIGKILL.
pub fn stop_all_children(grace: Duration) {
    let pids: Vec<u32> = LIVE.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if pids.is_empty() {
        return;
    }
    eprintln!(
        "xtask: stopping {} child process group(s): {pids:?}",
        pids.len()
    );
    for pid in &pids {
        signal_group(*pid, "TERM");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        signal_group(*pid, "KILL");
    }
}

/// Whether a process with this pid exists and has not been reaped yet
/// (a zombie still counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| stat_fields(&s).is_some_and(|f| f.first() != Some(&"Z")))
        .unwrap_or(false)
}

/// On Ctrl-C or SIGTERM: stop every child (SIGTERM, `grace`, SIGKILL), then
/// exit 130 / 143. Call once, inside the runtime.
///
/// # Errors
/// The handlers cannot be installed.
pub fn install_signal_handlers(grace: Duration) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        eprintln!("\nxtask: interrupted");
        stop_all_children(grace);
        std::process::exit(code);
    });
    Ok(())
}

/// What `/proc` says about a process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time so far, seconds.
    pub cpu_s: f64,
    /// Resident memory now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far (VmHWM), KiB.
    pub hwm_kib: u64,
}

/// The fields of `/proc/PID/stat` after the command name, starting with the
/// state (field 3); `None` if the text is not a stat line.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Clock ticks per second, as `/proc` counts CPU time.
fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// Parses `/proc/PID/stat` and `/proc/PID/status` text into a sample.
///
/// # Errors
/// Text that does not look like those files.
pub fn parse_proc(stat: &str, status: &str, ticks: f64) -> Result<ProcSample> {
    let fields = stat_fields(stat).context("no ')' in /proc stat")?;
    // Fields 14 and 15 (utime, stime) are at 11 and 12 counting from field 3.
    let tick = |i: usize| -> Result<f64> {
        let v: u64 = fields
            .get(i)
            .context("short /proc stat")?
            .parse()
            .context("bad CPU time in /proc stat")?;
        Ok(v as f64)
    };
    let cpu_s = (tick(11)? + tick(12)?) / ticks;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let sample = ProcSample {
        cpu_s,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    };
    if sample.rss_kib == 0 && sample.hwm_kib == 0 {
        bail!("no VmRSS/VmHWM in /proc status");
    }
    Ok(sample)
}

/// Samples process `pid` now.
///
/// # Errors
/// The process is gone or `/proc` is unreadable.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_proc(&stat, &status, clock_ticks())
}

/// The 1-minute load average, if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (janus (server)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 130 0 0 20 0 3 0 100 2000000 5000 18446744073709551615";
        let status = "Name:\tjanus-server\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        let s = parse_proc(stat, status, 100.0).unwrap();
        assert_eq!(s.cpu_s, 3.8);
        assert_eq!(s.rss_kib, 102_400);
        assert_eq!(s.hwm_kib, 204_800);
        assert!(parse_proc("garbage", status, 100.0).is_err());
        assert!(parse_proc(stat, "Name: x\n", 100.0).is_err());
    }

    #[test]
    fn our_own_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }

    #[test]
    fn a_guard_stops_its_child_and_its_group() {
        let mut cmd = Command::new("sh");
        // The shell's own child (sleep) is in the same group and must go too.
        cmd.args(["-c", "sleep 30 & wait"]);
        let mut guard = ChildGuard::spawn(&mut cmd, "sleeper", Duration::from_secs(2)).unwrap();
        let pid = guard.pid();
        assert!(LIVE.lock().unwrap().contains(&pid));
        let started = Instant::now();
        let (status, killed) = guard.stop().unwrap();
        assert!(!status.success());
        assert!(!killed, "sh exits on SIGTERM");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!LIVE.lock().unwrap().contains(&pid));
        drop(guard);
        // No live process is left in the group (zombies waiting for init are gone).
        let left = || -> Vec<u32> {
            let out = Command::new("pgrep")
                .args(["-g", &pid.to_string()])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|p| alive(*p))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(left().is_empty(), "left: {:?}", left());
    }

    #[test]
    fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; sleep 30"]);
        let mut guard =
            ChildGuard::spawn(&mut cmd, "stubborn", Duration::from_millis(300)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (_, killed) = guard.stop().unwrap();
        assert!(killed);
    }
}
