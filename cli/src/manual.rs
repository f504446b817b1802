//! `keyward man --out DIR`: the man pages, made from the command line's own definition
//! (clap_mangen): `keyward.1`, and `keyward-COMMAND.1` for every command and subcommand.

use std::path::Path;

use anyhow::Context;

/// Writes the pages of `command` and of every subcommand (hidden ones left out) to `dir` (made if
/// missing); returns how many.
pub fn write_pages(command: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let mut command = command;
    command.build();
    write_tree(&command, "keyward", dir)
}

fn write_tree(command: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let page = command.clone().name(name.to_owned());
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text).with_context(|| format!("cannot render {name}.1"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        written += write_tree(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
