//! What the microvm tests and benchmark need: the kernel and initramfs
//! (built here with packaging/microvm/build.sh when missing or older than
//! the agent), and which accelerator boots them on this host.
//!
//! A host may have an openable /dev/kvm that still cannot boot a stock
//! kernel (nested virtualisation such as PVM, which runs only guests built
//! for it), so `accel` boots the image once under KVM and looks for its
//! init's first words; where that fails the VMs run under TCG (emulation)
//! and the tests say so on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{bin, profile_dir};

/// How long a stock kernel may take under KVM to reach its /init here.
const KVM_PROBE: Duration = Duration::from_secs(20);
/// What packaging/microvm/init prints when booted without instance data.
const INIT_WORDS: &str = "ebb-init: no /ebb/agent.toml";

/// The images a controller's `[provider.microvm]` points at.
#[derive(Debug, Clone)]
pub struct Images {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// "kvm" or "tcg".
    pub accel: &'static str,
    /// Why KVM is not used, when it is not.
    pub no_kvm: Option<String>,
}

impl Images {
    /// The `[provider.microvm]` table.
    pub fn provider_config(&self) -> String {
        format!(
            "[provider.microvm]\nkernel = \"{}\"\ninitramfs = \"{}\"\naccel = \"{}\"\n",
            self.kernel.display(),
            self.initramfs.display(),
            self.accel
        )
    }
}

/// Why this host cannot run microVMs at all (no QEMU, not root), or None.
pub fn missing() -> Option<String> {
    if !crate::net::is_root() {
        return Some("needs root (tap devices on a bridge)".into());
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").is_file() {
        return Some(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        );
    }
    None
}

/// The kernel and initramfs, built once per run of this binary; and the
/// accelerator that boots them here. Panics, saying which package is
/// missing, when they cannot be built.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = profile_dir().join("microvm");
        let kernel = dir.join("vmlinuz");
        let initramfs = dir.join("initramfs.cpio");
        let agent = bin("ebb-agent");
        // Older than what goes into it: the agent, the init, the script.
        let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/microvm");
        let inputs = [
            agent.clone(),
            packaging.join("init"),
            packaging.join("build.sh"),
        ];
        let newest_input = inputs
            .iter()
            .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
            .max();
        let stale = |p: &Path| {
            let Ok(image) = p.metadata().and_then(|m| m.modified()) else {
                return true;
            };
            newest_input.is_some_and(|input| image < input)
        };
        if stale(&kernel) || stale(&initramfs) {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/microvm/build.sh");
            let out = Command::new(&script)
                .arg(&dir)
                .arg(&agent)
                .stdin(Stdio::null())
                .output()
                .expect("run packaging/microvm/build.sh");
            assert!(
                out.status.success(),
                "packaging/microvm/build.sh {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let no_kvm = kvm_fails(&kernel, &initramfs);
        Images {
            kernel,
            initramfs,
            accel: if no_kvm.is_none() { "kvm" } else { "tcg" },
            no_kvm,
        }
    })
}

/// Boots the bare image under KVM; None when its /init speaks in time.
fn kvm_fails(kernel: &Path, initramfs: &Path) -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("/dev/kvm cannot be opened ({e})"));
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let console = dir.path().join("console.log");
    let mut child = Command::new("/usr/bin/qemu-system-x86_64")
        .args(["-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", "256"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qemu-system-x86_64");
    let start = Instant::now();
    let verdict = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains(INIT_WORDS) {
            break None;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            break Some(format!(
                "QEMU under KVM exited ({status}) before the kernel reached /init: {}",
                err.trim()
            ));
        }
        if start.elapsed() > KVM_PROBE {
            let pvm = Path::new("/sys/module/kvm_pvm").exists();
            break Some(format!(
                "a stock kernel under KVM did not reach /init within {KVM_PROBE:?}{}",
                if pvm {
                    " (this host's KVM is kvm_pvm, which runs only PVM-enabled guest kernels)"
                } else {
                    ""
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}
