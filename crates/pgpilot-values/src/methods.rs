//! The user's own ways to fill a data directory: a custom bootstrap method (`bootstrap.method`
//! naming a `bootstrap.<method>` section) run instead of initdb, and the entries of
//! `postgresql.create_replica_methods` tried in order instead of (or before) pg_basebackup.
//! Read by the configuration loader, run by PostgreSQL control, so they live here, below both.
//!
//! The argument lists are Patroni's (`postgresql/bootstrap.py`): the command as a shell would
//! split it (without a shell), then `--key=value` arguments whose values are written as Python's
//! `str()` writes them, because scripts written for Patroni parse exactly that.

use serde_json::Value;

/// A user command with the other keys of its section, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodCommand {
    /// The method's name (`bootstrap.method`, or the `create_replica_methods` entry).
    pub name: String,
    /// `command` as written, for the log.
    pub command: String,
    /// `command` split as a POSIX shell splits words (quotes, backslashes), run without a shell.
    pub argv: Vec<String>,
    /// The section's other keys in file order with their values as Python's `str()` renders
    /// them (`True`, `1`, `None`).
    pub keys: Vec<(String, String)>,
    /// `no_params`: do not add the `--scope`/`--datadir`/... arguments.
    pub no_params: bool,
}

/// Keys of a `bootstrap.<method>` section that are not passed to the command (Patroni's
/// `reserved_args`).
pub const BOOTSTRAP_RESERVED: &[&str] = &[
    "command",
    "no_params",
    "keep_existing_recovery_conf",
    "recovery_conf",
    "scope",
    "datadir",
];

/// Keys of a `postgresql.<method>` section that are dropped from the arguments when
/// `no_params` is set (Patroni pops them then, and passes them otherwise).
const REPLICA_FLAGS: &[&str] = &["no_params", "no_leader", "keep_data"];

impl MethodCommand {
    /// Arguments of a custom bootstrap: the command, `--scope=<scope> --datadir=<data_dir>`
    /// unless `no_params`, then every other key of the section (also with `no_params`, as
    /// Patroni does) except the reserved ones.
    pub fn bootstrap_argv(&self, scope: &str, data_dir: &str) -> Vec<String> {
        let mut argv = self.argv.clone();
        if !self.no_params {
            argv.push(format!("--scope={scope}"));
            argv.push(format!("--datadir={data_dir}"));
        }
        argv.extend(
            self.keys
                .iter()
                .filter(|(k, _)| !BOOTSTRAP_RESERVED.contains(&k.as_str()))
                .map(|(k, v)| format!("--{k}={v}")),
        );
        argv
    }

    /// Arguments of a replica creation method. Without `no_params`: every key of the section
    /// (flags included) with `scope`, `role=replica`, `datadir` and `connstring` set over them,
    /// in place when the section names them, else appended in that order (Patroni's
    /// `dict.update`). With `no_params`: the section's keys without the three flags.
    pub fn replica_argv(&self, scope: &str, data_dir: &str, connstring: &str) -> Vec<String> {
        let mut keys: Vec<(String, String)> = self.keys.clone();
        if self.no_params {
            keys.retain(|(k, _)| !REPLICA_FLAGS.contains(&k.as_str()));
        } else {
            for (name, value) in [
                ("scope", scope),
                ("role", "replica"),
                ("datadir", data_dir),
                ("connstring", connstring),
            ] {
                match keys.iter_mut().find(|(k, _)| k == name) {
                    Some(entry) => entry.1 = value.to_string(),
                    None => keys.push((name.to_string(), value.to_string())),
                }
            }
        }
        let mut argv = self.argv.clone();
        argv.extend(keys.iter().map(|(k, v)| format!("--{k}={v}")));
        argv
    }
}

/// How a custom bootstrap's restored data directory reaches a consistent primary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BootstrapRecovery {
    /// Neither `recovery_conf` nor `keep_existing_recovery_conf`: the recovery files the restore
    /// left are removed and PostgreSQL starts as a primary (crash recovery from the backup).
    /// Also what every configuration written outside a custom bootstrap says.
    #[default]
    None,
    /// `recovery_conf`: these settings (name, value) are written to postgresql.conf with
    /// `recovery.signal` (`standby.signal` when `standby_mode` is true), PostgreSQL recovers
    /// until its target and ends recovery itself.
    Params(Vec<(String, String)>),
    /// `keep_existing_recovery_conf`: the signal files and `postgresql.auto.conf` settings the
    /// restore tool wrote (pgBackRest, Barman) are left as they are.
    KeepExisting,
}

/// `bootstrap.method` other than `initdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomBootstrap {
    pub method: MethodCommand,
    pub recovery: BootstrapRecovery,
}

/// One entry of `postgresql.create_replica_methods`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaMethod {
    /// The built-in pg_basebackup (with `postgresql.basebackup` options).
    Basebackup,
    Custom {
        method: MethodCommand,
        /// `no_leader`: may run when no member can be cloned from (restores from a backup).
        no_leader: bool,
        /// `keep_data`: do not empty the data directory before and after this method.
        keep_data: bool,
    },
}

impl ReplicaMethod {
    pub fn name(&self) -> &str {
        match self {
            ReplicaMethod::Basebackup => "basebackup",
            ReplicaMethod::Custom { method, .. } => &method.name,
        }
    }

    /// Whether it can create a replica without a member to connect to (Patroni's
    /// `replica_method_can_work_without_replication_connection`).
    pub fn works_without_leader(&self) -> bool {
        matches!(
            self,
            ReplicaMethod::Custom {
                no_leader: true,
                ..
            }
        )
    }
}

/// A YAML value as Python's `str()` writes it: what Patroni puts after `--key=`.
pub fn python_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr()` of a value inside a list or dict (strings quoted).
fn python_repr(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains('\'') && !s.contains('"') => format!("\"{s}\""),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => python_str(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn method(keys: &[(&str, &str)], no_params: bool) -> MethodCommand {
        MethodCommand {
            name: "m".into(),
            command: "/bin/restore --x=\"a b\"".into(),
            argv: vec!["/bin/restore".into(), "--x=a b".into()],
            keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            no_params,
        }
    }

    #[test]
    fn bootstrap_arguments_are_scope_datadir_then_other_keys() {
        let m = method(
            &[
                ("test-argument", "test-value"),
                ("recovery_conf", "{}"),
                ("keep_existing_recovery_conf", "True"),
                ("scope", "ignored"),
                ("no_params", "False"),
                ("datadir", "ignored"),
            ],
            false,
        );
        assert_eq!(
            m.bootstrap_argv("batman", "/data/pg"),
            [
                "/bin/restore",
                "--x=a b",
                "--scope=batman",
                "--datadir=/data/pg",
                "--test-argument=test-value"
            ]
        );
    }

    /// Patroni's `no_params` drops only `--scope` and `--datadir`: the section's own keys
    /// still reach the command.
    #[test]
    fn bootstrap_no_params_keeps_the_sections_keys() {
        let m = method(&[("no_params", "True"), ("sleep", "5")], true);
        assert_eq!(
            m.bootstrap_argv("batman", "/data/pg"),
            ["/bin/restore", "--x=a b", "--sleep=5"]
        );
    }

    #[test]
    fn replica_arguments_follow_patronis_dict_update() {
        let m = method(&[("no_leader", "1"), ("role", "x"), ("extra", "y")], false);
        assert_eq!(
            m.replica_argv("batman", "/d", "dbname=postgres user=rep host=h port=5432"),
            [
                "/bin/restore",
                "--x=a b",
                "--no_leader=1",
                "--role=replica",
                "--extra=y",
                "--scope=batman",
                "--datadir=/d",
                "--connstring=dbname=postgres user=rep host=h port=5432"
            ]
        );
    }

    #[test]
    fn replica_no_params_drops_the_flags_and_adds_nothing() {
        let m = method(
            &[
                ("no_params", "True"),
                ("keep_data", "True"),
                ("no_leader", "1"),
                ("envdir", "/etc/wal-e"),
            ],
            true,
        );
        assert_eq!(
            m.replica_argv("batman", "/d", ""),
            ["/bin/restore", "--x=a b", "--envdir=/etc/wal-e"]
        );
    }

    #[test]
    fn values_are_written_as_python_writes_them() {
        assert_eq!(python_str(&json!(true)), "True");
        assert_eq!(python_str(&json!(false)), "False");
        assert_eq!(python_str(&json!(null)), "None");
        assert_eq!(python_str(&json!(1)), "1");
        assert_eq!(python_str(&json!(2.5)), "2.5");
        assert_eq!(python_str(&json!("a b")), "a b");
        assert_eq!(python_str(&json!(["a", 1, true])), "['a', 1, True]");
        assert_eq!(python_str(&json!({"k": "v"})), "{'k': 'v'}");
    }

    #[test]
    fn only_custom_methods_with_no_leader_work_without_a_leader() {
        assert!(!ReplicaMethod::Basebackup.works_without_leader());
        let custom = |no_leader| ReplicaMethod::Custom {
            method: method(&[], false),
            no_leader,
            keep_data: false,
        };
        assert!(custom(true).works_without_leader());
        assert!(!custom(false).works_without_leader());
        assert_eq!(custom(true).name(), "m");
    }
}
