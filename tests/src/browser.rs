//! The real-browser test's tools (`tests/tests/browser.rs`): find headless Chromium (else skip, or
//! fail when `KEYWARD_REQUIRE_INTEROP=1`), build the `keyward` binary the browser spawns, copy the
//! extension with the TypeScript package's browser bundle and its config, and take the reports its
//! service worker POSTs back.
//!
//! * Chromium: `KEYWARD_CHROMIUM` if set, else `/usr/bin/chromium`, else `chromium` on `PATH`.
//! * The extension (`tests/browser/extension/`) has a fixed manifest `key`, so its ID is
//!   [`EXTENSION_ID`]; it is a client written with `@keyward/client`'s browser entry, whose bundle
//!   (`clients/ts`, built by [`crate::ts::built_package`]) the test copies beside it.
//! * The `keyward` binary: `KEYWARD_BIN` if set, else `cargo build -p keyward --bin keyward` into
//!   the target directory and profile of the running test (a no-op when it is up to date).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::interop::{found_or_skip, last_line};

/// The test extension's ID: the first 32 hex digits of the SHA-256 of the manifest's `key` (the
/// DER public key), written with the letters a-p. Chromium computes it the same way; the test
/// checks the ID the running extension reports against this one.
pub const EXTENSION_ID: &str = "iikdmfjiglgmbmniaflpgjdldojcgdnp";

/// A second throwaway public key (its private half was discarded), for a copy of the extension
/// that the host was not installed for.
pub const OTHER_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmW09FA5Jg5e/+EEXp1XZUrByLI3wtgfTSYWLhGU8gBkllGHTi0SQe+srBpeFqv3sQJKknJmQleQsoIw57OlKCwOtLM3XCTO/Sa2lMhjgiUV9U/916o+SE369qDKzqbFWz/gs3zKNlyft0TmZGQoKOqu6mP5SQwGhQ0Rk1+NNJnf8aSu33uadt5hX7TXByqgbt0W+Bfyf4w1LrU9rQBH8+QA7kNBvt4iZp+lnZL2T5AR/xTf8ttpYg8fcIBgaHCwzt/y9og1KFwboxw2tZ/rKRnAwPVEmGxzTPPL84XbNor/0WoBYR39PKbGhpsMC7TSLW3kpqbejH4K58E0Tk8zAFQIDAQAB";

/// The ID of an extension whose manifest `key` is [`OTHER_KEY`].
pub const OTHER_ID: &str = "bggjhdddcblijllgjidgakkmbdmficda";

/// Names the Chromium to run instead of `/usr/bin/chromium` or `chromium` on `PATH`.
pub const CHROMIUM_VAR: &str = "KEYWARD_CHROMIUM";

/// Names a `keyward` binary to use instead of building one.
pub const KEYWARD_BIN_VAR: &str = "KEYWARD_BIN";

/// The file the test copies the TypeScript package's browser bundle to (the module background.js
/// imports).
pub const CLIENT_FILE: &str = "keyward-client.js";

/// The browser bundle of `@keyward/client` (`npm run build` in `clients/ts` makes it).
pub const BUNDLE: &str = "dist/keyward-client.browser.js";

/// `tests/browser/`.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// A Chromium that runs, else `None` after the skip line (or a panic when interop is required).
pub fn chromium(test: &str) -> Option<PathBuf> {
    found_or_skip(test, find_chromium())
}

fn find_chromium() -> Result<PathBuf, String> {
    if let Some(chosen) = std::env::var_os(CHROMIUM_VAR) {
        let name = format!("{CHROMIUM_VAR}={}", chosen.to_string_lossy());
        return runs(PathBuf::from(chosen), &name, "");
    }
    let default = PathBuf::from("/usr/bin/chromium");
    if default.exists() {
        return runs(default, "/usr/bin/chromium", "");
    }
    runs(PathBuf::from("chromium"), "chromium", " (not at /usr/bin/chromium nor on PATH)")
}

/// `program` if `program --version` succeeds, else why not.
fn runs(program: PathBuf, name: &str, place: &str) -> Result<PathBuf, String> {
    match Command::new(&program).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(program),
        Ok(output) => Err(format!("`{name} --version` failed: {}", last_line(&output))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!("{name} not found{place}")),
        Err(error) => Err(format!("{name} cannot be run: {error}")),
    }
}

/// The `keyward` binary: [`KEYWARD_BIN_VAR`] if set, else built by cargo into the running test's
/// target directory and profile (the browser spawns it through the wrapper that `keyward
/// native-host install` writes, so it must be the binary of this source tree).
pub fn keyward_binary() -> PathBuf {
    if let Some(chosen) = std::env::var_os(KEYWARD_BIN_VAR) {
        return PathBuf::from(chosen);
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.ancestors().find(|dir| dir.file_name().is_some_and(|name| name == "deps")).unwrap();
    let profile_dir = deps.parent().unwrap();
    let target = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_string_lossy().into_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--quiet", "-p", "keyward", "--bin", "keyward"]);
    build.arg("--target-dir").arg(target);
    // What cargo set for this test process (the tests crate's manifest dir, package name and
    // version, ...) must not reach the inner cargo: build scripts that watch those variables (ring's
    // does) would rerun, and the next outer build would rebuild them again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_the_test = name.starts_with("CARGO_PKG_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_the_test {
            build.env_remove(&*name);
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let output = build.output().expect("cargo, which built this test, runs");
    assert!(
        output.status.success(),
        "cargo build -p keyward failed (set {KEYWARD_BIN_VAR} to use a built binary): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join("keyward");
    assert!(binary.is_file(), "cargo build -p keyward made no {}", binary.display());
    binary
}

/// Copies the test extension to `dir` with the package's browser bundle (from the built package in
/// `package`) and `config.json`; `key` replaces the manifest's key (another extension ID) when given.
pub fn copy_extension(dir: &Path, package: &Path, config: &Value, key: Option<&str>) {
    fs::create_dir_all(dir).unwrap();
    for entry in fs::read_dir(browser_dir().join("extension")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    fs::copy(package.join(BUNDLE), dir.join(CLIENT_FILE)).unwrap();
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(config).unwrap()).unwrap();
    if let Some(key) = key {
        let path = dir.join("manifest.json");
        let mut manifest: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        manifest["key"] = Value::from(key);
        fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    }
}

/// A child process in its own process group, the whole group killed when dropped (Chromium's
/// zygote, renderers and utilities with it).
#[derive(Debug)]
pub struct ProcessGroup(pub Child);

impl ProcessGroup {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0).spawn().map(Self)
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback HTTP listener that takes the extensions' reports: each `POST /result` body, parsed
/// as JSON, is handed to [`Reports::wait_for`].
#[derive(Debug)]
pub struct Reports {
    pub addr: SocketAddr,
    received: Receiver<Value>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reports {
    pub fn listen() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, received) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve_one(stream, &sender),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { addr, received, stop, thread: Some(thread) }
    }

    /// The URL the extensions POST to.
    pub fn url(&self) -> String {
        format!("http://{}/result", self.addr)
    }

    /// The first report of each extension in `ids`, waiting until `deadline`; panics (with
    /// `context()`, e.g. the browser's log) when one is missing then or `browser` exits first.
    pub fn wait_for(
        &self,
        ids: &[&str],
        deadline: Instant,
        browser: &mut ProcessGroup,
        context: impl Fn() -> String,
    ) -> Vec<Value> {
        let mut got: Vec<Option<Value>> = vec![None; ids.len()];
        while got.iter().any(Option::is_none) {
            let missing: Vec<&str> = ids.iter().zip(&got).filter(|(_, g)| g.is_none()).map(|(id, _)| *id).collect();
            if let Some(status) = browser.exited() {
                panic!("the browser exited ({status}) before reporting for {missing:?}\n{}", context());
            }
            if Instant::now() >= deadline {
                panic!("no report from {missing:?} in time\n{}", context());
            }
            match self.received.recv_timeout(Duration::from_millis(100)) {
                Ok(report) => {
                    let id = report["extension_id"].as_str().unwrap_or_default().to_owned();
                    match ids.iter().position(|known| *known == id) {
                        Some(at) if got[at].is_none() => got[at] = Some(report),
                        Some(_) => {}
                        None => panic!("a report from an unexpected extension: {report}"),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("the report listener stopped"),
            }
        }
        got.into_iter().map(Option::unwrap).collect()
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP/1.1 request (head, then `Content-Length` bytes), answers it, and hands a `POST
/// /result` body over as JSON (a body that is not JSON as a string).
fn serve_one(stream: TcpStream, sender: &Sender<Value>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let cors =
        "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: *\r\nAccess-Control-Allow-Methods: POST";
    let answer = if request_line.starts_with("OPTIONS ") {
        format!("HTTP/1.1 204 No Content\r\n{cors}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    } else {
        format!("HTTP/1.1 200 OK\r\n{cors}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let _ = (&stream).write_all(answer.as_bytes());
    if request_line.starts_with("POST /result ") {
        let report =
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&body).into_owned()));
        let _ = sender.send(report);
    }
}

/// The lines of a Chromium log worth showing (not its D-Bus complaints: a test machine has no bus).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text.lines().filter(|line| !line.contains("dbus")).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}
