//! Headless Chromium driven over the DevTools protocol (a WebSocket): page
//! loads at a given viewport (with mobile emulation, since Chromium's
//! headless window is at least 500 px wide), script evaluation and PNG
//! screenshots.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// A running headless Chromium with one page.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next: u64,
    profile: PathBuf,
}

/// A viewport: CSS pixels, and whether to emulate a phone.
#[derive(Debug, Clone, Copy)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub mobile: bool,
}

pub const DESKTOP: Viewport = Viewport {
    width: 1400,
    height: 900,
    mobile: false,
};
pub const PHONE: Viewport = Viewport {
    width: 390,
    height: 844,
    mobile: true,
};

/// The page target's WebSocket URL from `/json/list` at `hostport`.
fn page_target(hostport: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /json/list HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    // Chromium may keep the connection open: read up to Content-Length.
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    let body = loop {
        let n = s.read(&mut buf).context("reading /json/list")?;
        resp.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&resp).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .transpose()?;
            if n == 0 || len.is_some_and(|l| body.len() >= l) {
                break body.to_string();
            }
        }
        anyhow::ensure!(n > 0, "/json/list: connection closed: {text}");
    };
    let list: Vec<Value> =
        serde_json::from_str(&body).with_context(|| format!("/json/list: {body}"))?;
    list.iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .map(str::to_string)
        .context("no page target in /json/list")
}

impl Browser {
    /// Starts Chromium (kept off the network: the machine's closed network
    /// refuses its background connections) with a fresh profile.
    pub fn start(chrome: &Path, profile: PathBuf) -> anyhow::Result<Browser> {
        std::fs::create_dir_all(&profile)?;
        let mut child = Command::new(chrome)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting chromium")?;
        match Self::connect(&mut child) {
            Ok(ws) => Ok(Browser {
                child,
                ws,
                next: 0,
                profile,
            }),
            Err(e) => {
                // Nothing owns the browser yet: stop it here.
                if let Err(k) = child.kill().and_then(|()| child.wait().map(drop)) {
                    eprintln!("stopping chromium: {k}");
                }
                Err(e)
            }
        }
    }

    /// Waits for the DevTools address on stderr and connects to the page.
    fn connect(child: &mut Child) -> anyhow::Result<WebSocket<TcpStream>> {
        let stderr = child.stderr.take().context("chromium stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let hostport = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .context("chromium did not print its DevTools address within 60 s")?;
            if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                break rest.split('/').next().unwrap_or("").to_string();
            }
        };
        let url = page_target(&hostport)?;
        let stream = TcpStream::connect(&hostport)?;
        stream.set_read_timeout(Some(Duration::from_secs(90)))?;
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .map_err(|e| anyhow::anyhow!("DevTools WebSocket handshake: {e}"))?;
        Ok(ws)
    }

    /// Calls a DevTools method and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg))?;
        loop {
            let m = self
                .ws
                .read()
                .with_context(|| format!("waiting for {method}"))?;
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["id"].as_u64() != Some(id) {
                continue; // an event
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// Evaluates a script (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("script failed: {e}\n{expr}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Loads `url` at `vp` and waits until the page says it is ready
    /// (`body[data-ready]`), then for two more frames.
    pub fn open(&mut self, url: &str, vp: Viewport) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": vp.width, "height": vp.height, "deviceScaleFactor": 1, "mobile": vp.mobile}),
        )?;
        // A new document each time (a changed fragment alone would not reload).
        self.call("Page.navigate", json!({"url": "about:blank"}))?;
        self.call("Page.navigate", json!({"url": url}))?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = self.eval("document.body ? (document.body.dataset.ready || '') : ''")?;
            match ready.as_str() {
                Some("1") => break,
                Some("error") => bail!("the page failed: {}", self.dom()?),
                _ if Instant::now() > deadline => bail!("{url} not ready after 90 s"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        self.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 100))))",
        )?;
        Ok(())
    }

    /// The rendered document.
    pub fn dom(&mut self) -> anyhow::Result<String> {
        Ok(self
            .eval("document.documentElement.outerHTML")?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The document's widths: (scrollWidth, clientWidth, what sticks out).
    pub fn overflow(&mut self) -> anyhow::Result<(u64, u64, String)> {
        let v = self.eval(
            "measureOverflow(), [document.documentElement.scrollWidth, document.documentElement.clientWidth, document.body.dataset.overflow]",
        )?;
        Ok((
            v[0].as_u64().unwrap_or(u64::MAX),
            v[1].as_u64().unwrap_or(0),
            v[2].as_str().unwrap_or("").to_string(),
        ))
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<usize> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let b64 = r["data"].as_str().context("screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(b64)?;
        std::fs::write(path, &png)?;
        Ok(png.len())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("stopping chromium: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("reaping chromium: {e}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.profile) {
            eprintln!("removing {}: {e}", self.profile.display());
        }
    }
}
