//! Load averages from `<root>/loadavg`.

use std::path::Path;
use std::time::Instant;

use super::{Collect, LoadAverage, Reading, read_proc_file};

/// The kernel's 1, 5 and 15 minute load averages, as they are.
pub(super) struct Load;

impl Collect for Load {
    fn collect(&mut self, root: &Path, _now: Instant, into: &mut Reading) -> Result<(), String> {
        let path = root.join("loadavg");
        let text = read_proc_file(&path)?;
        let load = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        into.load = Some(load);
        Ok(())
    }
}

fn parse(text: &str) -> Result<LoadAverage, String> {
    let mut fields = text.split_whitespace();
    let mut next = |which: &str| -> Result<f64, String> {
        let field = fields
            .next()
            .ok_or_else(|| format!("missing the {which} load average"))?;
        field
            .parse()
            .map_err(|_| format!("bad {which} load average {field:?}"))
    };
    Ok(LoadAverage {
        one: next("1 minute")?,
        five: next("5 minute")?,
        fifteen: next("15 minute")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{fixture, temp_root};

    fn read(root: &Path) -> Result<Option<LoadAverage>, String> {
        let mut reading = Reading::default();
        Load.collect(root, Instant::now(), &mut reading)?;
        Ok(reading.load)
    }

    #[test]
    fn parses_fixture() {
        let expected = LoadAverage {
            one: 1.17,
            five: 1.5,
            fifteen: 0.85,
        };
        assert_eq!(read(&fixture("proc-basic")), Ok(Some(expected)));
    }

    #[test]
    fn short_file_is_an_error_naming_the_file() {
        let root = temp_root(&[("loadavg", "0.10 0.20\n")]);
        let error = read(root.path()).unwrap_err();
        let path = root.path().join("loadavg");
        assert_eq!(
            error,
            format!("{}: missing the 15 minute load average", path.display())
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let root = temp_root(&[]);
        let error = read(root.path()).unwrap_err();
        assert!(
            error.contains(&root.path().join("loadavg").display().to_string()),
            "{error}"
        );
    }
}
