//! Headless Chromium driven through WebDriver, for the dashboard's browser
//! test: Debian's `chromium` and `chromium-driver` (installed by
//! `scripts/test`), a private chromedriver on a free loopback port and a
//! throwaway profile, both removed when the [`Browser`] is dropped.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::{Process, WAIT, scratch_dir};

/// The browser window: a laptop's width.
pub const WINDOW: (u32, u32) = (1280, 900);

/// A Chromium session and the chromedriver behind it.
pub struct Browser {
    pub client: Client,
    driver: Process,
    profile: PathBuf,
}

/// The path of `name` on PATH or under /usr/bin, or a message saying how
/// to install it.
fn program(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: scripts/test installs it (apt-get install {package})")
        })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of [`WINDOW`]'s size.
    pub async fn start(name: &str) -> Self {
        let driver_path = program("chromedriver", "chromium-driver");
        let chromium = program("chromium", "chromium");
        let port = free_port();
        let mut command = Command::new(driver_path);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            // A group of its own with Chromium's processes, all killed on
            // drop even when the test fails before closing the session.
            .process_group(0);
        let driver = Process::spawn(command);
        let profile = scratch_dir(&format!("chromium-{name}"));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Root (CI) cannot use Chromium's sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "no Chromium session from chromedriver within {WAIT:?}: {e}\n{}",
                    driver.log()
                ),
            }
        };
        Self {
            client,
            driver: driver,
            profile,
        }
    }

    /// Waits until an element matching `css` exists and its text contains
    /// `text`; returns it. Fails naming both, with the page's main text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.text().await.is_ok_and(|t| t.contains(text))
            {
                return element;
            }
            if Instant::now() >= deadline {
                let main = match self.client.find(Locator::Css("main")).await {
                    Ok(main) => main.text().await.unwrap_or_default(),
                    Err(e) => format!("(no main: {e})"),
                };
                panic!("waited {WAIT:?} for {css:?} to say {text:?}; the page says:\n{main}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element matching `css`, once it exists.
    pub async fn click(&self, css: &str) {
        let element = self.wait_for_text(css, "").await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css:?}: {e}"));
    }

    /// Writes a PNG of the window to `dir/name.png`; returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (closing Chromium); the driver stops on drop.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.driver.pid()), Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
