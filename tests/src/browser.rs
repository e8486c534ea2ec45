//! A real headless browser for the web UI's tests: Debian's `chromium`, driven by
//! its `chromedriver` over WebDriver (`fantoccini`) on a free loopback port, with a
//! profile of its own. The driver and the browser it starts share one process group,
//! killed when the [`Browser`] is dropped. Screenshots go to
//! `target/test-artifacts/<test>/`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

pub struct Browser {
    pub client: Client,
    driver: Child,
    artifacts: PathBuf,
    _profile: tempfile::TempDir,
}

/// Where a test's artifacts (screenshots) are kept: beside the build, not in a
/// temporary directory, so CI and operators can look at them after the run.
pub fn artifacts_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-artifacts").join(test)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width`×`height`.
    pub async fn start(test: &str, width: u32, height: u32) -> anyhow::Result<Browser> {
        let chromium = which("chromium")?;
        let chromedriver = which("chromedriver")?;
        let profile = tempfile::Builder::new().prefix("orch-chromium-").tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; runs in the child before exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let driver = command.spawn().with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                // The driver is still starting.
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => bail!("chromedriver on {url} gave no session within 30 s: {e}"),
            }
        };
        let artifacts = artifacts_dir(test);
        std::fs::create_dir_all(&artifacts)?;
        Ok(Browser { client, driver, artifacts, _profile: profile })
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await.with_context(|| format!("opening {url}"))
    }

    /// The first element matching `css`, waiting up to `limit` for it.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(limit)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element `{css}` within {limit:?}"))
    }

    /// Clicks the first element matching `css` from inside the page, waiting up to
    /// `limit` for one: a live page redraws often, and an element found by WebDriver
    /// one moment may be replaced the next.
    pub async fn click(&self, css: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let clicked = self
                .eval(
                    "const e = document.querySelector(arguments[0]); if (!e || e.disabled) return false; e.click(); return true;",
                    vec![Value::String(css.to_string())],
                )
                .await?;
            if clicked == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing to click at `{css}` within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        Ok(self.client.find_all(Locator::Css(css)).await?.len())
    }

    /// Runs `script` (a function body: `return ...`) with `args` in the page.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client.execute(script, args).await.with_context(|| format!("running {script}"))
    }

    /// Waits until `script` returns `true`, up to `limit`; its last value otherwise.
    pub async fn wait_true(&self, script: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(script, vec![]).await?;
            if v == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("`{script}` never held within {limit:?} (last {v})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window as `<name>.png` among the test's artifacts.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Ends the session (the browser quits), then the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill();
    }

    fn kill(&mut self) {
        // SAFETY: signals the process group this struct started (chromedriver and the
        // browser it launched).
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = PathBuf::from(dir).join(program);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{program} is not installed (Debian packages chromium and chromium-driver; deploy/test installs them)")
}
