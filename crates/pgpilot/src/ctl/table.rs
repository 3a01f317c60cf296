//! patronictl's `print_output`: one table in `pretty` (prettytable with the title embedded in the
//! top border), `tsv`, `json` or `yaml` form. Pure: returns the text, the caller prints it.

use serde_json::{Map, Value};

use crate::yaml;

/// Output formats accepted by `-f/--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pretty,
    Tsv,
    Json,
    Yaml,
    /// `pretty` with members nested under their upstream (the `topology` command).
    Topology,
}

impl Format {
    pub fn is_pretty(self) -> bool {
        matches!(self, Format::Pretty | Format::Topology)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table: column names, rows of JSON values (strings, numbers, tag maps), per-column alignment
/// for pretty output, and the title embedded in the top border (`''` for none).
pub struct Table<'a> {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub right_aligned: &'a [&'a str],
    pub title: String,
}

/// Python's `str()` of a cell value.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => yaml::py_float_repr(f),
            _ => n.to_string(),
        },
        // Not produced by patronictl's tables (tag maps are rendered as YAML first).
        other => yaml::py_json(other),
    }
}

impl Table<'_> {
    /// Renders in `fmt`; `delimiter` is used by `tsv`. The result ends with a newline.
    pub fn render(&self, fmt: Format, delimiter: &str) -> String {
        match fmt {
            Format::Json | Format::Yaml => {
                let elements: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        let mut m = Map::new();
                        for (c, v) in self.columns.iter().zip(r) {
                            // With a title (the cluster list) empty cells are left out.
                            if self.title.is_empty() || !py_str(v).is_empty() {
                                m.insert(c.clone(), v.clone());
                            }
                        }
                        Value::Object(m)
                    })
                    .collect();
                let list = Value::Array(elements);
                if fmt == Format::Json {
                    format!("{}\n", yaml::py_json(&list))
                } else {
                    // click.echo adds a newline after safe_dump's own.
                    format!("{}\n", yaml::dump(&list, false))
                }
            }
            Format::Tsv => {
                let mut out = String::new();
                if !self.columns.is_empty() {
                    out.push_str(&self.columns.join(delimiter));
                    out.push('\n');
                }
                for r in &self.rows {
                    let cells: Vec<String> = r.iter().map(py_str).collect();
                    out.push_str(&cells.join(delimiter));
                    out.push('\n');
                }
                out
            }
            Format::Pretty | Format::Topology => self.pretty(),
        }
    }

    fn pretty(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(py_str).collect())
            .collect();
        let width = |s: &str| s.split('\n').map(|l| l.chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|s| width(s))
                    .chain([c.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let align: Vec<Align> = self
            .columns
            .iter()
            .map(|c| {
                if self.right_aligned.contains(&c.as_str()) {
                    Align::Right
                } else {
                    Align::Left
                }
            })
            .collect();
        let mut hrule = String::from("+");
        for w in &widths {
            hrule.push_str(&"-".repeat(w + 2));
            hrule.push('+');
        }
        // Multi-line cells: a rule after every row (prettytable's hrules=ALL).
        let all_rules = cells.iter().any(|r| r.iter().any(|c| c.contains('\n')));

        let mut out = String::new();
        out.push_str(&with_title(&hrule, &self.title));
        out.push('\n');
        let header: Vec<String> = self.columns.clone();
        out.push_str(&row_lines(&header, &widths, &align));
        out.push_str(&hrule);
        out.push('\n');
        for r in &cells {
            out.push_str(&row_lines(r, &widths, &align));
            if all_rules {
                out.push_str(&hrule);
                out.push('\n');
            }
        }
        if !all_rules || cells.is_empty() {
            out.push_str(&hrule);
            out.push('\n');
        }
        out
    }
}

/// `PatronictlPrettyTable.__build_header`: the title overwrites the top border from column 1.
fn with_title(line: &str, title: &str) -> String {
    if title.is_empty() {
        return line.to_string();
    }
    let line: Vec<char> = line.chars().collect();
    let max = line.len().saturating_sub(2);
    let title: Vec<char> = title.chars().take(max).collect();
    let mut out = String::new();
    out.push(line[0]);
    out.extend(title.iter());
    out.extend(line[1 + title.len()..].iter());
    out
}

fn justify(text: &str, width: usize, align: Align) -> String {
    let pad = " ".repeat(width.saturating_sub(text.chars().count()));
    match align {
        Align::Left => format!("{text}{pad}"),
        Align::Right => format!("{pad}{text}"),
    }
}

fn row_lines(row: &[String], widths: &[usize], align: &[Align]) -> String {
    let split: Vec<Vec<&str>> = row.iter().map(|c| c.split('\n').collect()).collect();
    let height = split.iter().map(Vec::len).max().unwrap_or(1);
    let mut out = String::new();
    for y in 0..height {
        out.push('|');
        for (i, lines) in split.iter().enumerate() {
            let text = lines.get(y).copied().unwrap_or("");
            out.push(' ');
            out.push_str(&justify(text, widths[i], align[i]));
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn history_table() -> Table<'static> {
        Table {
            columns: ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
                .map(String::from)
                .to_vec(),
            rows: vec![
                vec![
                    json!(1),
                    json!(25165984),
                    json!("no recovery target specified"),
                    json!("2024-08-28T19:39:26.352526+00:00"),
                    json!("pg2"),
                ],
                vec![
                    json!(2),
                    json!(50331808),
                    json!("old"),
                    json!(""),
                    json!(""),
                ],
            ],
            right_aligned: &["TL", "LSN"],
            title: String::new(),
        }
    }

    #[test]
    fn pretty_without_title() {
        assert_eq!(
            history_table().render(Format::Pretty, "\t"),
            "\
+----+----------+------------------------------+----------------------------------+------------+
| TL |      LSN | Reason                       | Timestamp                        | New Leader |
+----+----------+------------------------------+----------------------------------+------------+
|  1 | 25165984 | no recovery target specified | 2024-08-28T19:39:26.352526+00:00 | pg2        |
|  2 | 50331808 | old                          |                                  |            |
+----+----------+------------------------------+----------------------------------+------------+
"
        );
    }

    #[test]
    fn json_keeps_empty_cells_without_title() {
        assert_eq!(
            history_table().render(Format::Json, "\t"),
            "[{\"TL\": 1, \"LSN\": 25165984, \"Reason\": \"no recovery target specified\", \
             \"Timestamp\": \"2024-08-28T19:39:26.352526+00:00\", \"New Leader\": \"pg2\"}, \
             {\"TL\": 2, \"LSN\": 50331808, \"Reason\": \"old\", \"Timestamp\": \"\", \
             \"New Leader\": \"\"}]\n"
        );
    }

    #[test]
    fn title_longer_than_table_is_cut() {
        assert_eq!(
            with_title("+----+----+", " Cluster: x (123) "),
            "+ Cluster:+"
        );
    }

    #[test]
    fn multiline_cells_get_rules_between_rows() {
        let t = Table {
            columns: vec!["A".into(), "B".into()],
            rows: vec![
                vec![json!("x"), json!("l1\nline2")],
                vec![json!("y"), json!(7)],
            ],
            right_aligned: &[],
            title: String::new(),
        };
        assert_eq!(
            t.render(Format::Pretty, "\t"),
            "\
+---+-------+
| A | B     |
+---+-------+
| x | l1    |
|   | line2 |
+---+-------+
| y | 7     |
+---+-------+
"
        );
    }
}
