//! One field compared: a wanted value against the current one, recorded as
//! a `Change`, and how values are shown in the printed line.

use std::collections::BTreeMap;

use super::step::Change;

pub(super) fn show_list(l: &[String]) -> String {
    format!("[{}]", l.join(", "))
}

pub(super) fn show_map(m: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

pub(super) fn show_str(s: &str) -> String {
    format!("{s:?}")
}

/// Compares a wanted value (if the file gives one) with the current one.
pub(super) fn differs<T: PartialEq + Clone>(
    changes: &mut Vec<Change>,
    field: &'static str,
    wanted: Option<&T>,
    current: &T,
    show: impl Fn(&T) -> String,
) -> Option<T> {
    let wanted = wanted.filter(|w| *w != current)?;
    changes.push(Change {
        field,
        from: show(current),
        to: show(wanted),
    });
    Some(wanted.clone())
}

/// A number as people write it (`80`, `0.5`).
pub(super) fn show_num(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

pub(super) fn show_opt_num(v: &Option<u32>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Two RFC 3339 strings name the same instant (the server may normalise).
pub(super) fn same_instant(a: &str, b: &str) -> bool {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
