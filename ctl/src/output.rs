//! The output format (`-o`) and how a result is printed in it: pretty JSON
//! for scripts, or a line for a person.

use clap::ValueEnum;
use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Local(format!("cannot encode the output as JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// A mutation's result: the object as JSON, or one line for a person.
pub fn done<T: Serialize>(out: Output, value: &T, line: String) -> Result<()> {
    match out {
        Output::Json => print_json(value),
        Output::Table => {
            println!("{line}");
            Ok(())
        }
    }
}
