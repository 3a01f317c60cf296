//! The `tags`, `watchdog` and `log` sections.

use std::path::PathBuf;

use pgpilot_values::truthy;
use serde_json::Value;

use super::Reader;
use crate::{LogConfig, Tags, WatchdogConfig, WatchdogDriver, WatchdogMode};

pub(super) fn tags(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> Tags {
    let mut t = Tags {
        failover_priority: 1,
        ..Default::default()
    };
    let Some(Value::Object(map)) = r.get("tags").cloned() else {
        return t;
    };
    t.nofailover = pgpilot_values::bool_tag(&map, "nofailover", "failover_priority");
    t.failover_priority = pgpilot_values::priority_tag(&map, "nofailover", "failover_priority");
    t.nosync = pgpilot_values::bool_tag(&map, "nosync", "sync_priority");
    t.noloadbalance = map.get("noloadbalance").is_some_and(truthy);
    t.clonefrom = map.get("clonefrom").is_some_and(truthy);
    t.nostream = map.get("nostream").is_some_and(truthy);
    t.replicatefrom = map
        .get("replicatefrom")
        .and_then(Value::as_str)
        .map(str::to_string);
    warnings.extend(pgpilot_values::conflicting_tags(&map));
    for (k, v) in &map {
        let keep = match k.as_str() {
            "nofailover" => truthy(v) || map.contains_key("failover_priority"),
            "nosync" => truthy(v) || map.contains_key("sync_priority"),
            "clonefrom" | "noloadbalance" | "nostream" => truthy(v),
            _ => true,
        };
        if keep {
            t.published.insert(k.clone(), v.clone());
        }
    }
    t
}

/// The `watchdog` section (spec/config.md §3.10). A mode, driver or margin Patroni's
/// `--validate-config` would refuse is a problem rather than Patroni's runtime fallback to `off`:
/// a misspelt `required` must not silently run a leader without its fence. Patroni's runtime
/// spellings (`auto`, `require`, `disable(d)`) are accepted.
pub(super) fn watchdog(r: &mut Reader<'_>) -> WatchdogConfig {
    let mut w = WatchdogConfig::default();
    match r.get("watchdog") {
        None | Some(Value::Object(_)) => {}
        Some(other) => {
            r.problem(
                "watchdog",
                format!("{other} didn't pass validation: expected a mapping"),
            );
            return w;
        }
    }
    match r.get("watchdog.mode") {
        None => {}
        Some(Value::Bool(false)) => w.mode = WatchdogMode::Off,
        Some(v) => {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            match shown.to_ascii_lowercase().as_str() {
                "off" | "disable" | "disabled" => w.mode = WatchdogMode::Off,
                "automatic" | "auto" => w.mode = WatchdogMode::Automatic,
                "required" | "require" => w.mode = WatchdogMode::Required,
                _ => r.problem(
                    "watchdog.mode",
                    format!("{shown} didn't pass validation: must be off, automatic or required"),
                ),
            }
        }
    }
    if let Some(device) = r.string("watchdog.device", false) {
        w.device = PathBuf::from(device);
    }
    match r.get("watchdog.safety_margin") {
        None => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|m| m >= -1) => {
            w.safety_margin = n.as_i64().unwrap_or(5);
        }
        Some(v) => r.problem(
            "watchdog.safety_margin",
            format!("{v} didn't pass validation: expected an integer, at least -1"),
        ),
    }
    match r.string("watchdog.driver", false).as_deref() {
        None | Some("default") => {}
        Some("testing") => w.driver = WatchdogDriver::Testing,
        Some(other) => r.problem(
            "watchdog.driver",
            format!("{other} didn't pass validation: must be default or testing"),
        ),
    }
    w
}

/// The `log` section as Patroni's `PatroniLogger.reload_config` reads it; what it would warn
/// about (a `format` of the wrong shape) is a warning here too.
pub(super) fn log_section(r: &mut Reader, warnings: &mut Vec<String>) -> LogConfig {
    let mut log = LogConfig::default();
    if let Some(level) = r.string("log.level", false) {
        log.level = level;
    }
    log.format_json = r
        .string("log.type", false)
        .is_some_and(|t| t.eq_ignore_ascii_case("json"));
    match r.get("log.format") {
        None => {}
        Some(Value::String(f)) => {
            log.plain_format = f.clone();
            log.json_fields = LogConfig::template_fields(f)
                .into_iter()
                .map(|f| (f.clone(), f))
                .collect();
        }
        Some(Value::Array(items)) => {
            let mut fields = Vec::new();
            for item in items {
                match item {
                    Value::String(f) => fields.push((f.clone(), f.clone())),
                    Value::Object(m) => {
                        for (field, renamed) in m {
                            match renamed {
                                Value::String(to) => fields.push((field.clone(), to.clone())),
                                other => warnings.push(format!(
                                    "log.format: expected renamed log field to be a string, but got {other}"
                                )),
                            }
                        }
                    }
                    other => warnings.push(format!(
                        "log.format: expected each item of log format to be a string or dictionary, but got {other}"
                    )),
                }
            }
            if !fields.is_empty() {
                log.json_fields = fields;
            }
            if !log.format_json {
                warnings.push(
                    "log.format: expected a string when log type is plain, using the default format"
                        .into(),
                );
            }
        }
        Some(other) => warnings.push(format!(
            "log.format: expected a string or a list, but got {other}; using the default format"
        )),
    }
    log.dateformat = r.string("log.dateformat", false);
    if let Some(v) = r.get("log.static_fields") {
        match v {
            Value::Object(m) => log.static_fields = m.clone(),
            other => r.problem(
                "log.static_fields",
                format!("{other} didn't pass validation: expected a dictionary"),
            ),
        }
    }
    log.dir = r.string("log.dir", false).map(PathBuf::from);
    if let Some(n) = r.number("log.file_size") {
        log.file_size = n.max(0.0) as u64;
    }
    if let Some(n) = r.number("log.file_num") {
        log.file_num = n.max(0.0) as usize;
    }
    if let Some(n) = r.number("log.mode") {
        if (0.0..=f64::from(0o777)).contains(&n) {
            log.mode = Some(n as u32);
        } else {
            r.problem(
                "log.mode",
                format!("{n} didn't pass validation: must be between 0 and 511 (0o777)"),
            );
        }
    }
    log
}
