//! `ebbctl completion SHELL` and `ebbctl man --dir DIR`: shell completions
//! and man pages made from the command tree itself, so they never drift
//! from the flags. The packages run `man` at build time (packaging/build.sh).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, Shell};
use crate::error::{Error, Result};

/// The completion script for `shell`, as the shell sources it.
pub fn completion(shell: Shell, out: &mut impl Write) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "ebbctl", out);
}

/// One man page per command, `ebbctl.1`, `ebbctl-group.1`,
/// `ebbctl-group-create.1`..., written into `dir` (made if missing).
pub fn man_pages(dir: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        Error::Local(format!(
            "cannot write the man pages into {}: {}",
            dir.display(),
            crate::error::io_reason(&e)
        ))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_gets_a_man_page_with_its_examples() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(&dir.path().join("man1")).unwrap();
        let page = |name: &str| {
            std::fs::read_to_string(dir.path().join("man1").join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert!(page("ebbctl.1").contains(".TH ebbctl 1"));
        let create = page("ebbctl-group-create.1");
        assert!(
            create.contains("ebbctl group create web \\-\\-min 1 \\-\\-max 10"),
            "{create}"
        );
        assert!(
            create.contains("The fewest instances the group keeps"),
            "{create}"
        );
        page("ebbctl-completion.1");
        // Hidden commands (this one) get none.
        assert!(!dir.path().join("man1/ebbctl-man.1").exists());
    }

    #[test]
    fn completions_name_the_subcommands() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F _ebbctl"),
            (Shell::Zsh, "#compdef ebbctl"),
            (Shell::Fish, "complete -c ebbctl"),
        ] {
            let mut out = Vec::new();
            completion(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell:?}: {text}");
            assert!(text.contains("notification"), "{shell:?}");
        }
    }
}
