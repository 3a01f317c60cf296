//! `bootstrap.method` and `postgresql.create_replica_methods` with their sections.
//!
//! Where Patroni quietly falls back (a `bootstrap.method` without its section or `command` runs
//! initdb), pgpilot refuses to start and names the key: a restore must never turn into an empty
//! new cluster. Everything else Patroni accepts is accepted, and every key of a method section
//! is used (passed to the command), so nothing here is ignored silently.

use pgpilot_values::{
    guc_value, python_str, truthy, BootstrapRecovery, CustomBootstrap, MethodCommand, ReplicaMethod,
};
use serde_json::{Map, Value};

use super::Reader;

/// The sections the configured methods name (`bootstrap.<method>`, `postgresql.<method>`), and
/// the other `postgresql.<name>` sections with a `command` (methods a standby cluster's
/// `create_replica_methods` may name): modelled keys for the unknown-keys warning.
pub(super) fn method_sections(r: &Reader<'_>, modelled: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::String(m)) = r.get("bootstrap.method") {
        if m != "initdb" {
            out.push(format!("bootstrap.{m}"));
        }
    }
    if let Some(Value::Array(items)) = replica_list(r) {
        for name in items.iter().filter_map(Value::as_str) {
            if name != "basebackup" {
                out.push(format!("postgresql.{name}"));
            }
        }
    }
    for name in other_section_names(r, modelled) {
        out.push(format!("postgresql.{name}"));
    }
    out
}

/// `postgresql.<name>` mappings with a `command` that are neither a modelled key nor named by
/// `postgresql.create_replica_methods`.
fn other_section_names(r: &Reader<'_>, modelled: &[&str]) -> Vec<String> {
    let listed: Vec<&str> = match replica_list(r) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let Some(Value::Object(pg)) = r.get("postgresql") else {
        return Vec::new();
    };
    pg.iter()
        .filter(|(k, v)| {
            v.get("command").is_some_and(Value::is_string)
                && !listed.contains(&k.as_str())
                && !modelled.contains(&format!("postgresql.{k}").as_str())
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The other `postgresql.<name>` method sections ([`other_section_names`]): a standby
/// cluster's `create_replica_methods` may name them, as Patroni reads any `postgresql.<name>`.
pub(super) fn other_replica_methods(
    r: &mut Reader<'_>,
    modelled: &[&str],
    warnings: &mut Vec<String>,
) -> Vec<ReplicaMethod> {
    other_section_names(r, modelled)
        .into_iter()
        .filter_map(|name| custom_method(r, name, "postgresql", warnings))
        .collect()
}

/// The custom replica method `name` from its `postgresql.<name>` section (`list_path` names the
/// list in warnings); `None` after a problem.
fn custom_method(
    r: &mut Reader<'_>,
    name: String,
    list_path: &str,
    warnings: &mut Vec<String>,
) -> Option<ReplicaMethod> {
    let path = format!("postgresql.{name}");
    let section = match r.get(&path) {
        Some(Value::Object(m)) => m.clone(),
        None => {
            warnings.push(format!(
                "{list_path}: {name} has no {path} section; running `{name}` as its \
                 command, as Patroni does"
            ));
            Map::new()
        }
        Some(other) => {
            r.problem(
                &path,
                format!("{other} didn't pass validation: expected a mapping"),
            );
            return None;
        }
    };
    let command_path = format!("{path}.command");
    let command = r
        .string(&command_path, false)
        .unwrap_or_else(|| name.clone());
    let argv = split_command(r, &command_path, &command)?;
    Some(ReplicaMethod::Custom {
        method: method_command(name, command, argv, &section),
        no_leader: section.get("no_leader").is_some_and(truthy),
        keep_data: section.get("keep_data").is_some_and(truthy),
    })
}

fn replica_list<'a>(r: &Reader<'a>) -> Option<&'a Value> {
    r.get("postgresql.create_replica_methods")
        .or_else(|| r.get("postgresql.create_replica_method"))
}

/// Splits `command` as Patroni's `shlex.split` does; a problem at `path` if it can not.
fn split_command(r: &mut Reader<'_>, path: &str, command: &str) -> Option<Vec<String>> {
    match shlex::split(command) {
        Some(argv) if !argv.is_empty() => Some(argv),
        Some(_) => {
            r.problem(path, "is not defined.");
            None
        }
        None => {
            r.problem(
                path,
                format!("{command} didn't pass validation: unbalanced quotes"),
            );
            None
        }
    }
}

/// The method's command with its section's other keys (values as Python's `str()`).
fn method_command(
    name: String,
    command: String,
    argv: Vec<String>,
    section: &Map<String, Value>,
) -> MethodCommand {
    MethodCommand {
        name,
        command,
        argv,
        keys: section
            .iter()
            .filter(|(k, _)| k.as_str() != "command")
            .map(|(k, v)| (k.clone(), python_str(v)))
            .collect(),
        no_params: section.get("no_params").is_some_and(truthy),
    }
}

/// `bootstrap.method`: `None` for initdb.
pub(super) fn bootstrap_method(
    r: &mut Reader<'_>,
    warnings: &mut Vec<String>,
) -> Option<CustomBootstrap> {
    let name = match r.get("bootstrap.method") {
        None => return None,
        Some(Value::String(s)) if s == "initdb" || s.is_empty() => return None,
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            r.problem(
                "bootstrap.method",
                format!("{other} didn't pass validation: expected a method name"),
            );
            return None;
        }
    };
    let path = format!("bootstrap.{name}");
    let Some(Value::Object(section)) = r.get(&path).cloned() else {
        r.problem(
            "bootstrap.method",
            format!(
                "{name} didn't pass validation: there is no {path} section with a command; \
                 refusing to start rather than run initdb instead of the method"
            ),
        );
        return None;
    };
    let command_path = format!("{path}.command");
    let Some(command) = r.string(&command_path, false) else {
        r.problem(
            &command_path,
            format!(
                "is not defined. bootstrap.method is {name}: refusing to start rather than \
                 run initdb instead of the method"
            ),
        );
        return None;
    };
    let argv = split_command(r, &command_path, &command)?;
    let keep = section
        .get("keep_existing_recovery_conf")
        .is_some_and(truthy);
    let recovery = match section.get("recovery_conf") {
        None | Some(Value::Null) if keep => BootstrapRecovery::KeepExisting,
        None | Some(Value::Null) => BootstrapRecovery::None,
        Some(Value::Object(params)) => {
            if keep {
                warnings.push(format!(
                    "{path}.keep_existing_recovery_conf: ignored, {path}.recovery_conf is \
                     written instead"
                ));
            }
            BootstrapRecovery::Params(
                params
                    .iter()
                    .map(|(k, v)| (k.clone(), guc_value(v)))
                    .collect(),
            )
        }
        Some(other) => {
            r.problem(
                &format!("{path}.recovery_conf"),
                format!("{other} didn't pass validation: expected a mapping"),
            );
            return None;
        }
    };
    Some(CustomBootstrap {
        method: method_command(name, command, argv, &section),
        recovery,
    })
}

/// `postgresql.create_replica_methods`, `[basebackup]` when absent or empty.
pub(super) fn replica_methods(
    r: &mut Reader<'_>,
    warnings: &mut Vec<String>,
) -> Vec<ReplicaMethod> {
    let list_path = if r.get("postgresql.create_replica_methods").is_some() {
        "postgresql.create_replica_methods"
    } else {
        "postgresql.create_replica_method"
    };
    let names: Vec<String> = match r.get(list_path) {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                other => {
                    r.problem(
                        list_path,
                        format!("{other} didn't pass validation: expected a method name"),
                    );
                    None
                }
            })
            .collect(),
        Some(other) => {
            r.problem(
                list_path,
                format!("{other} didn't pass validation: expected a list of method names"),
            );
            Vec::new()
        }
    };
    if names.is_empty() {
        return vec![ReplicaMethod::Basebackup];
    }
    let mut methods = Vec::new();
    for name in names {
        if name == "basebackup" {
            methods.push(ReplicaMethod::Basebackup);
            continue;
        }
        if let Some(m) = custom_method(r, name, list_path, warnings) {
            methods.push(m);
        }
    }
    methods
}
