//! Replays every saved fuzz crash (`fuzz/regressions/<target>/*`) and every seed input
//! (`spec/vectors/fuzz-seeds/<target>/*`) through the same code the fuzz targets run.

use std::path::{Path, PathBuf};

use keyward_proptests::fuzzing::{TARGETS, run_target};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn replay(folder: &str) -> usize {
    let mut failures = Vec::new();
    let mut count = 0;
    for target in TARGETS {
        let dir = root().join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        files.sort();
        for file in files {
            if file.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.') || n == "README.md") {
                continue;
            }
            let data = std::fs::read(&file).expect("readable");
            count += 1;
            let outcome = std::panic::catch_unwind(|| run_target(target, &data));
            if outcome.is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "inputs that still fail:\n{}", failures.join("\n"));
    count
}

#[test]
fn fuzz_regressions_pass() {
    let count = replay("fuzz/regressions");
    eprintln!("replayed {count} fuzz regression inputs");
}

#[test]
fn fuzz_seeds_pass() {
    let count = replay("spec/vectors/fuzz-seeds");
    assert!(count > 0, "no seed inputs found");
}
