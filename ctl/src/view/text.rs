//! Text helpers every view shares: aligned tables, `key: value` blocks,
//! times and spans, and the small formats of values (`-` for unset).

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

/// Group ids to names, for tables that show a group column.
pub type GroupNames = HashMap<String, String>;
/// Rule ids to names, for alarms' actions and tasks' rules.
pub type RuleNames = HashMap<String, String>;

/// An empty string as unset.
pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A zero timestamp as unset.
pub fn non_zero(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

/// The group's name when known, else its id.
pub fn group_name(names: &GroupNames, id: &str) -> String {
    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// `name (id)` when the name is known, else the id.
pub fn named(names: &HashMap<String, String>, id: &str) -> String {
    match names.get(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let headers = self.headers.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}", format!("{k}:")).trim_end().to_owned() + "\n")
        .collect()
}

/// The wall clock as Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as RFC 3339 UTC to the second; `-` for unset.
pub fn rfc3339(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "-".to_owned(),
    }
}

/// A span the way `kubectl` shows ages: `45s`, `12m`, `5h`, `3d`.
pub fn age(now_ms: i64, since_ms: i64) -> String {
    if since_ms <= 0 {
        return "-".to_owned();
    }
    let secs = (now_ms - since_ms).max(0) / 1000;
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        7_200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// How long something took: `850ms`, `12s`, `3m4s`, `1h2m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A utilisation as a whole percentage; `-` for unknown.
pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

/// Items joined with commas; `-` for none.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// The text, or `-` for unset or empty.
pub fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

/// The text with control characters escaped (`\n`), so text from a
/// target or a refused input keeps to its line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A command line as a person would type it.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `k=v, k=v`; `-` for none.
pub fn map_line(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value as people write it: `80`, `0.5`, `-2`.
pub fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::T0;

    #[test]
    fn times_are_rfc3339_utc_and_short_ages() {
        assert_eq!(rfc3339(T0), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(0), "-");
        assert_eq!(age(T0 + 45_000, T0), "45s");
        assert_eq!(age(T0 + 600_000, T0), "10m");
        assert_eq!(age(T0 + 5 * 3_600_000, T0), "5h");
        assert_eq!(age(T0 + 3 * 86_400_000, T0), "3d");
        assert_eq!(age(T0, 0), "-");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(184_000), "3m4s");
        assert_eq!(duration(3_720_000), "1h2m");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let mut t = Table::new(&["ID", "NAME", "X"]);
        t.row(vec!["a".into(), "longer-name".into(), "".into()]);
        t.row(vec!["bbbb".into(), "n".into(), "z".into()]);
        assert_eq!(
            t.render(),
            "ID    NAME         X\n\
             a     longer-name\n\
             bbbb  n            z\n"
        );
    }

    #[test]
    fn commands_are_quoted_only_where_needed() {
        let argv: Vec<String> = ["python3", "-m", "http.server", "0", "a b"]
            .map(String::from)
            .into();
        assert_eq!(command_line(&argv), "python3 -m http.server 0 'a b'");
    }
}
