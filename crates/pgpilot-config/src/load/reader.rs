//! [`Reader`]: typed access to the merged document that collects every problem, with its key
//! path, instead of stopping at the first.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Credentials, Problem};

/// Typed access to the document that collects problems instead of stopping at the first.
pub(crate) struct Reader<'a> {
    pub doc: &'a Value,
    pub problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        let mut cur = self.doc;
        for part in path.split('.') {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur).filter(|v| !v.is_null())
    }

    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn string(&mut self, path: &str, required: bool) -> Option<String> {
        match self.get(path) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(Value::String(_)) | None => {
                if required {
                    self.problem(path, "is not defined.");
                }
                None
            }
            Some(other) => {
                self.problem(
                    path,
                    format!("{other} didn't pass validation: expected a string"),
                );
                None
            }
        }
    }

    /// Patroni's `parse_bool`; any other value is a problem.
    pub fn boolean(&mut self, path: &str) -> Option<bool> {
        let v = self.get(path)?;
        let b = pgpilot_values::parse_bool(v);
        if b.is_none() {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            self.problem(
                path,
                format!("{shown} didn't pass validation: expected a boolean"),
            );
        }
        b
    }

    pub fn number(&mut self, path: &str) -> Option<f64> {
        match self.get(path)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => Some(f),
                Err(_) => {
                    self.problem(
                        path,
                        format!("{s} didn't pass validation: expected a number"),
                    );
                    None
                }
            },
            other => {
                self.problem(
                    path,
                    format!("{other} didn't pass validation: expected a number"),
                );
                None
            }
        }
    }

    pub(super) fn credentials(&mut self, path: &str, required: bool) -> Option<Credentials> {
        if self.get(path).is_none() {
            if required {
                self.problem(path, "is not defined.");
            }
            return None;
        }
        let username = self.string(&format!("{path}.username"), true)?;
        let password = self.string(&format!("{path}.password"), false);
        Some(Credentials {
            username,
            password,
            options: BTreeMap::new(),
        })
    }

    /// A `postgresql.authentication.<role>` entry: username, password and the libpq options
    /// Patroni passes on (`sslmode`, `sslcert`, ...). Values of the enumerated options are
    /// checked here, so a typo is refused at start rather than at the first connection; any
    /// other key is named in a warning.
    pub(super) fn pg_credentials(
        &mut self,
        path: &str,
        required: bool,
        warnings: &mut Vec<String>,
    ) -> Option<Credentials> {
        let mut creds = self.credentials(path, required)?;
        let Some(Value::Object(entry)) = self.get(path) else {
            return Some(creds);
        };
        for key in entry.keys() {
            if key == "username" || key == "password" {
                continue;
            }
            let key_path = format!("{path}.{key}");
            if !pgpilot_values::AUTH_LIBPQ_OPTIONS.contains(&key.as_str()) {
                warnings.push(format!(
                    "{key_path}: not a connection option Patroni or pgpilot pass to libpq; ignored"
                ));
                continue;
            }
            let Some(value) = self.string(&key_path, false) else {
                continue;
            };
            let allowed: &[&str] = match key.as_str() {
                "sslmode" => &[
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ],
                "gssencmode" | "channel_binding" => &["disable", "prefer", "require"],
                "sslnegotiation" => &["postgres", "direct"],
                _ => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                self.problem(
                    &key_path,
                    format!(
                        "{value} didn't pass validation: expected one of {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            creds.options.insert(key.clone(), value);
        }
        Some(creds)
    }

    /// `host:port` split; problems name `path`.
    pub(super) fn host_port(&mut self, path: &str) -> Option<(String, u16)> {
        let s = self.string(path, true)?;
        match s.rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(port) => Some((h.to_string(), port)),
                Err(_) => {
                    self.problem(
                        path,
                        format!("{s} didn't pass validation: the port is not a number"),
                    );
                    None
                }
            },
            None => {
                self.problem(
                    path,
                    format!("{s} didn't pass validation: expected host:port"),
                );
                None
            }
        }
    }

    /// `initdb`/`basebackup` option lists: `opt`, `{opt: value}`, or a mapping.
    pub(super) fn options(&mut self, path: &str, forbidden: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |me: &mut Self, k: &str, v: Option<&Value>| {
            if forbidden.contains(&k) {
                me.problem(
                    path,
                    format!("{k} didn't pass validation: option {k} is not allowed"),
                );
                return;
            }
            match v {
                None | Some(Value::Null) => out.push(format!("--{k}")),
                Some(Value::String(s)) => out.push(format!("--{k}={s}")),
                Some(other) => out.push(format!("--{k}={other}")),
            }
        };
        match self.get(path) {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => push(self, s, None),
                        Value::Object(m) if m.len() == 1 => {
                            for (k, v) in m {
                                push(self, k, Some(v));
                            }
                        }
                        other => self.problem(path, format!("{other} didn't pass validation: expected an option or a single-key mapping")),
                    }
                }
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    push(self, k, Some(v));
                }
            }
            Some(other) => self.problem(
                path,
                format!("{other} didn't pass validation: expected a list"),
            ),
        }
        out
    }

    pub(super) fn lines(&mut self, path: &str) -> Option<Vec<String>> {
        match self.get(path)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect(),
            ),
            other => {
                self.problem(
                    path,
                    format!("{other} didn't pass validation: expected a list of lines"),
                );
                None
            }
        }
    }
}
