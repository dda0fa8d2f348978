//! The admin API as the ecosystem's clients find it: a Python client with
//! `grpcio` and `grpcio-reflection` (which speaks reflection v1alpha) and no
//! generated code discovers `ebb.v1.AdminService` over mTLS and calls it.
//! It needs python3 with venv and pip's access to PyPI; without them it
//! prints NOT RUN.

use std::path::{Path, PathBuf};
use std::process::Command;

use ebb_proto::v1 as pb;
use ebb_tests::{Admin, ControllerProc, Sandbox, admin_call, not_run};

const TEST: &str = "reflection::a_python_grpc_client_finds_the_admin_api_by_reflection";

/// A venv with grpcio and grpcio-reflection, made once and kept under the
/// target directory; Err says why there is none.
fn python_venv() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reflection-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if ready.exists() {
        return Ok(python);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (python3 and its venv module, Debian's python3-venv)",
    )?;
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio",
            "grpcio-reflection",
            "protobuf",
        ]),
        "pip install grpcio grpcio-reflection protobuf",
    )?;
    std::fs::write(&ready, "").map_err(|e| e.to_string())?;
    Ok(python)
}

#[test]
fn a_python_grpc_client_finds_the_admin_api_by_reflection() {
    let python = match python_venv() {
        Ok(p) => p,
        Err(why) => return not_run(TEST, &why),
    };
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    let mut admin = Admin::local(&ctl);
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: "web".into(),
            min_size: 0,
            max_size: 4,
            ..Default::default()
        }
    )
    .expect("create the group");
    let pki = ctl.pki_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reflection_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(ctl.grpc.to_string())
        .arg(pki.join("ca.crt"))
        .arg(pki.join("admin.crt"))
        .arg(pki.join("admin.key"))
        .output()
        .expect("run the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    let services: Vec<&str> = lines
        .next()
        .and_then(|l| l.strip_prefix("services: "))
        .unwrap_or_default()
        .split(' ')
        .collect();
    for s in [
        "ebb.v1.AdminService",
        "ebb.v1.AgentService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "{s} not found: {stdout}");
    }
    assert_eq!(lines.collect::<Vec<_>>(), ["web 0"], "{stdout}\n{stderr}");

    // Without a client certificate the reflection service refuses, as the
    // rest of the API does.
    let bare = r#"
import sys, grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
creds = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[2], "rb").read())
with grpc.secure_channel(sys.argv[1], creds, options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
    try:
        ProtoReflectionDescriptorDatabase(ch).get_services()
    except grpc.RpcError as e:
        print("refused", e.code())
"#;
    let out = Command::new(&python)
        .args(["-c", bare])
        .arg(ctl.grpc.to_string())
        .arg(pki.join("ca.crt"))
        .output()
        .expect("run the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("refused"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
