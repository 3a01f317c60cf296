//! `edit-config` transformations, all pure: `-s k.path=yaml` (with `postgresql.parameters.*`
//! keeping dots in GUC names), `--apply`/`--replace` deep merge with Patroni's `patch_config`
//! rules (null deletes, values replaced only when their `str()` differs), and the unified diff as
//! Python's `difflib.unified_diff` prints it.

use serde_json::{Map, Value};

use crate::table::py_str;

/// Parses a `-s` value as YAML (`25` -> int, `on` -> true, `null`/empty -> null).
pub fn parse_yaml_value(text: &str) -> anyhow::Result<Value> {
    let trimmed = text.trim();
    if matches!(trimmed, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    let v = pgpilot_config::yaml::parse(text, "--set value")?;
    // The loader turns an empty/null document into `{}`; only a literal `{}` means that.
    if v.as_object().is_some_and(Map::is_empty) && !trimmed.starts_with('{') {
        return Ok(Value::Null);
    }
    Ok(v)
}

/// `set_path_value`: sets (or with null deletes) the value at `path`, creating intermediate maps
/// (a scalar in the way is replaced); maps emptied by a deletion are removed.
fn set_path_value(config: &mut Map<String, Value>, path: &[&str], value: &Value) {
    let Some((&key, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        if value.is_null() {
            config.remove(key);
        } else {
            config.insert(key.to_string(), value.clone());
        }
        return;
    }
    if !config.get(key).is_some_and(Value::is_object) {
        config.insert(key.to_string(), Value::Object(Map::new()));
    }
    let mut emptied = false;
    if let Some(Value::Object(sub)) = config.get_mut(key) {
        set_path_value(sub, rest, value);
        emptied = sub.is_empty();
    }
    if emptied {
        config.remove(key);
    }
}

/// Applies `key.path=value` pairs (`apply_config_changes`). Errors name the bad pair.
pub fn apply_config_changes(data: &Value, pairs: &[String]) -> anyhow::Result<Value> {
    let mut changed = data.as_object().cloned().unwrap_or_default();
    for pair in pairs {
        let Some((key_path, value)) = pair.split_once('=') else {
            anyhow::bail!("Invalid parameter setting {pair}");
        };
        if key_path.trim().is_empty() {
            anyhow::bail!("Invalid parameter setting {pair}");
        }
        let value = parse_yaml_value(value)?;
        let path: Vec<&str> = key_path.trim().split('.').collect();
        set_path(&mut changed, &path, &value);
    }
    Ok(Value::Object(changed))
}

/// PostgreSQL GUCs are not nested but may contain dots: below `postgresql.parameters` the rest
/// of the path is one name.
fn set_path(config: &mut Map<String, Value>, path: &[&str], value: &Value) {
    if path.len() > 3 && path[0] == "postgresql" && path[1] == "parameters" {
        let guc = path[2..].join(".");
        set_path_value(config, &["postgresql", "parameters", guc.as_str()], value);
    } else {
        set_path_value(config, path, value);
    }
}

/// Patroni's `patch_config`: merges `data` into `config`. `null` deletes; maps merge recursively;
/// other values replace when `str(old) != str(new)`. Returns whether anything changed.
pub fn patch_config(config: &mut Map<String, Value>, data: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in data {
        if value.is_null() {
            if config.remove(name).is_some_and(|old| !old.is_null()) {
                changed = true;
            }
            continue;
        }
        match config.get_mut(name) {
            Some(existing) => {
                if let Value::Object(new) = value {
                    if let Value::Object(old) = existing {
                        changed |= patch_config(old, new);
                    } else {
                        *existing = value.clone();
                        changed = true;
                    }
                } else if py_str(existing) != py_str(value) {
                    *existing = value.clone();
                    changed = true;
                }
            }
            None => {
                config.insert(name.clone(), value.clone());
                changed = true;
            }
        }
    }
    changed
}

/// `difflib.unified_diff(before, after)` lines as patronictl echoes them (no trailing newlines;
/// the file header lines are `--- ` and `+++ `). Empty when the texts are equal.
pub fn unified_diff(before: &str, after: &str) -> Vec<String> {
    let listify = |s: &str| -> Vec<String> {
        s.trim_end_matches('\n')
            .split('\n')
            .map(str::to_string)
            .collect()
    };
    let a = listify(before);
    let b = listify(after);
    let groups = grouped_opcodes(&a, &b, 3);
    let mut out = Vec::new();
    for group in groups {
        if out.is_empty() {
            out.push("--- ".to_string());
            out.push("+++ ".to_string());
        }
        let (first, last) = (group[0], group[group.len() - 1]);
        out.push(format!(
            "@@ -{} +{} @@",
            format_range(first.1, last.2),
            format_range(first.3, last.4)
        ));
        for (tag, i1, i2, j1, j2) in group {
            match tag {
                Tag::Equal => out.extend(a[i1..i2].iter().map(|l| format!(" {l}"))),
                Tag::Delete => out.extend(a[i1..i2].iter().map(|l| format!("-{l}"))),
                Tag::Insert => out.extend(b[j1..j2].iter().map(|l| format!("+{l}"))),
                Tag::Replace => {
                    out.extend(a[i1..i2].iter().map(|l| format!("-{l}")));
                    out.extend(b[j1..j2].iter().map(|l| format!("+{l}")));
                }
            }
        }
    }
    out
}

fn format_range(start: usize, stop: usize) -> String {
    let mut beginning = start + 1;
    let length = stop - start;
    if length == 1 {
        return beginning.to_string();
    }
    if length == 0 {
        beginning -= 1;
    }
    format!("{beginning},{length}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Equal,
    Replace,
    Delete,
    Insert,
}

type Opcode = (Tag, usize, usize, usize, usize);

/// `SequenceMatcher(None, a, b)` (with autojunk) `.find_longest_match`.
fn find_longest_match(
    a: &[String],
    b: &[String],
    b2j: &std::collections::HashMap<&str, Vec<usize>>,
    (alo, ahi, blo, bhi): (usize, usize, usize, usize),
) -> (usize, usize, usize) {
    let (mut besti, mut bestj, mut bestsize) = (alo, blo, 0);
    let mut j2len: std::collections::HashMap<usize, usize> = Default::default();
    for (i, line) in a.iter().enumerate().take(ahi).skip(alo) {
        let mut newj2len: std::collections::HashMap<usize, usize> = Default::default();
        if let Some(js) = b2j.get(line.as_str()) {
            for &j in js {
                if j < blo {
                    continue;
                }
                if j >= bhi {
                    break;
                }
                let k = j.checked_sub(1).and_then(|p| j2len.get(&p)).unwrap_or(&0) + 1;
                newj2len.insert(j, k);
                if k > bestsize {
                    besti = i + 1 - k;
                    bestj = j + 1 - k;
                    bestsize = k;
                }
            }
        }
        j2len = newj2len;
    }
    // Popular lines (autojunk) are not in b2j: extend the match over equal neighbours.
    while besti > alo && bestj > blo && a[besti - 1] == b[bestj - 1] {
        besti -= 1;
        bestj -= 1;
        bestsize += 1;
    }
    while besti + bestsize < ahi
        && bestj + bestsize < bhi
        && a[besti + bestsize] == b[bestj + bestsize]
    {
        bestsize += 1;
    }
    (besti, bestj, bestsize)
}

fn matching_blocks(a: &[String], b: &[String]) -> Vec<(usize, usize, usize)> {
    let mut b2j: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (j, line) in b.iter().enumerate() {
        b2j.entry(line.as_str()).or_default().push(j);
    }
    if b.len() >= 200 {
        let ntest = b.len() / 100 + 1;
        b2j.retain(|_, js| js.len() <= ntest);
    }
    let mut queue = vec![(0, a.len(), 0, b.len())];
    let mut blocks = Vec::new();
    while let Some((alo, ahi, blo, bhi)) = queue.pop() {
        let (i, j, k) = find_longest_match(a, b, &b2j, (alo, ahi, blo, bhi));
        if k > 0 {
            blocks.push((i, j, k));
            if alo < i && blo < j {
                queue.push((alo, i, blo, j));
            }
            if i + k < ahi && j + k < bhi {
                queue.push((i + k, ahi, j + k, bhi));
            }
        }
    }
    blocks.sort_unstable();
    let mut collapsed: Vec<(usize, usize, usize)> = Vec::new();
    for (i, j, k) in blocks {
        match collapsed.last_mut() {
            Some((i1, j1, k1)) if *i1 + *k1 == i && *j1 + *k1 == j => *k1 += k,
            _ => collapsed.push((i, j, k)),
        }
    }
    collapsed.push((a.len(), b.len(), 0));
    collapsed
}

fn opcodes(a: &[String], b: &[String]) -> Vec<Opcode> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    for (ai, bj, size) in matching_blocks(a, b) {
        let tag = if i < ai && j < bj {
            Some(Tag::Replace)
        } else if i < ai {
            Some(Tag::Delete)
        } else if j < bj {
            Some(Tag::Insert)
        } else {
            None
        };
        if let Some(tag) = tag {
            out.push((tag, i, ai, j, bj));
        }
        i = ai + size;
        j = bj + size;
        if size > 0 {
            out.push((Tag::Equal, ai, i, bj, j));
        }
    }
    out
}

fn grouped_opcodes(a: &[String], b: &[String], n: usize) -> Vec<Vec<Opcode>> {
    let mut codes = opcodes(a, b);
    if codes.is_empty() {
        codes.push((Tag::Equal, 0, 1, 0, 1));
    }
    if let Some(first) = codes.first_mut() {
        if first.0 == Tag::Equal {
            let (t, i1, i2, j1, j2) = *first;
            *first = (
                t,
                i1.max(i2.saturating_sub(n)),
                i2,
                j1.max(j2.saturating_sub(n)),
                j2,
            );
        }
    }
    if let Some(last) = codes.last_mut() {
        if last.0 == Tag::Equal {
            let (t, i1, i2, j1, j2) = *last;
            *last = (t, i1, i2.min(i1 + n), j1, j2.min(j1 + n));
        }
    }
    let nn = n + n;
    let mut groups = Vec::new();
    let mut group = Vec::new();
    for (tag, mut i1, i2, mut j1, j2) in codes {
        if tag == Tag::Equal && i2 - i1 > nn {
            group.push((tag, i1, i2.min(i1 + n), j1, j2.min(j1 + n)));
            groups.push(std::mem::take(&mut group));
            i1 = i1.max(i2.saturating_sub(n));
            j1 = j1.max(j2.saturating_sub(n));
        }
        group.push((tag, i1, i2, j1, j2));
    }
    if !(group.is_empty() || group.len() == 1 && group[0].0 == Tag::Equal) {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(data: Value, pairs: &[&str]) -> Value {
        let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        apply_config_changes(&data, &pairs).unwrap()
    }

    #[test]
    fn set_paths_parse_values_as_yaml() {
        let v = set(
            json!({"ttl": 30}),
            &[
                "ttl=20",
                "postgresql.use_slots=on",
                "name=' x '",
                "list=[1, a]",
            ],
        );
        assert_eq!(
            v,
            json!({"ttl": 20, "postgresql": {"use_slots": true}, "name": " x ", "list": [1, "a"]})
        );
    }

    #[test]
    fn null_deletes_and_prunes_empty_maps() {
        let v = set(
            json!({"ttl": 30, "postgresql": {"parameters": {"a": 1}}, "loop_wait": 10}),
            &[
                "postgresql.parameters.a=null",
                "loop_wait=",
                "missing.key=null",
            ],
        );
        assert_eq!(v, json!({"ttl": 30}));
    }

    #[test]
    fn postgresql_parameters_keep_dots_in_guc_names() {
        let v = set(
            json!({}),
            &[
                "postgresql.parameters.pg_stat_statements.track=all",
                " a.b.c =1",
            ],
        );
        assert_eq!(
            v,
            json!({"postgresql": {"parameters": {"pg_stat_statements.track": "all"}},
                   "a": {"b": {"c": 1}}})
        );
    }

    #[test]
    fn set_through_a_scalar_replaces_it() {
        assert_eq!(set(json!({"a": 1}), &["a.b=2"]), json!({"a": {"b": 2}}));
    }

    #[test]
    fn invalid_pairs_are_refused() {
        let err = apply_config_changes(&json!({}), &["ttl".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), "Invalid parameter setting ttl");
    }

    #[test]
    fn patch_config_rules() {
        let mut c = json!({"ttl": 30, "a": {"b": 1, "c": 2}, "s": "1", "x": {"y": 1}})
            .as_object()
            .unwrap()
            .clone();
        let patch = json!({"a": {"b": null, "d": 4}, "s": 1, "x": 5, "n": null, "new": [1]});
        assert!(patch_config(&mut c, patch.as_object().unwrap()));
        assert_eq!(
            Value::Object(c.clone()),
            json!({"ttl": 30, "a": {"c": 2, "d": 4}, "s": "1", "x": 5, "new": [1]})
        );
        assert!(!patch_config(&mut c, json!({"s": 1}).as_object().unwrap()));
    }

    #[test]
    fn unified_diff_like_difflib() {
        let before = "loop_wait: 10\npostgresql:\n  parameters:\n    max_connections: 100\n  use_slots: true\nretry_timeout: 10\n";
        let after = "loop_wait: 10\npostgresql:\n  parameters:\n    max_connections: 100\n    superuser_reserved_connections: 6\n  use_slots: true\nretry_timeout: 10\nttl: 20\n";
        assert_eq!(
            unified_diff(before, after),
            vec![
                "--- ",
                "+++ ",
                "@@ -2,5 +2,7 @@",
                " postgresql:",
                "   parameters:",
                "     max_connections: 100",
                "+    superuser_reserved_connections: 6",
                "   use_slots: true",
                " retry_timeout: 10",
                "+ttl: 20",
            ]
        );
        assert!(unified_diff(before, before).is_empty());
    }

    #[test]
    fn unified_diff_splits_distant_hunks() {
        let a: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let b = a.replace("l2\n", "x2\n").replace("l19\n", "");
        assert_eq!(
            unified_diff(&a, &b),
            vec![
                "--- ",
                "+++ ",
                "@@ -1,5 +1,5 @@",
                " l1",
                "-l2",
                "+x2",
                " l3",
                " l4",
                " l5",
                "@@ -16,5 +16,4 @@",
                " l16",
                " l17",
                " l18",
                "-l19",
                " l20",
            ]
        );
    }
}
