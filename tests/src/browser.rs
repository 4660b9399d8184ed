//! Headless Chromium driven over WebDriver (`chromedriver` and the
//! `fantoccini` client), for the tests of the admin page and of browser
//! WebSocket clients.
//!
//! [`Browser::start`] returns `None`, after printing why, only when
//! Chromium or ChromeDriver is not installed and `JANUS_REQUIRE_BROWSER` is
//! unset; `.ci/run` sets it, so on CI a missing browser fails the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::TIMEOUT;

/// A running ChromeDriver with one headless Chromium session.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

fn installed(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a session with a fresh profile.
    pub async fn start() -> Option<Browser> {
        if !(installed("chromium") && installed("chromedriver")) {
            assert!(
                std::env::var_os("JANUS_REQUIRE_BROWSER").is_none(),
                "JANUS_REQUIRE_BROWSER is set but chromium or chromedriver is missing \
                 (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED: chromium or chromedriver is not installed \
                 (apt-get install chromium chromium-driver); CI runs this test"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // In a process group of its own, so that Chromium goes with it.
        use std::os::unix::process::CommandExt;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile =
            std::env::temp_dir().join(format!("janus-test-chromium-{}-{port}", std::process::id()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1400,1800",
                format!("--user-data-dir={}", profile.display()),
            ]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    // ChromeDriver is still starting.
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Some(Browser {
            client,
            driver,
            profile,
        })
    }

    /// Waits until the element `css` exists and its text satisfies `cond`; returns the text.
    pub async fn wait_text(&self, css: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if cond(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {css} shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element `css`, once it exists.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Types `text` into the element `css` (replacing what it holds).
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.element(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.expect("click");
    }

    /// Opens `url` and waits until the element `css` shows `text`.
    pub async fn open(&self, url: &str, css: &str, text: &str) {
        self.client.goto(url).await.expect("open the page");
        self.wait_text(css, text, |t| t == text).await;
    }

    /// Saves a screenshot of the page at `path` (a PNG).
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("output directory");
        }
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// Ends the session (Chromium exits) and stops ChromeDriver.
    pub async fn finish(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(TIMEOUT, client.close()).await;
        self.stop_driver();
    }

    /// Kills ChromeDriver's process group (Chromium with it, if a failed
    /// test left it running).
    fn stop_driver(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop_driver();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
