//! ebbctl's errors: each prints as one line (after `ebbctl: `) and chooses
//! the exit code.

use std::path::{Path, PathBuf};

/// The server refused or failed, the controller could not be reached, or a
/// local file could not be used.
pub const EXIT_ERROR: u8 = 1;
/// The invocation or an input file is wrong; nothing was sent (clap exits
/// with the same code for bad flags).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input caught before anything was sent.
    #[error("{0}")]
    Usage(String),
    #[error(
        "no controller found: {} does not exist (is ebb-controller serve running here? use --data-dir or --controller)",
        .0.display()
    )]
    NoController(PathBuf),
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cannot reach the controller at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// Each of several controllers, and why it could not be reached.
    #[error(
        "cannot reach any of the controllers: {}",
        .0.iter().map(|(addr, reason)| format!("{addr}: {reason}")).collect::<Vec<_>>().join("; ")
    )]
    UnreachableAll(Vec<(String, String)>),
    /// A controller that is not the leader refused, naming the leader.
    #[error("{message}")]
    NotLeader { message: String, leader: String },
    /// A gRPC status from the controller, already made readable.
    #[error("{0}")]
    Server(String),
    /// A local step failed (writing certificates, loading the CA).
    #[error("{0}")]
    Local(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }

    /// A file that could not be read, with a reason a person can act on.
    pub fn read(path: &Path, e: &std::io::Error, hint: &str) -> Self {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (run ebbctl as the user that runs the controller?)".to_owned()
            }
            _ => io_reason(e),
        };
        let reason = if hint.is_empty() {
            reason
        } else {
            format!("{reason} ({hint})")
        };
        Error::Read {
            path: path.to_owned(),
            reason,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An io error's text without the trailing "(os error N)".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => strip_os_error(&e.to_string()),
    }
}

pub fn strip_os_error(s: &str) -> String {
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}
