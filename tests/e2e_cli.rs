//! End to end: the command line — check-config, run refusing a bad config, journal stats while
//! the gateway runs, and the demo.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn example_config() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml")
}

#[test]
fn check_config_accepts_the_example() {
    let output = edge_gateway()
        .args(["check-config", "--config"])
        .arg(example_config())
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_config_and_run_report_every_problem_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"gw\"\n\n[uplink]\nurl = \"http://cloud\"\n\n[journal]\nmax_sise = \"1MiB\"\nmax_age = \"5 minutes\"\n",
    )
    .expect("write");
    for subcommand in ["check-config", "run"] {
        let output = edge_gateway()
            .args([subcommand, "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{subcommand} exits 2");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let file = path.display().to_string();
        for (position, key) in [
            ("5:7", "uplink.url"),
            ("8:1", "journal.max_sise"),
            ("9:11", "journal.max_age"),
        ] {
            let prefix = format!("{file}:{position}: ");
            assert!(
                stderr
                    .lines()
                    .any(|line| line.starts_with(&prefix) && line.contains(key)),
                "no `{prefix}` line naming {key}:\n{stderr}"
            );
        }
    }
}

#[test]
fn journal_stats_reads_a_running_gateway() {
    // no cloud broker: everything stays in the journal
    let gateway = Gateway::start(free_port(), JournalSettings::default());
    assert_eq!(publish_events(gateway.device_port, 3, 20), 60);
    wait_until("events journaled", Duration::from_secs(20), || {
        gateway.metric("edge_journal_rows") == 60.0
    });
    let output = edge_gateway()
        .args(["journal", "stats", "--config"])
        .arg(&gateway.config_path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.split_whitespace().eq(["rows:", "60"])),
        "{stdout}"
    );
    for device in ["dev-000", "dev-001", "dev-002"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.split_whitespace().eq([device, "20"])),
            "{stdout}"
        );
    }
    let output = edge_gateway()
        .args(["journal", "inspect", "--limit", "2", "--config"])
        .arg(&gateway.config_path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("oldest 2 buffered events"), "{stdout}");
}

#[test]
fn a_gateway_stops_cleanly_on_sigterm_and_says_offline() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let mut gateway = Gateway::start(broker.port, JournalSettings::default());
    wait_until("online", Duration::from_secs(10), || {
        cloud.inbox.statuses().last().is_some_and(|s| s == "online")
    });
    assert_eq!(
        http_get(gateway.admin(), "/readyz").map(|(status, _)| status),
        Some(200)
    );
    let status = gateway.stop();
    assert!(status.success(), "exit status {status}");
    wait_until("offline", Duration::from_secs(10), || {
        cloud
            .inbox
            .statuses()
            .last()
            .is_some_and(|s| s == "offline")
    });
}

/// Threads of process `pid` named `name`.
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the gateway's threads")
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .count()
}

#[test]
fn the_network_runs_on_as_many_threads_as_configured() {
    let broker = Mosquitto::start();
    for (line, expected) in [("", 1), ("worker_threads = 3\n", 3)] {
        let mut gateway = Gateway::prepare(
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "",
            "",
            JournalSettings::default(),
        );
        let config = std::fs::read_to_string(&gateway.config_path).expect("read config");
        let config = config.replacen("[devices]", &format!("{line}[devices]"), 1);
        std::fs::write(&gateway.config_path, config).expect("write config");
        gateway.spawn();
        let pid = gateway.pid().expect("running");
        // Workers start as the runtime does; the admin server answers once they run.
        wait_until("the admin server", Duration::from_secs(10), || {
            http_get(gateway.admin(), "/healthz").is_some()
        });
        assert_eq!(
            threads_named(pid, "tokio-rt-worker"),
            expected,
            "worker threads with {line:?}"
        );
        assert!(gateway.stop().success());
    }
}

#[test]
fn a_killed_gateway_is_announced_offline_by_its_last_will() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let mut gateway = Gateway::start(broker.port, JournalSettings::default());
    wait_until("online", Duration::from_secs(10), || {
        cloud.inbox.statuses().last().is_some_and(|s| s == "online")
    });
    gateway.kill();
    wait_until("offline by last will", Duration::from_secs(10), || {
        cloud
            .inbox
            .statuses()
            .last()
            .is_some_and(|s| s == "offline")
    });
}

/// A child process killed if a failed assertion leaves it running.
/// The notification socket's name in a gateway's directory.
const NOTIFY_SOCKET: &str = "notify.sock";

/// A gateway (not started) forwarding to `broker`, whose processes send systemd notifications
/// to the returned socket, which waits up to `read_timeout` for each.
fn gateway_under_systemd(
    broker: &Mosquitto,
    read_timeout: Duration,
) -> (Gateway, std::os::unix::net::UnixDatagram) {
    let mut gateway = Gateway::prepare(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        "",
        JournalSettings::default(),
    );
    let path = gateway.dir.path().join(NOTIFY_SOCKET);
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(read_timeout))
        .expect("timeout");
    gateway.set_env("NOTIFY_SOCKET", path.display().to_string());
    (gateway, socket)
}

#[test]
fn the_watchdog_goes_unfed_while_the_journal_writer_is_stuck_in_a_commit() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let broker = Mosquitto::start();
    let (mut gateway, socket) = gateway_under_systemd(&broker, Duration::from_millis(200));
    let pings = Arc::new(AtomicUsize::new(0));
    let listening = Arc::new(AtomicBool::new(true));
    let listener = {
        let (pings, listening) = (Arc::clone(&pings), Arc::clone(&listening));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while listening.load(Ordering::Relaxed) {
                if let Ok(count) = socket.recv(&mut buffer)
                    && &buffer[..count] == b"WATCHDOG=1"
                {
                    pings.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let pinged = || pings.load(Ordering::Relaxed);
    // A ping every 500 ms; the writer has 250 ms to answer each heartbeat.
    gateway.set_env("WATCHDOG_USEC", "1000000");
    gateway.spawn();
    wait_until("watchdog pings", Duration::from_secs(10), || pinged() >= 2);

    // Another process takes the journal's write lock, and a device sends an event: the writer
    // waits for the lock inside its commit (up to SQLite's 5 s busy timeout).
    let blocker = rusqlite::Connection::open(gateway.journal_path()).expect("open the journal");
    blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let device_port = gateway.device_port;
    let device = std::thread::spawn(move || {
        let event = br#"{"device":"stuck-1","boot":1,"seq":1,"readings":{"temp_c":20.0}}"#;
        publish_raw(
            device_port,
            &[("devices/stuck-1/events".to_owned(), event.to_vec())],
        );
    });
    let stuck = "journal writer stuck in a commit";
    wait_until("a missed heartbeat", Duration::from_secs(4), || {
        gateway.log().contains(stuck)
    });
    let before = pinged();
    wait_until("a second missed heartbeat", Duration::from_secs(3), || {
        gateway.log().matches(stuck).count() >= 2
    });
    assert_eq!(
        pinged(),
        before,
        "no ping while the writer is stuck, though its last commit succeeded"
    );

    // Free again: the event is stored (and acknowledged to the device), the pings resume.
    blocker.execute_batch("ROLLBACK").expect("unlock");
    device.join().expect("the device's event acknowledged");
    wait_until("pings again", Duration::from_secs(5), || pinged() > before);
    assert_eq!(gateway.stop().code(), Some(0));
    listening.store(false, Ordering::Relaxed);
    listener.join().expect("listener");
}

struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `edge-gateway demo` for `seconds` with three MQTT devices and two serial ones, on fresh
/// ports, its dashboard on `dashboard_port`, its files in `dir`.
fn demo_command(seconds: u32, dashboard_port: u16, dir: &std::path::Path) -> std::process::Command {
    let mut command = edge_gateway();
    command
        .args(["demo", "--duration-secs", &seconds.to_string()])
        .args([
            "--interval-ms",
            "100",
            "--devices",
            "3",
            "--serial-devices",
            "2",
        ])
        .args(["--device-port", &free_port().to_string()])
        .args(["--cloud-port", &free_port().to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .args(["--dashboard-port", &dashboard_port.to_string()])
        .arg("--alerts-bin")
        .arg(edge_alerts_program())
        .arg("--data-dir")
        .arg(dir);
    command
}

#[test]
fn the_demo_runs_the_whole_chain_to_the_dashboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dashboard = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut demo = KillOnDrop(Some(
        demo_command(120, dashboard.port(), dir.path())
            .arg("--qemu-firmware")
            .arg(firmware_image())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("demo.log")).expect("log"))
            .spawn()
            .expect("run demo"),
    ));

    // The dashboard serves what went through the chain: every device (the firmware in QEMU
    // too), and alerts raised by the gateway's rules (devices 1 and 2 run warm from the start).
    let token_file = dir.path().join("dashboard-token");
    let mut alerts = String::new();
    let mut devices = String::new();
    wait_until("alerts on the dashboard", Duration::from_secs(20), || {
        let Ok(token) = std::fs::read_to_string(&token_file) else {
            return false;
        };
        let token = token.trim();
        devices = http_get_with_token(dashboard, "/api/devices", token)
            .map(|(_, body)| body)
            .unwrap_or_default();
        alerts = http_get_with_token(dashboard, "/api/alerts", token)
            .map(|(_, body)| body)
            .unwrap_or_default();
        alerts.contains(r#""rule":"greenhouse warm""#)
            && devices.matches(r#""device":"#).count() == 6
            && devices.contains(r#""device":"qemu-lm3s6965""#)
    });
    assert_eq!(
        http_get(dashboard, "/api/alerts").map(|(status, _)| status),
        Some(401),
        "the dashboard wants its token"
    );
    // Killed outright, the demo takes its edge-alerts with it (no orphan holding the port).
    let mut demo = demo.0.take().expect("the demo");
    let _ = demo.kill();
    let output = demo.wait_with_output().expect("demo output");
    wait_until(
        "edge-alerts to stop with the demo",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(dashboard).is_err(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("alert dashboard     http://{dashboard}/")),
        "{stdout}"
    );
    assert!(stdout.contains("log in with token"), "{stdout}");
    assert!(stdout.contains("serial device on"), "{stdout}");
}

#[test]
fn the_demo_reports_what_the_cloud_received() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = demo_command(4, free_port(), dir.path())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    // Three MQTT devices and two on serial lines (ptys) reached the cloud.
    assert!(summary.contains("from 5 devices"), "{stdout}");
    let events: u64 = summary
        .split("cloud: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    assert!(events >= 50, "5 devices at 10 Hz for 4 s: {summary}");
}

#[test]
fn rules_test_replays_the_example_recording() {
    let config_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let output = edge_gateway()
        .args(["rules", "test", "--config"])
        .arg(config_dir.join("gateway.toml"))
        .arg("--events")
        .arg(config_dir.join("greenhouse-events.jsonl"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "2026-11-27T10:05:30.000Z  firing    greenhouse too hot  device=greenhouse-1  id=greenhouse-pi:alert:1  value=37.2  event=greenhouse-1:1:32",
            "2026-11-27T10:08:00.000Z  resolved  greenhouse too hot  device=greenhouse-1  id=greenhouse-pi:alert:1  value=30  event=greenhouse-1:1:48",
            "2026-11-27T10:13:50.000Z  firing    device silent  device=greenhouse-2  id=greenhouse-pi:alert:2",
            "144 events through 3 rules: 3 alert transitions",
        ]
    );

    // A bad rule is a config error (exit 2) with its place, not a runtime failure.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(config_dir.join("gateway.toml")).expect("read example");
    std::fs::write(&bad, text.replace("for = \"30s\"", "for = \"-30s\"")).expect("write");
    let output = edge_gateway()
        .args(["rules", "test", "--config"])
        .arg(&bad)
        .arg("--events")
        .arg(config_dir.join("greenhouse-events.jsonl"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid duration `-30s` for `rule[0].for`"),
        "{stderr}"
    );
}

#[test]
fn under_systemd_it_says_ready_pings_the_watchdog_and_says_stopping() {
    let broker = Mosquitto::start();
    let (gateway, socket) = gateway_under_systemd(&broker, Duration::from_secs(10));
    let mut child = KillOnDrop(Some(
        edge_gateway()
            .args(["run", "--config"])
            .arg(&gateway.config_path)
            .env("NOTIFY_SOCKET", gateway.dir.path().join(NOTIFY_SOCKET))
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway"),
    ));
    let receive = || {
        let mut buffer = [0u8; 256];
        let count = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..count]).into_owned()
    };
    let ready = receive();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Pinged every 100 ms (half the watchdog time) while the journal takes writes.
    for _ in 0..3 {
        assert_eq!(receive(), "WATCHDOG=1");
    }
    let mut child = child.0.take().expect("the gateway");
    signal(child.id(), "TERM");
    let mut stopping = receive();
    while stopping == "WATCHDOG=1" {
        stopping = receive();
    }
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn check_config_refuses_an_open_door_and_warns_of_the_old_table_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let output = edge_gateway()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        (
            path.display().to_string(),
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let head = "[gateway]\nid = \"gw\"\n[uplink]\nurl = \"mqtt://127.0.0.1\"\n";
    // Every interface, no logins, nothing said: refused at the listen address.
    let (file, code, stderr) = check(
        "open.toml",
        &format!("{head}[devices]\nlisten = \"0.0.0.0:1883\"\n"),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{file}:6:10: `devices.listen` is 0.0.0.0:1883")),
        "{stderr}"
    );
    // Said out loud: accepted.
    let (_, code, stderr) = check(
        "anonymous.toml",
        &format!("{head}[devices]\nlisten = \"0.0.0.0:1883\"\nallow_anonymous = true\n"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    // The first release's table name: accepted, with a warning at its place.
    let (file, code, stderr) = check(
        "old.toml",
        &format!("{head}[local_broker]\nlisten = \"127.0.0.1:1883\"\n"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{file}:5:1: warning: `[local_broker]` is deprecated: rename the table `[devices]` (same keys)"
        )
    );
}
