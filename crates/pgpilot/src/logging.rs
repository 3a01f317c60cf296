//! Logs in Patroni's format, `2026-11-24 14:16:47,123 INFO: message`, so that log alerts
//! written for Patroni keep matching. `log.type: json` switches to JSON lines.

use std::fmt;

use pgpilot_config::LogConfig;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Python's level names.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

fn timestamp() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%Y-%m-%d %H:%M:%S,%3f")
        .to_string()
}

struct PatroniFormat;

impl<S, N> FormatEvent<S, N> for PatroniFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(
            writer,
            "{} {}: ",
            timestamp(),
            level_name(event.metadata().level())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// tokio-postgres logs every statement it sends at debug level, the `ALTER ROLE ... PASSWORD`
/// of bootstrap included: its debug output stays off unless `RUST_LOG` names it explicitly.
const QUIET_SQL: &str = "tokio_postgres=info";

/// Maps Patroni's `log.level` to a filter; `RUST_LOG` overrides it.
fn filter(level: &str) -> EnvFilter {
    let lvl = match level.to_ascii_uppercase().as_str() {
        "DEBUG" => "debug",
        "WARN" | "WARNING" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        _ => "info",
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let names_sql = from_env
        .as_deref()
        .is_some_and(|v| v.contains("tokio_postgres"));
    let filter = from_env
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(lvl));
    if names_sql {
        return filter;
    }
    match QUIET_SQL.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Where log lines go: `<log.dir>/patroni.log` when `log.dir` is set (as Patroni names it;
/// rotation by `file_size`/`file_num` is not implemented yet), else stderr.
fn writer(cfg: &LogConfig) -> anyhow::Result<BoxMakeWriter> {
    let Some(dir) = &cfg.dir else {
        return Ok(BoxMakeWriter::new(std::io::stderr));
    };
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("log.dir {}: {e}", dir.display()))?;
    let path = dir.join("patroni.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("log.dir {}: {e}", path.display()))?;
    Ok(BoxMakeWriter::new(std::sync::Mutex::new(file)))
}

pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&cfg.level))
        .with_writer(writer(cfg)?);
    if cfg.format_json {
        builder
            .json()
            .try_init()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    } else {
        builder
            .event_format(PatroniFormat)
            .try_init()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Patroni logs fatal conditions at CRITICAL, a level tracing does not have.
pub fn critical(msg: &str) {
    eprintln!("{} CRITICAL: {msg}", timestamp());
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::prelude::*;

    /// `log.level: DEBUG` shows the agent's debug lines but not tokio-postgres's statements,
    /// which carry the passwords of `ALTER ROLE`.
    #[test]
    fn debug_level_keeps_sql_statements_out() {
        if std::env::var_os("RUST_LOG").is_some() {
            eprintln!("RUST_LOG is set: the filter under test is the user's");
            return;
        }
        let subscriber = tracing_subscriber::registry().with(super::filter("DEBUG"));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "pgpilot_ha::agent", Level::DEBUG));
            assert!(!tracing::enabled!(
                target: "tokio_postgres::simple_query",
                Level::DEBUG
            ));
            assert!(tracing::enabled!(target: "tokio_postgres::connection", Level::INFO));
        });
    }
}
