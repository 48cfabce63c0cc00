//! Headless Chromium driven through WebDriver, for the dashboard's browser
//! test: Debian's `chromium` and `chromium-driver` (installed by
//! `scripts/test`), a private chromedriver on a free loopback port and a
//! throwaway profile, both removed when the [`Browser`] is dropped.
//!
//! The few W3C WebDriver commands the test needs (a session, navigation,
//! finding, reading and clicking elements, typing, scripts, screenshots,
//! the window's size) are JSON over HTTP, sent with [`crate::http`].
//! Every wait is bounded by [`WAIT`]. The page redraws itself every two
//! seconds, so an element may go stale between finding and using it:
//! [`Browser::click`] and the waits find it again.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::http::request;
use crate::{Process, WAIT, scratch_dir};

/// The browser window: a laptop's width.
pub const WINDOW: (u32, u32) = (1280, 900);

/// WebDriver's code of the Tab key, for [`Browser::press`].
pub const TAB: &str = "\u{E004}";
/// WebDriver's code of the Enter key.
pub const ENTER: &str = "\u{E007}";

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session and the chromedriver behind it.
pub struct Browser {
    driver_addr: SocketAddr,
    session: String,
    driver: Process,
    profile: PathBuf,
}

/// Why a WebDriver command failed: its error name and message.
#[derive(Debug)]
pub struct CommandError(pub String);

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
        let chromium = program("chromium", "chromium");
        let port = free_port();
        let mut command = Command::new(program("chromedriver", "chromium-driver"));
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            // A group of its own with Chromium's processes, all killed on
            // drop even when the test fails before closing the session.
            .process_group(0);
        let driver = Process::spawn(command);
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = scratch_dir(&format!("chromium-{name}"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
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
                    "--disable-crash-reporter",
                    "--disable-breakpad",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let deadline = Instant::now() + WAIT;
        // chromedriver refuses connections until it listens.
        while tokio::net::TcpStream::connect(driver_addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within {WAIT:?}:\n{}",
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let session = loop {
            match Self::command_at(driver_addr, Method::POST, "/session", Some(&capabilities)).await
            {
                Ok(value) => break value["sessionId"].as_str().unwrap().to_owned(),
                Err(e) if Instant::now() >= deadline => panic!(
                    "no Chromium session from chromedriver within {WAIT:?}: {e:?}\n{}",
                    driver.log()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Self {
            driver_addr,
            session,
            driver,
            profile,
        }
    }

    /// One WebDriver command to chromedriver at `addr`: its `value`.
    async fn command_at(
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CommandError> {
        let reply = request(addr, method, path, &[], body).await;
        let mut answer: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| CommandError(format!("{}: not JSON: {e}", reply.status)))?;
        let value = answer["value"].take();
        if reply.status == StatusCode::OK {
            Ok(value)
        } else {
            Err(CommandError(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or_default()
            )))
        }
    }

    /// A command of this session (`path` after `/session/{id}`).
    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CommandError> {
        let path = format!("/session/{}{path}", self.session);
        Self::command_at(self.driver_addr, method, &path, body.as_ref()).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e:?}"));
    }

    /// Runs `script` (a function body) in the page; returns its value.
    pub async fn run(&self, script: &str) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
        .unwrap_or_else(|e| panic!("running {script:?}: {e:?}"))
    }

    /// Resizes the window.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .unwrap();
    }

    /// The first element matching `css`, if any.
    async fn find(&self, css: &str) -> Result<String, CommandError> {
        let found = self
            .command(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found[ELEMENT].as_str().unwrap_or_default().to_owned())
    }

    /// The text of the first element matching `css`.
    async fn text(&self, css: &str) -> Result<String, CommandError> {
        let element = self.find(css).await?;
        let text = self
            .command(Method::GET, &format!("/element/{element}/text"), None)
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Retries `step` until it succeeds, at most [`WAIT`]; then fails
    /// saying `what` and what the page's main part shows.
    async fn retry<T, F, Fut>(&self, what: &str, mut step: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CommandError>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            let error = match step().await {
                Ok(value) => return value,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let main = self.text("main").await.unwrap_or_default();
                panic!(
                    "waited {WAIT:?} for {what} ({}); the page says:\n{main}",
                    error.0
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matching `css` exists and its text contains
    /// `text`; fails naming both, with the page's main text.
    pub async fn wait_for_text(&self, css: &str, text: &str) {
        self.retry(&format!("{css:?} to say {text:?}"), || async {
            let found = self.text(css).await?;
            if found.contains(text) {
                Ok(())
            } else {
                Err(CommandError(format!("it says {found:?}")))
            }
        })
        .await;
    }

    /// Clicks the element matching `css`, once it exists.
    pub async fn click(&self, css: &str) {
        self.retry(&format!("{css:?} to click"), || async {
            let element = self.find(css).await?;
            self.command(
                Method::POST,
                &format!("/element/{element}/click"),
                Some(json!({})),
            )
            .await
            .map(|_| ())
        })
        .await;
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.retry(&format!("{css:?} to type into"), || async {
            let element = self.find(css).await?;
            self.command(
                Method::POST,
                &format!("/element/{element}/value"),
                Some(json!({ "text": text })),
            )
            .await
            .map(|_| ())
        })
        .await;
    }

    /// Presses and releases `key` (a character, or a WebDriver key code
    /// such as [`TAB`] or [`ENTER`]) on the focused element.
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{
            "type": "key",
            "id": "keyboard",
            "actions": [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}],
        }]});
        self.command(Method::POST, "/actions", Some(actions))
            .await
            .unwrap_or_else(|e| panic!("pressing {key:?}: {e:?}"));
    }

    /// Writes a PNG of the window to `dir/name.png`; returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self
            .command(Method::GET, "/screenshot", None)
            .await
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (closing Chromium); the driver stops on drop.
    pub async fn close(self) {
        let _ = self.command(Method::DELETE, "", None).await;
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
