//! The microvm provider end to end (DESIGN §5, issue #15): instances that
//! are QEMU `-M microvm` virtual machines on the controller's bridge,
//! booting the kernel and initramfs of packaging/microvm/build.sh (built
//! by the test when missing), each running a real agent and ebb-test-web.
//!
//! Needs root, /dev/kvm and qemu-system-x86 (`.ci/run` installs it);
//! without QEMU the tests print `NOT RUN` and return. Where /dev/kvm is
//! there but cannot boot a stock kernel (nested PVM), the VMs run under
//! TCG, and `microvm_boots_under_kvm` is reported as not run.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use ebb_proto::v1 as pb;
use ebb_tests::microvm::{Images, images, missing};
use ebb_tests::net::TestNet;
use ebb_tests::not_run;
use ebb_tests::{
    Admin, ControllerProc, DEADLINE, Sandbox, activities, admin_call, bin, eventually, instances,
    web_get,
};

const GROUP: &str = "vms";

/// A group of 3 VMs running ebb-test-web, and an alarm on a metric every
/// VM's agent reports as 150 (a command run inside the VM) whose rule
/// adds 2: the group goes to 5, its maximum, on that alarm.
const FILE: &str = r#"
[group]
name = "vms"
min_size = 0
max_size = 5
desired_capacity = 3
sampling_interval_secs = 1
health_check_grace_period_secs = 1

[configuration]
name = "vm-v1"
instance_type = "microvm"
command = ["{WEB}"]

[configuration.microvm]
vcpus = 1
memory_mib = 192

[[configuration.metrics]]
name = "backlog"
command = ["/bin/echo", "150"]

[[rule]]
name = "add-2"
rule_type = "SimpleScalingRule"
adjustment_type = "QuantityChangeInCapacity"
adjustment_value = 2
cooldown_secs = 0

[[alarm]]
name = "backlog-high"
metric = "backlog"
statistic = "Average"
period_secs = 1
comparison_operator = ">="
threshold = 100
evaluation_count = 1
alarm_actions = ["add-2"]
"#;

/// Skips (printing `NOT RUN`) where QEMU cannot run; else the images.
fn setup(test: &str) -> Option<&'static Images> {
    if let Some(why) = missing() {
        not_run(test, &why);
        return None;
    }
    let images = images();
    if let Some(why) = &images.no_kvm {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: {test}: the VMs run under TCG (emulation), not KVM: {why}"
        );
    }
    Some(images)
}

fn start(sb: &Sandbox, net: &TestNet, images: &Images) -> ControllerProc {
    // Emulated VMs boot in seconds, several at once on two busy cores.
    let config = net.provider_config().replace(
        "[provider]\n",
        "[provider]\nlaunch_timeout_ms = 300000\nrelease_timeout_ms = 5000\n",
    ) + &images.provider_config();
    ControllerProc::start_with(sb.path(), 1000, &config).unwrap()
}

/// InService instances with connected agents: id -> (address, provider id).
fn serving(admin: &mut Admin) -> BTreeMap<String, (Ipv4Addr, String)> {
    instances(admin, GROUP)
        .into_iter()
        .filter(|i| i.lifecycle_state == "InService" && i.agent_connected)
        .filter_map(|i| {
            Some((
                i.id.clone(),
                (i.provider_address.parse().ok()?, i.provider_id.clone()),
            ))
        })
        .collect()
}

/// The pids of the QEMU processes whose argv names `needle`.
fn qemus(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(argv) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if argv.contains("qemu-system-x86_64") && argv.contains(needle) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn microvm_group_scales_on_an_alarm_replaces_a_killed_vm_and_leaves_nothing_after_a_forced_delete()
{
    const TEST: &str = "microvm::microvm_group_scales_on_an_alarm_replaces_a_killed_vm_and_leaves_nothing_after_a_forced_delete";
    let Some(images) = setup(TEST) else {
        return;
    };
    let net = TestNet::new();
    let sb = Sandbox::new();
    let ctl = start(&sb, &net, images);
    let mut admin = Admin::local(&ctl);
    let file = sb.path().join("vms.toml");
    std::fs::write(
        &file,
        FILE.replace("{WEB}", &bin("ebb-test-web").display().to_string()),
    )
    .unwrap();
    let applied = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}{}",
        String::from_utf8_lossy(&applied.stdout),
        String::from_utf8_lossy(&applied.stderr)
    );
    let vms = sb.path().join("ebb-data/microvms");
    let needle = vms.display().to_string();

    // 3 VMs, then 5 on the alarm their agents' metric raises.
    let five = eventually("5 VMs in service", Duration::from_secs(600), || {
        let s = serving(&mut admin);
        (s.len() == 5).then_some(s)
    });
    let scaled = activities(&mut admin, GROUP);
    assert!(
        scaled.iter().any(|a| a.trigger == "alarm"
            && a.cause
                .starts_with("alarm `backlog-high` executed rule `add-2`")),
        "an alarm activity: {scaled:#?}"
    );
    assert_eq!(qemus(&needle).len(), 5, "one QEMU per instance");
    assert_eq!(net.ports().len(), 5, "one tap per VM on the bridge");
    for (id, (addr, provider_id)) in &five {
        assert!(net.gateway() != *addr && provider_id.starts_with("qemu pid "));
        // ebb-test-web runs inside the VM, on the VM's own address.
        let body = eventually(&format!("{id} to answer on {addr}"), DEADLINE, || {
            web_get(*addr)
        });
        assert_eq!(&body, id, "{addr} is served by its own VM");
    }

    // A VM killed from the host is replaced.
    let (victim, (_, provider_id)) = five.iter().next().unwrap();
    let pid: i32 = provider_id.trim_start_matches("qemu pid ").parse().unwrap();
    assert!(qemus(&needle).contains(&pid), "{provider_id} is a QEMU");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let after = eventually("the killed VM replaced", Duration::from_secs(600), || {
        let s = serving(&mut admin);
        (s.len() == 5 && !s.contains_key(victim)).then_some(s)
    });
    assert_eq!(qemus(&needle).len(), 5);
    assert!(!vms.join(victim).exists(), "the killed VM's dir is removed");

    // A forced delete leaves no QEMU, tap or address behind.
    admin_call!(
        admin,
        delete_scaling_group,
        pb::DeleteScalingGroupRequest {
            scaling_group: GROUP.into(),
            force: true
        }
    )
    .expect("delete the group");
    eventually("no QEMU left", Duration::from_secs(120), || {
        qemus(&needle).is_empty().then_some(())
    });
    eventually("no tap left", DEADLINE, || {
        net.ports().is_empty().then_some(())
    });
    eventually("no VM dir left", DEADLINE, || {
        std::fs::read_dir(&vms)
            .map_or(true, |mut d| d.next().is_none())
            .then_some(())
    });
    for (id, (addr, _)) in &after {
        assert!(
            web_get(*addr).is_none(),
            "{id}'s address {addr} still answers"
        );
    }
}

#[test]
fn a_microvm_configuration_is_refused_with_the_reason_where_the_provider_cannot_run() {
    // The refusal needs no QEMU: a controller without a bridge says so.
    let sb = Sandbox::new();
    let ctl = ControllerProc::start(sb.path(), 1000).unwrap();
    ctl.wait_log("instance_type \"microvm\" is unavailable");
    let mut admin = Admin::local(&ctl);
    admin_call!(
        admin,
        create_scaling_group,
        pb::CreateScalingGroupRequest {
            name: GROUP.into(),
            min_size: 0,
            max_size: 2,
            ..Default::default()
        }
    )
    .unwrap();
    let err = admin_call!(
        admin,
        create_scaling_configuration,
        pb::CreateScalingConfigurationRequest {
            scaling_group: GROUP.into(),
            name: "vm".into(),
            instance_type: "microvm".into(),
            command: vec![bin("ebb-test-web").display().to_string()],
            ..Default::default()
        }
    )
    .unwrap_err();
    assert!(
        err.message().contains("the microvm provider needs"),
        "{}",
        err.message()
    );
}

#[test]
fn microvm_boots_under_kvm() {
    const TEST: &str = "microvm::microvm_boots_under_kvm";
    if let Some(why) = missing() {
        not_run(TEST, &why);
        return;
    }
    let images = images();
    if let Some(why) = &images.no_kvm {
        not_run(TEST, why);
        return;
    }
    // One VM under KVM (-enable-kvm -cpu host), to a connected agent.
    let net = TestNet::new();
    let sb = Sandbox::new();
    let ctl = start(&sb, &net, images);
    let mut admin = Admin::local(&ctl);
    let file = sb.path().join("vm.toml");
    let one = FILE
        .replace("max_size = 5", "max_size = 1")
        .replace("desired_capacity = 3", "desired_capacity = 1")
        .replace("{WEB}", &bin("ebb-test-web").display().to_string());
    std::fs::write(&file, one).unwrap();
    let applied = ctl.ebbctl(&["apply", "-f", &file.display().to_string()]);
    assert!(applied.status.success());
    let vm = eventually("a VM in service", Duration::from_secs(120), || {
        serving(&mut admin).into_iter().next()
    });
    let argv = std::fs::read(format!(
        "/proc/{}/cmdline",
        vm.1.1.trim_start_matches("qemu pid ")
    ))
    .unwrap();
    assert!(
        String::from_utf8_lossy(&argv).contains("-enable-kvm"),
        "QEMU runs with KVM"
    );
}
