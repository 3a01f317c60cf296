//! `pgpilot-docgen OUT_DIR` (package time only, behind the `docgen` feature): writes the man
//! pages of both binaries and pgpilotctl's shell completions from their argument definitions
//! (pgpilotctl's clap command; the agent's table of options, made a clap command here), for
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

// The agent's table of options.
#[allow(dead_code)]
#[path = "args.rs"]
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

/// The agent's command line as a clap command, from the table its own parser reads.
fn agent_command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let mut cmd = clap::Command::new("pgpilot")
        .about(agent::ABOUT)
        .disable_version_flag(true)
        .arg(
            Arg::new("config")
                .value_name(agent::CONFIG_VALUE)
                .help(agent::CONFIG_HELP),
        );
    // clap adds -h/--help itself.
    for opt in agent::OPTIONS
        .iter()
        .filter(|o| o.flag != agent::Flag::Help)
    {
        let arg = Arg::new(opt.long)
            .long(opt.long)
            .help(opt.help)
            .hide(opt.hidden);
        cmd = cmd.arg(match opt.value {
            Some(v) => arg.value_name(v).action(ArgAction::Set),
            None => arg.action(ArgAction::SetTrue),
        });
    }
    cmd
}

fn generate(out: &Path) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("can not create {}", man.display()))?;
    // Both commands print their version themselves (`--version` without clap's flag); the
    // version still belongs in the pages' footer.
    let agent = agent_command().version(version);
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
