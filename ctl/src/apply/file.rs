//! The file `apply` reads: parsed and validated by `ebb_core::apply_file`
//! (which `ebb-sim` shares), read and turned into ebbctl's errors here.

use std::path::Path;

pub use ebb_core::apply_file::{ApplyFile, ConfigDecl, GroupDecl, TaskDecl};

use crate::error::{Error, Result};

pub fn load(path: &Path) -> Result<ApplyFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, &e, ""))?;
    parse(&path.display().to_string(), &text)
}

/// Parses and validates; a bad file is a usage error naming the file and the key.
pub fn parse(name: &str, text: &str) -> Result<ApplyFile> {
    ebb_core::apply_file::parse(name, text).map_err(Error::Usage)
}
