//! The output format (`-o`) and how a result is printed in it: pretty JSON
//! for scripts, or a line for a person.

use clap::ValueEnum;
use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and one-line results, for a person
    Table,
    /// As table, with more columns (instances: address, configuration; activities: progress, instances)
    Wide,
    /// Pretty JSON, for scripts
    Json,
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    print!("{}", json_text(value)?);
    Ok(())
}

/// Pretty JSON and a newline.
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Local(format!("cannot encode the output as JSON: {e}")))?;
    Ok(format!("{text}\n"))
}

/// A mutation's result: the object as JSON, or one line for a person.
pub fn done<T: Serialize>(out: Output, value: &T, line: String) -> Result<()> {
    match out {
        Output::Json => print_json(value),
        Output::Table | Output::Wide => {
            println!("{line}");
            Ok(())
        }
    }
}
