//! Logs as Patroni writes them, so that log alerts and shippers written for Patroni keep
//! working: `log.format` (a Python %-style template, `2026-11-24 14:16:47,123 INFO: message` by
//! default), `log.type: json` (python-json-logger's lines: the `log.format` fields in order,
//! renamed as asked, then `log.static_fields`), `log.dateformat`, and `log.dir` (the file
//! `patroni.log`, rotated by size into `patroni.log.1` … `patroni.log.<file_num>` as Python's
//! `RotatingFileHandler` does).
//!
//! Everything in the `log` section is applied again by [`reconfigure`] on `POST /reload` and
//! SIGHUP: the level through tracing-subscriber's reload layer, the format and the destination
//! through the state the formatter and the writer share.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use pgpilot_config::LogConfig;
use pgpilot_values::python::{py_float_repr, py_json};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

/// Python's level names.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Python's `levelno`.
fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG | Level::TRACE => 10,
    }
}

/// Python's default `asctime`: `2026-11-24 14:16:47,123`, local time.
fn timestamp() -> String {
    pgpilot_ha::local_now()
        .strftime("%Y-%m-%d %H:%M:%S,%3f")
        .to_string()
}

/// The configuration in force and the destination it names, shared by the formatter, the
/// writer and [`reconfigure`].
struct Shared {
    cfg: RwLock<LogConfig>,
    sink: Mutex<Sink>,
}

impl Shared {
    fn cfg(&self) -> std::sync::RwLockReadGuard<'_, LogConfig> {
        self.cfg.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The level filter's reload handle and the shared state, once logging is set up.
struct Installed {
    filter: reload::Handle<Targets, Registry>,
    shared: Arc<Shared>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Where log lines go.
enum Sink {
    Stderr,
    File(RotatingFile),
}

impl Sink {
    fn open(cfg: &LogConfig) -> io::Result<Sink> {
        Ok(match &cfg.dir {
            None => Sink::Stderr,
            Some(dir) => Sink::File(RotatingFile::open(
                dir,
                cfg.file_size,
                cfg.file_num,
                cfg.mode,
            )?),
        })
    }

    /// Whether `cfg` names this same destination with the same limits.
    fn serves(&self, cfg: &LogConfig) -> bool {
        match (self, &cfg.dir) {
            (Sink::Stderr, None) => true,
            (Sink::File(f), Some(dir)) => {
                f.path == dir.join(LOG_FILE)
                    && f.file_size == cfg.file_size
                    && f.file_num == cfg.file_num
                    && f.mode == cfg.mode
            }
            _ => false,
        }
    }
}

/// Patroni's log file name in `log.dir`.
const LOG_FILE: &str = "patroni.log";

/// `<dir>/patroni.log`, rotated as Python's `RotatingFileHandler(maxBytes=file_size,
/// backupCount=file_num)`: before a line that would bring the file to `file_size` bytes, the
/// file becomes `patroni.log.1` (older ones move up one number, the one past `file_num` is
/// deleted) and a new `patroni.log` starts. A line is never split across files.
struct RotatingFile {
    file: std::fs::File,
    path: PathBuf,
    /// Bytes in the current file.
    size: u64,
    file_size: u64,
    file_num: usize,
    mode: Option<u32>,
}

impl RotatingFile {
    fn open(dir: &Path, file_size: u64, file_num: usize, mode: Option<u32>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("log.dir {}: {e}", dir.display())))?;
        let path = dir.join(LOG_FILE);
        let file = Self::append(&path)?;
        let size = file.metadata()?.len();
        let f = RotatingFile {
            file,
            path,
            size,
            file_size,
            file_num,
            mode,
        };
        f.apply_mode();
        Ok(f)
    }

    fn append(path: &Path) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// `patroni.log.N` of the rotated copies.
    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Python's `doRollover`: `.file_num-1` … `.1` move up one number (over the one past
    /// `file_num`, which goes), the current file becomes `.1`, and a new one starts. A current
    /// file removed by someone else is not an error: the new one starts all the same.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.file_num).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        match std::fs::rename(&self.path, self.numbered(1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.file = Self::append(&self.path)?;
        self.size = 0;
        self.apply_mode();
        Ok(())
    }

    /// `log.mode` on the current file, as Patroni chmods every file it opens.
    fn apply_mode(&self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = self.mode {
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode));
        }
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if self.file_size > 0
            && self.file_num > 0
            && self.size > 0
            && self.size + len >= self.file_size
        {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The writer tracing's fmt layer asks for each line: the shared sink, locked for the line.
#[derive(Clone)]
struct SinkWriter(Arc<Shared>);

struct SinkGuard<'a>(MutexGuard<'a, Sink>);

impl Write for SinkGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.0 {
            Sink::Stderr => io::stderr().write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut *self.0 {
            Sink::Stderr => io::stderr().flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = SinkGuard<'a>;

    fn make_writer(&'a self) -> SinkGuard<'a> {
        SinkGuard(self.0.sink.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One event as a Python `LogRecord`: its message and the other fields of the event.
struct Record<'a> {
    level: &'a Level,
    target: &'a str,
    module: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    message: String,
    /// Fields other than the message, in order (python-json-logger's "extra").
    extra: Vec<(String, String)>,
    asctime: String,
    created: f64,
}

#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.extra
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.extra
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

impl Record<'_> {
    /// The value of a Python `LogRecord` attribute (`None` for one pgpilot does not have,
    /// which python-json-logger writes as `null`).
    fn field(&self, name: &str) -> Option<Value> {
        Some(match name {
            "asctime" => Value::from(self.asctime.clone()),
            "created" => Value::from(self.created),
            "msecs" => Value::from((self.created.fract() * 1000.0).floor()),
            "levelname" => Value::from(level_name(self.level)),
            "levelno" => Value::from(level_number(self.level)),
            "message" => Value::from(self.message.clone()),
            "name" => Value::from(self.target),
            "module" => Value::from(self.module?.rsplit("::").next()?),
            "pathname" => Value::from(self.file?),
            "filename" => Value::from(Path::new(self.file?).file_name()?.to_str()?),
            "lineno" => Value::from(self.line?),
            "process" => Value::from(std::process::id()),
            "processName" => Value::from("MainProcess"),
            "threadName" => Value::from(std::thread::current().name().unwrap_or("MainThread")),
            _ => return None,
        })
    }

    /// python-json-logger's line: the configured fields (renamed), the static fields, then
    /// the event's other fields.
    fn json(&self, cfg: &LogConfig) -> String {
        let mut m = Map::new();
        for (field, key) in &cfg.json_fields {
            m.insert(key.clone(), self.field(field).unwrap_or(Value::Null));
        }
        for (k, v) in &cfg.static_fields {
            m.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), Value::from(v.clone()));
        }
        py_json(&Value::Object(m))
    }

    /// `logging.Formatter(format)`: `%(name)s`-style placeholders with Python's
    /// flags/width/precision and the `s`, `r`, `d`, `i`, `f` conversions; `%%` is `%`. The
    /// event's other fields follow the message as `key=value`.
    fn plain(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(pos) = rest.find('%') {
            out.push_str(&rest[..pos]);
            rest = &rest[pos + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                out.push('%');
                rest = r;
                continue;
            }
            let Some((spec, after)) = placeholder(rest) else {
                out.push('%');
                continue;
            };
            out.push_str(&self.render(&spec));
            rest = after;
        }
        out.push_str(rest);
        out
    }

    fn render(&self, spec: &Placeholder) -> String {
        let value = match spec.name.as_str() {
            "message" => {
                let mut msg = self.message.clone();
                for (k, v) in &self.extra {
                    msg.push_str(&format!(" {k}={v}"));
                }
                Value::from(msg)
            }
            name => self.field(name).unwrap_or(Value::Null),
        };
        let text = match spec.conversion {
            'd' | 'i' => value
                .as_f64()
                .map_or_else(|| python_str(&value), |f| (f.trunc() as i64).to_string()),
            'f' => value.as_f64().map_or_else(
                || python_str(&value),
                |f| format!("{f:.*}", spec.precision.unwrap_or(6)),
            ),
            _ => {
                let s = python_str(&value);
                match spec.precision {
                    Some(p) => s.chars().take(p).collect(),
                    None => s,
                }
            }
        };
        let pad = spec.width.saturating_sub(text.chars().count());
        if pad == 0 {
            text
        } else if spec.left {
            format!("{text}{}", " ".repeat(pad))
        } else {
            format!("{}{text}", " ".repeat(pad))
        }
    }
}

/// `str()` of a record value.
fn python_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(String::new, py_float_repr),
        other => other.to_string(),
    }
}

/// One `%(name)<flags><width>.<precision><conversion>` placeholder (after the `%`).
struct Placeholder {
    name: String,
    left: bool,
    width: usize,
    precision: Option<usize>,
    conversion: char,
}

fn placeholder(s: &str) -> Option<(Placeholder, &str)> {
    let s = s.strip_prefix('(')?;
    let close = s.find(')')?;
    let name = s[..close].to_string();
    let mut rest = &s[close + 1..];
    let flags_end = rest
        .find(|c: char| !"-+ #0".contains(c))
        .unwrap_or(rest.len());
    let left = rest[..flags_end].contains('-');
    rest = &rest[flags_end..];
    let digits = |r: &str| r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
    let w = digits(rest);
    let width = rest[..w].parse().unwrap_or(0);
    rest = &rest[w..];
    let mut precision = None;
    if let Some(r) = rest.strip_prefix('.') {
        let p = digits(r);
        precision = Some(r[..p].parse().unwrap_or(0));
        rest = &r[p..];
    }
    let conversion = rest.chars().next()?;
    Some((
        Placeholder {
            name,
            left,
            width,
            precision,
            conversion,
        },
        &rest[conversion.len_utf8()..],
    ))
}

/// Formats each event as the shared configuration says (plain or JSON).
struct PatroniFormat(Arc<Shared>);

impl PatroniFormat {
    fn line(&self, event: &Event<'_>) -> String {
        let cfg = self.0.cfg();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let now = pgpilot_ha::local_now();
        let asctime = match &cfg.dateformat {
            Some(f) => now.strftime(f.as_str()).to_string(),
            None => timestamp(),
        };
        let record = Record {
            level: meta.level(),
            target: meta.target(),
            module: meta.module_path(),
            file: meta.file(),
            line: meta.line(),
            message: fields.message,
            extra: fields.extra,
            asctime,
            created: now.timestamp().as_microsecond() as f64 / 1e6,
        };
        if cfg.format_json {
            record.json(&cfg)
        } else {
            record.plain(&cfg.plain_format)
        }
    }
}

impl<S, N> FormatEvent<S, N> for PatroniFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", self.line(event))
    }
}

/// tokio-postgres logs every statement it sends at debug level, the `ALTER ROLE ... PASSWORD`
/// of bootstrap included: its debug output stays off unless `RUST_LOG` names it explicitly.
const QUIET_SQL: &str = "tokio_postgres";

/// Maps Patroni's `log.level` to a filter; `RUST_LOG` overrides it. `RUST_LOG` takes
/// `target=level` directives and a bare default level, comma-separated (tracing's `Targets`
/// syntax: span and field filters are not supported, as they would need a regex engine the
/// agent does not otherwise carry); a value that does not parse is named in a warning and
/// `log.level` applies.
fn filter(level: &str) -> Targets {
    let lvl = match level.to_ascii_uppercase().as_str() {
        "DEBUG" => LevelFilter::DEBUG,
        "WARN" | "WARNING" => LevelFilter::WARN,
        "ERROR" | "CRITICAL" | "FATAL" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let names_sql = from_env.as_deref().is_some_and(|v| v.contains(QUIET_SQL));
    let filter = match from_env.map(|v| (v.parse::<Targets>(), v)) {
        Some((Ok(targets), _)) => targets,
        Some((Err(e), v)) => {
            eprintln!("RUST_LOG={v:?} is not understood ({e}); log.level applies");
            Targets::new().with_default(lvl)
        }
        None => Targets::new().with_default(lvl),
    };
    if names_sql {
        filter
    } else {
        filter.with_target(QUIET_SQL, LevelFilter::INFO)
    }
}

/// The subscriber for `cfg`, with its reload handle and shared state.
fn build(
    cfg: &LogConfig,
) -> io::Result<(
    impl Subscriber + Send + Sync + 'static,
    reload::Handle<Targets, Registry>,
    Arc<Shared>,
)> {
    let shared = Arc::new(Shared {
        cfg: RwLock::new(cfg.clone()),
        sink: Mutex::new(Sink::open(cfg)?),
    });
    let (level, handle) = reload::Layer::new(filter(&cfg.level));
    let subscriber = tracing_subscriber::registry().with(level).with(
        tracing_subscriber::fmt::layer()
            .event_format(PatroniFormat(shared.clone()))
            .with_writer(SinkWriter(shared.clone())),
    );
    Ok((subscriber, handle, shared))
}

pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let (subscriber, filter, shared) = build(cfg)?;
    subscriber.try_init().map_err(|e| anyhow::anyhow!("{e}"))?;
    // `try_init` succeeded, so this is the first and only installation.
    let _ = INSTALLED.set(Installed { filter, shared });
    Ok(())
}

/// Applies a reloaded `log` section: level, format and destination (a new `log.dir`,
/// `file_size`, `file_num` or `mode` opens the file anew; one that can not be opened keeps the
/// current destination and says so).
pub fn reconfigure(cfg: &LogConfig) {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    apply(&installed.filter, &installed.shared, cfg);
}

fn apply(filter_handle: &reload::Handle<Targets, Registry>, shared: &Shared, cfg: &LogConfig) {
    if shared.cfg().level != cfg.level {
        if let Err(e) = filter_handle.reload(filter(&cfg.level)) {
            tracing::error!("can not change the log level: {e}");
        }
    }
    let reopen = {
        let sink = shared.sink.lock().unwrap_or_else(PoisonError::into_inner);
        !sink.serves(cfg)
    };
    if reopen {
        match Sink::open(cfg) {
            Ok(new) => *shared.sink.lock().unwrap_or_else(PoisonError::into_inner) = new,
            Err(e) => tracing::error!("log.dir: {e}; logging where it did"),
        }
    }
    *shared.cfg.write().unwrap_or_else(PoisonError::into_inner) = cfg.clone();
}

/// Patroni logs fatal conditions at CRITICAL, a level tracing does not have.
pub fn critical(msg: &str) {
    eprintln!("{} CRITICAL: {msg}", timestamp());
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::prelude::*;

    use super::*;

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

    fn file_config(dir: &Path) -> LogConfig {
        LogConfig {
            dir: Some(dir.to_path_buf()),
            ..LogConfig::default()
        }
    }

    /// Runs `f` with a subscriber built from `cfg` (not installed globally); returns the
    /// handles for reconfiguration.
    fn with_logging(cfg: &LogConfig, f: impl FnOnce(&reload::Handle<Targets, Registry>, &Shared)) {
        let (subscriber, handle, shared) = build(cfg).unwrap();
        tracing::subscriber::with_default(subscriber, || f(&handle, &shared));
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    /// A `patroni.log` removed by someone else (a logrotate set up wrongly) does not make the
    /// rotation fail: the next line starts a new file, and the copies move up as usual.
    #[test]
    fn rotation_goes_on_when_the_current_file_was_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(tmp.path(), 20, 2, None).unwrap();
        f.write_all(b"first line, 18 b\n").unwrap();
        f.write_all(b"second line, 19 b\n").unwrap();
        std::fs::remove_file(tmp.path().join(LOG_FILE)).unwrap();
        f.write_all(b"third line, 18 b\n").unwrap();
        assert_eq!(read(tmp.path(), "patroni.log"), "third line, 18 b\n");
        assert_eq!(read(tmp.path(), "patroni.log.2"), "first line, 18 b\n");
        assert!(!tmp.path().join("patroni.log.1").exists());
    }

    /// A small `file_size` rotates `patroni.log` into `.1`, `.2`, …: never more than
    /// `file_num` rotated files, none over `file_size`, no line split or lost among the kept
    /// files, the newest lines in `patroni.log` and the oldest kept ones in `.<file_num>`.
    #[test]
    fn rotation_keeps_file_num_files_of_at_most_file_size() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            file_size: 300,
            file_num: 3,
            mode: Some(0o640),
            ..file_config(tmp.path())
        };
        with_logging(&cfg, |_, _| {
            for i in 0..40 {
                tracing::info!("line {i:03} of the rotation test");
            }
        });
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "patroni.log",
                "patroni.log.1",
                "patroni.log.2",
                "patroni.log.3"
            ]
        );
        let mut kept = Vec::new();
        for name in [
            "patroni.log.3",
            "patroni.log.2",
            "patroni.log.1",
            "patroni.log",
        ] {
            let text = read(tmp.path(), name);
            assert!(text.len() < 300, "{name} is {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name}: {text:?}");
            for line in text.lines() {
                let n: usize = line.split("line ").nth(1).unwrap()[..3].parse().unwrap();
                kept.push(n);
            }
        }
        assert_eq!(*kept.last().unwrap(), 39);
        let first = kept[0];
        assert_eq!(kept, (first..40).collect::<Vec<_>>(), "in order, none lost");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("patroni.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    /// The default plain line is Patroni's (`<asctime> INFO: message`, asctime 23 characters
    /// with a comma before the milliseconds); a `log.format` template with width and other
    /// record fields is applied; `file_size: 0` never rotates.
    #[test]
    fn plain_lines_follow_log_format() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            file_size: 0,
            ..file_config(tmp.path())
        };
        with_logging(&cfg, |handle, shared| {
            tracing::warn!("no action. I am (pg1), the leader with the lock");
            let custom = LogConfig {
                plain_format: "[%(levelname)-8s] %(name)s: %(message)s %%".into(),
                ..cfg.clone()
            };
            apply(handle, shared, &custom);
            tracing::info!(target: "pgpilot_ha::agent", member = "pg2", "following");
        });
        let text = read(tmp.path(), "patroni.log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (asctime, rest) = lines[0].split_at(23);
        assert_eq!(&asctime[19..20], ",", "{asctime}");
        assert_eq!(
            rest,
            " WARNING: no action. I am (pg1), the leader with the lock"
        );
        assert_eq!(
            lines[1],
            "[INFO    ] pgpilot_ha::agent: following member=pg2 %"
        );
        assert!(!tmp.path().join("patroni.log.1").exists());
    }

    /// `log.type: json`: python-json-logger's line shape (`", "`/`": "` separators, ASCII
    /// escapes), the `log.format` fields in order with renames, `log.dateformat` for asctime,
    /// unknown record fields as null, then `log.static_fields`, then the event's own fields.
    #[test]
    fn json_lines_have_patronis_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let mut static_fields = Map::new();
        static_fields.insert("app".into(), Value::from("pgpilot"));
        let cfg = LogConfig {
            format_json: true,
            json_fields: vec![
                ("asctime".into(), "@timestamp".into()),
                ("levelname".into(), "level".into()),
                ("message".into(), "message".into()),
                ("levelno".into(), "levelno".into()),
                ("funcName".into(), "funcName".into()),
            ],
            dateformat: Some("%Y-%m-%dT%H:%M:%S".into()),
            static_fields,
            ..file_config(tmp.path())
        };
        with_logging(&cfg, |_, _| {
            tracing::error!(member = "pg2", "café closed");
        });
        let text = read(tmp.path(), "patroni.log");
        let line = text.lines().next().unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "@timestamp",
                "level",
                "message",
                "levelno",
                "funcName",
                "app",
                "member"
            ]
        );
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["levelno"], 40);
        assert_eq!(v["message"], "café closed");
        assert_eq!(v["funcName"], Value::Null);
        assert_eq!(v["app"], "pgpilot");
        assert_eq!(v["member"], "pg2");
        let ts = v["@timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[10..11]), (19, "T"), "{ts}");
        assert!(
            line.contains(r#""message": "caf\u00e9 closed", "#),
            "{line}"
        );
    }

    /// A reload that changes `log.level` takes effect at once: DEBUG lines appear after a
    /// change to DEBUG and INFO lines disappear after a change to WARNING.
    #[test]
    fn reload_changes_the_level() {
        if std::env::var_os("RUST_LOG").is_some() {
            eprintln!("RUST_LOG is set: the filter under test is the user's");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cfg = file_config(tmp.path());
        with_logging(&cfg, |handle, shared| {
            tracing::debug!("debug before");
            tracing::info!("info before");
            apply(
                handle,
                shared,
                &LogConfig {
                    level: "DEBUG".into(),
                    ..cfg.clone()
                },
            );
            tracing::debug!("debug after DEBUG");
            apply(
                handle,
                shared,
                &LogConfig {
                    level: "WARNING".into(),
                    ..cfg.clone()
                },
            );
            tracing::info!("info after WARNING");
            tracing::warn!("warning after WARNING");
        });
        let text = read(tmp.path(), "patroni.log");
        let messages: Vec<&str> = text
            .lines()
            .map(|l| l.split_once(": ").unwrap().1)
            .collect();
        assert_eq!(
            messages,
            ["info before", "debug after DEBUG", "warning after WARNING"]
        );
    }
}
