//! Terminal input and output shared by the commands, as click does it for `patronictl`:
//! `echo`, `prompt`, `confirm` and the `Aborted!` of an abandoned prompt.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

/// The user declined or stdin closed at a prompt: printed as click's `Aborted!`.
#[derive(Debug)]
pub(crate) struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aborted!")
    }
}

impl std::error::Error for Aborted {}

/// Writes to stdout; a closed pipe ends the program successfully (`pgpilotctl list | head`).
pub(super) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let res = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `click.echo(text)`.
pub(super) fn echo(text: &str) {
    out(&format!("{text}\n"));
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("can not read from stdin")?;
    if n == 0 {
        out("\n");
        return Err(Aborted.into());
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `click.prompt(text, default=...)`: `text [default]: `; empty input takes the default, and
/// without a default the question is asked again.
pub(super) fn prompt(text: &str, default: Option<&str>) -> anyhow::Result<String> {
    loop {
        match default {
            Some(d) => out(&format!("{text} [{d}]: ")),
            None => out(&format!("{text}: ")),
        }
        let line = read_line()?;
        if !line.is_empty() {
            return Ok(line);
        }
        if let Some(d) = default {
            return Ok(d.to_string());
        }
    }
}

/// `click.confirm(text)`: `text [y/N]: `.
pub(super) fn confirm(text: &str) -> anyhow::Result<bool> {
    loop {
        out(&format!("{text} [y/N]: "));
        match read_line()?.trim().to_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" | "" => return Ok(false),
            _ => echo("Error: invalid input"),
        }
    }
}

pub(super) fn clear_screen() {
    if std::io::stdout().is_terminal() {
        out("\x1b[2J\x1b[1;1H");
    }
}
