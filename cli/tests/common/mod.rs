//! What the binary's tests share: the command, its output as text, and running it with input.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The `keyward` binary under test.
pub fn keyward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
}

/// Standard output and standard error together.
pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs `command` with `KEYWARD_TOKEN` set to `token` (if any) and `stdin` as its standard input.
pub fn run(command: &mut Command, stdin: Option<&str>, token: Option<&str>) -> Output {
    if let Some(token) = token {
        command.env("KEYWARD_TOKEN", token);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A `keyward serve` child process, killed when dropped.
pub struct Serve(pub std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (a `keyward serve … --ready-file READY`) and waits up to 60 s for its ready
/// file; returns the process and the file's JSON (the bound addresses).
pub fn serve(mut command: Command, ready: &std::path::Path) -> (Serve, serde_json::Value) {
    let _ = std::fs::remove_file(ready);
    let mut serve = Serve(command.stdout(Stdio::null()).spawn().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.exists() {
        let exited = serve.0.try_wait().unwrap();
        assert!(exited.is_none() && std::time::Instant::now() < deadline, "keyward serve did not start: {exited:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let info = serde_json::from_slice(&std::fs::read(ready).unwrap()).unwrap();
    (serve, info)
}

/// Standard output of a command that must succeed.
pub fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", text(output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command that must fail, saying `expected`.
pub fn refused(output: &Output, expected: &str) {
    assert!(!output.status.success(), "expected a refusal containing {expected:?}: {}", text(output));
    assert!(text(output).contains(expected), "expected {expected:?} in: {}", text(output));
}

/// A copy of the directory tree `from` at `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A loopback TCP port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
