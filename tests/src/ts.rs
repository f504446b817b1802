//! The TypeScript package `@keyward/client` (`clients/ts/`) for the suites that need it: `npm ci`
//! (from its committed lock file) and `npm run build` (tsc, then the browser bundle), once per test
//! binary and under a file lock in the target directory, since `cargo test` may run several
//! binaries that need it. Without node or npm: one `SKIPPED` line, or a failure when
//! `KEYWARD_REQUIRE_INTEROP=1`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::interop::{found_or_skip, last_line, target_dir};

/// `clients/ts/`.
pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("clients").join("ts")
}

/// The built package's directory (`npm ci` and `npm run build` done), and the `npm` to run its
/// scripts with; else `None` after the skip line (or a panic when interop is required).
pub fn built_package(test: &str) -> Option<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let npm = found_or_skip(test, tool("npm"))?;
    found_or_skip(test, tool("node"))?;
    // A build that failed is a failure of the package, not a missing runtime: panic with it.
    match BUILT.get_or_init(|| build(&npm)) {
        Ok(dir) => Some((dir.clone(), npm)),
        Err(why) => panic!("{test}: {why}"),
    }
}

fn tool(name: &str) -> Result<PathBuf, String> {
    match Command::new(name).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(PathBuf::from(name)),
        Ok(output) => Err(format!("`{name} --version` failed: {}", last_line(&output))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!("{name} not found on PATH")),
        Err(error) => Err(format!("{name} cannot be run: {error}")),
    }
}

/// Runs one npm command in the package; its whole output on failure.
pub fn npm_run(npm: &Path, dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<Output, String> {
    let mut command = Command::new(npm);
    command.current_dir(dir).args(args).args(["--no-audit", "--no-fund"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().map_err(|error| format!("`npm {}` cannot be run: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "`npm {}` in {} failed ({}):\n{}\n{}",
            args.join(" "),
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn build(npm: &Path) -> Result<PathBuf, String> {
    let dir = package_dir();
    let target = target_dir().ok_or("the cargo target directory is unknown (no place for the build lock)")?;
    std::fs::create_dir_all(&target).map_err(|error| format!("cannot create {}: {error}", target.display()))?;
    let guard = File::create(target.join("clients-ts.lock"))
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|error| format!("cannot lock the TypeScript package's build: {error}"))?;
    npm_run(npm, &dir, &["ci", "--loglevel=error"], &[])?;
    npm_run(npm, &dir, &["run", "build"], &[])?;
    drop(guard);
    Ok(dir)
}
