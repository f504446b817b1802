//! The runtimes of the interoperability tests (clients that are not ours): find or provision them,
//! else skip the test with one line that says why, or fail when `KEYWARD_REQUIRE_INTEROP=1`.
//!
//! * Node.js: `node` from `PATH`; the client uses only Node's built-in modules.
//! * Python with aioquic: `python3` (or `KEYWARD_INTEROP_PYTHON`) as is when it already imports
//!   aioquic and cryptography; else a virtualenv `interop-venv` in the cargo target directory with
//!   aioquic [`AIOQUIC`] installed by pip, made once (under a file lock, since several `cargo test`
//!   runs may share one target directory) and reused.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The aioquic version a provisioned virtualenv gets.
pub const AIOQUIC: &str = "1.7.2";

/// Set to `1` to make a missing interop runtime an error instead of a skip (CI sets it).
pub const REQUIRE_VAR: &str = "KEYWARD_REQUIRE_INTEROP";

/// The Python a virtualenv is made with, and that is tried first (default `python3`).
pub const PYTHON_VAR: &str = "KEYWARD_INTEROP_PYTHON";

/// `node` when it runs, else `None` after the skip line (or a panic when interop is required).
pub fn node(test: &str) -> Option<PathBuf> {
    found_or_skip(test, find_node())
}

/// A Python that imports aioquic, provisioned if need be, else `None` after the skip line (or a
/// panic when interop is required).
pub fn python_with_aioquic(test: &str) -> Option<PathBuf> {
    found_or_skip(test, find_or_provision_python())
}

/// The one place that turns "no runtime" into a skip or, when required, a failure.
pub(crate) fn found_or_skip(test: &str, found: Result<PathBuf, String>) -> Option<PathBuf> {
    let why = match found {
        Ok(program) => return Some(program),
        Err(why) => why,
    };
    if std::env::var(REQUIRE_VAR).is_ok_and(|value| value == "1") {
        panic!("{test}: {why} ({REQUIRE_VAR}=1 makes a missing interop runtime an error)");
    }
    // Straight to stderr, not `eprintln!`: the test harness captures the macros, and a skip
    // should be visible in a plain `cargo test`.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} (set {REQUIRE_VAR}=1 to make this an error)");
    None
}

fn find_node() -> Result<PathBuf, String> {
    let node = PathBuf::from("node");
    match Command::new(&node).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(node),
        Ok(output) => Err(format!("`node --version` failed: {}", last_line(&output))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err("node not found on PATH".into()),
        Err(error) => Err(format!("node cannot be run: {error}")),
    }
}

fn find_or_provision_python() -> Result<PathBuf, String> {
    let (base, name, place) = match std::env::var_os(PYTHON_VAR) {
        Some(chosen) => (PathBuf::from(&chosen), format!("{PYTHON_VAR}={}", chosen.to_string_lossy()), ""),
        None => (PathBuf::from("python3"), "python3".to_owned(), " on PATH"),
    };
    // The virtualenv's python is a link to the base one: without it there is nothing to run.
    match Command::new(&base).arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => return Err(format!("`{name} --version` failed: {}", last_line(&output))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(format!("{name} not found{place}")),
        Err(error) => return Err(format!("{name} cannot be run: {error}")),
    }
    if imports_aioquic(&base, None) {
        return Ok(base);
    }
    let target = target_dir().ok_or("the cargo target directory is unknown (no virtualenv for aioquic)")?;
    let venv = target.join("interop-venv");
    let python = venv.join("bin").join("python");
    if imports_aioquic(&python, Some(AIOQUIC)) {
        return Ok(python);
    }
    fs::create_dir_all(&target).map_err(|error| format!("cannot create {}: {error}", target.display()))?;
    let lock = File::create(target.join("interop-venv.lock"))
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|error| format!("cannot lock the aioquic virtualenv: {error}"))?;
    // Another run may have made it while this one waited for the lock.
    if !imports_aioquic(&python, Some(AIOQUIC)) {
        provision(&base, &venv, &python)?;
    }
    drop(lock);
    Ok(python)
}

/// Makes the virtualenv from scratch (a half-made one from an interrupted run is removed first).
fn provision(base: &Path, venv: &Path, python: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(venv);
    run(Command::new(base).arg("-m").arg("venv").arg(venv), "`python3 -m venv`")?;
    let pin = format!("aioquic=={AIOQUIC}");
    let mut pip = Command::new(python);
    pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", &pin]);
    run(&mut pip, &format!("`pip install {pin}` in the virtualenv"))?;
    if imports_aioquic(python, Some(AIOQUIC)) {
        Ok(())
    } else {
        Err(format!("the virtualenv still does not import aioquic {AIOQUIC} and cryptography"))
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    match command.output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!("{what} failed: {}", last_line(&output))),
        Err(error) => Err(format!("{what} cannot be run: {error}")),
    }
}

/// Whether `python` imports aioquic (at `version`, when given) and cryptography.
fn imports_aioquic(python: &Path, version: Option<&str>) -> bool {
    let check = match version {
        Some(version) => format!("import aioquic, cryptography, sys; sys.exit(aioquic.__version__ != '{version}')"),
        None => "import aioquic, cryptography".to_owned(),
    };
    Command::new(python).arg("-c").arg(check).output().is_ok_and(|output| output.status.success())
}

/// `CARGO_TARGET_DIR` when absolute (a relative one is relative to where cargo ran, unknown here),
/// else from the test binary's own path: `<target>/<profile>/deps/<binary>`.
pub(crate) fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).filter(|dir| dir.is_absolute()) {
        return Some(dir);
    }
    let exe = std::env::current_exe().ok()?;
    let deps = exe.ancestors().find(|dir| dir.file_name().is_some_and(|name| name == "deps"))?;
    Some(deps.parent()?.parent()?.to_path_buf())
}

/// The last non-empty line of stderr (else stdout), for a one-line reason.
pub(crate) fn last_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() { stdout } else { stderr };
    let line = text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no output").trim();
    format!("{line} ({})", output.status)
}
