//! Writes the man pages and the bash, zsh and fish completions of `vault-locator` into
//! the folder given (packaging/build.sh: `target/assets`), from the same clap
//! definitions the binary parses with, so they can never drift from it.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    std::fs::create_dir_all(&out)?;
    let mut cli = vault_locator::cli::Cli::command();
    // vault-locator.1, and a page per subcommand (vault-locator-run.1, ...).
    clap_mangen::generate_to(cli.clone(), &out)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli, "vault-locator", &out)?;
    }
    for entry in std::fs::read_dir(&out)? {
        println!("{}", entry?.path().display());
    }
    Ok(())
}
