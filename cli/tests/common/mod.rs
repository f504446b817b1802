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
