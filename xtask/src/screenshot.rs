//! A picture of the HTML report, taken with headless Chromium when it is
//! installed (Debian: `apt-get install chromium`), so a reviewer can see
//! what a reader of the page sees without opening a browser.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Browser executables tried, in order.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// How long the browser may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The first browser of [`BROWSERS`] on `PATH`.
fn browser() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| BROWSERS.iter().map(move |b| dir.join(b)))
        .find(|p| p.is_file())
}

/// Screenshots `html` into `png`: 1280 px wide, tall enough for `height`
/// CSS pixels.
///
/// # Errors
/// No browser installed (the message says how to get one), or it failed or
/// took longer than a minute.
pub fn capture(html: &Path, png: &Path, height: u32) -> Result<()> {
    let Some(exe) = browser() else {
        bail!("chromium is not installed (apt-get install chromium)");
    };
    let profile = std::env::temp_dir().join(format!("xtask-chromium-{}", std::process::id()));
    let html =
        std::fs::canonicalize(html).with_context(|| format!("cannot find {}", html.display()))?;
    let _ = std::fs::remove_file(png);
    let mut command = Command::new(&exe);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size=1280,{height}"))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child =
        crate::process::ChildGuard::spawn(&mut command, "chromium", Duration::from_secs(2))?;
    let status = child.wait_for(LIMIT)?;
    drop(child);
    let _ = std::fs::remove_dir_all(&profile);
    match status {
        None => bail!("{} took longer than {LIMIT:?}", exe.display()),
        Some(_) if png.is_file() => Ok(()),
        Some(s) => bail!("{} wrote no screenshot ({s})", exe.display()),
    }
}
