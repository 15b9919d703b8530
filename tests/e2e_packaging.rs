//! The packaging for a Raspberry Pi: the install script passes shellcheck and installs into a
//! scratch root (`DESTDIR`), keeping the configuration when run again; the systemd unit passes
//! `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(found, "{name} is missing: apt-get install {package}");
    Command::new(name)
}

fn install(root: &Path) -> std::process::Output {
    Command::new(repository().join("scripts/install-pi.sh"))
        .arg(env!("CARGO_BIN_EXE_edge-gateway"))
        .env("DESTDIR", root)
        .output()
        .expect("run install-pi.sh")
}

#[test]
fn the_scripts_pass_shellcheck() {
    // Every script, benchmarks included: a new one is checked without being listed here.
    let mut scripts: Vec<String> = std::fs::read_dir(repository().join("scripts"))
        .expect("scripts/")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sh"))
        .map(|name| format!("scripts/{name}"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10, "found only {scripts:?} under scripts/");
    let output = tool("shellcheck", "shellcheck")
        .current_dir(repository())
        .args(scripts)
        .output()
        .expect("run shellcheck");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn the_install_script_installs_into_a_scratch_root_and_an_upgrade_keeps_the_configuration() {
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().expect("tempdir");
    let output = install(root.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("installed an example configuration"),
        "{stdout}"
    );
    let binary = root.path().join("usr/local/bin/edge-gateway");
    let config = root.path().join("etc/edge-gateway/gateway.toml");
    let unit = root.path().join("etc/systemd/system/edge-gateway.service");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("installed")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(mode(&config), 0o640, "the configuration may hold passwords");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(
        std::fs::read(&binary).expect("binary"),
        std::fs::read(env!("CARGO_BIN_EXE_edge-gateway")).expect("built binary")
    );

    // The user edits the configuration; an upgrade keeps it, and still checks it.
    let edited = std::fs::read_to_string(&config).expect("config") + "\n# edited on the Pi\n";
    std::fs::write(&config, &edited).expect("edit");
    let output = install(root.path());
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("keeping the configuration"));
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited);

    // A configuration the new binary rejects stops the upgrade with exit code 2.
    std::fs::write(&config, "[gateway]\nid = \n").expect("break");
    let output = install(root.path());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        !root.path().join("usr/local/bin/.edge-gateway.new").exists(),
        "the rejected binary is not left behind"
    );
    assert!(binary.is_file(), "the installed binary stays");
}

#[test]
fn the_systemd_unit_passes_verification() {
    // Verified as installed, with its program where the scratch install put it.
    let root = tempfile::tempdir().expect("tempdir");
    assert!(install(root.path()).status.success());
    let installed = root.path().join("usr/local/bin/edge-gateway");
    let unit = std::fs::read_to_string(repository().join("packaging/systemd/edge-gateway.service"))
        .expect("unit")
        .replace(
            "/usr/local/bin/edge-gateway",
            &installed.display().to_string(),
        );
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=edge-gateway",
        "ConfigurationDirectory=edge-gateway",
        "SupplementaryGroups=dialout",
        "Restart=always",
        "Type=notify",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let path = root.path().join("edge-gateway.service");
    std::fs::write(&path, unit).expect("write unit");
    let output = tool("systemd-analyze", "systemd")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    // Other units on the machine may draw warnings of their own: only ours count.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("edge-gateway"))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
