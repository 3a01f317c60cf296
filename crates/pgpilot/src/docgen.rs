//! `pgpilot-docgen OUT_DIR` (package time only, behind the `docgen` feature): writes the man
//! pages of both binaries and pgpilotctl's shell completions from their clap definitions, for
//! `packaging/build-deb.sh` to hand to cargo-deb:
//!
//! * `OUT_DIR/man/pgpilot.1`, `OUT_DIR/man/pgpilotctl.1` and one `pgpilotctl-<command>.1` per
//!   subcommand;
//! * `OUT_DIR/completions/pgpilotctl.bash`, `_pgpilotctl` (zsh) and `pgpilotctl.fish`.
//!
//! Neither binary grows a command for this (patronictl has none: click's completion is an
//! environment variable). The argument definitions are the binaries' own source files, compiled
//! again here as modules, so the pages can not drift from the binaries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

// The agent's `main.rs` as a module: only its `Args` is used here.
#[allow(dead_code)]
#[path = "main.rs"]
mod agent;

// pgpilotctl's command line and the two modules its output formats name.
#[allow(dead_code)]
#[path = "ctl/args.rs"]
mod args;
#[allow(dead_code)]
#[path = "ctl/table.rs"]
mod table;
#[allow(dead_code, unused_imports)]
#[path = "ctl/yaml.rs"]
mod yaml;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: pgpilot-docgen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgpilot-docgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("can not create {}", man.display()))?;
    // Both commands print their version themselves (`--version` without clap's flag); the
    // version still belongs in the pages' footer.
    let agent = agent::Args::command().version(version);
    let ctl = args::Cli::command().version(version);
    clap_mangen::generate_to(agent, &man)
        .with_context(|| format!("can not write the pgpilot man page into {}", man.display()))?;
    clap_mangen::generate_to(ctl.clone(), &man).with_context(|| {
        format!(
            "can not write the pgpilotctl man pages into {}",
            man.display()
        )
    })?;

    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("can not create {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = ctl.clone();
        clap_complete::generate_to(shell, &mut cmd, "pgpilotctl", &completions).with_context(
            || {
                format!(
                    "can not write the {shell} completion into {}",
                    completions.display()
                )
            },
        )?;
    }
    Ok(())
}
