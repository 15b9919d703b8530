//! End to end: the gateway's serial source over a real pty, speaking the link protocol frame by
//! frame: acks only after the commit, retransmissions stored once, a noisy line, a bad sample,
//! and a port that is unplugged and plugged back in.

mod common;

use std::time::Duration;

use common::*;

/// A gateway reading the pty `pty`, forwarding to `uplink_port`.
fn gateway_on(pty: &Pty, uplink_port: u16) -> Gateway {
    Gateway::start_with(
        &format!("mqtt://127.0.0.1:{uplink_port}"),
        "",
        &format!(
            "\n[[serial]]\nport = \"{}\"\nbaud = 115200\n",
            pty.link.display()
        ),
        JournalSettings::default(),
    )
}

fn port_metric(gateway: &Gateway, name: &str, pty: &Pty) -> f64 {
    gateway.metric(&format!("{name}{{port=\"{}\"}}", pty.link.display()))
}

#[test]
fn samples_are_acknowledged_after_their_commit_and_stored_once() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pty = Pty::new(dir.path(), "ttyDEVICE");
    let gateway = gateway_on(&pty, broker.port);
    wait_until("the port open", Duration::from_secs(10), || {
        port_metric(&gateway, "edge_serial_connected", &pty) == 1.0
    });

    // 100 samples in one burst: the cumulative ack for the last one comes once all are stored.
    let mut burst = frames::hello("s1", 5, 0);
    for seq in 0..100 {
        burst.extend(frames::sample(5, seq));
    }
    pty.write(&burst);
    let acks = pty.read_acks_until(Duration::from_secs(10), |acks| {
        acks.last().is_some_and(|ack| ack.seq == 99)
    });
    assert_eq!(
        acks.last().map(|ack| (ack.boot, ack.seq)),
        Some((5, 99)),
        "{acks:?}"
    );
    assert!(
        gateway.metric("edge_journal_appended_total") >= 100.0,
        "acknowledged before the commit"
    );

    // A retransmission of stored samples is acknowledged again and not stored twice.
    let mut again = frames::hello("s1", 5, 50);
    for seq in 50..100 {
        again.extend(frames::sample(5, seq));
    }
    pty.write(&again);
    let acks = pty.read_acks_until(Duration::from_secs(10), |acks| acks.len() >= 2);
    assert!(acks.iter().all(|ack| ack.seq == 99), "{acks:?}");
    assert_eq!(
        port_metric(&gateway, "edge_serial_duplicates_total", &pty),
        50.0
    );

    // A noisy line: a corrupted frame, garbage, then the same samples intact.
    let mut corrupted = frames::sample(5, 100);
    corrupted[3] ^= 0x5a;
    let mut noisy = corrupted;
    noisy.extend([0x13, 0x37, 0xff, 0x00]);
    noisy.extend(frames::sample(5, 101)); // after a gap: dropped, resent below
    noisy.extend(frames::sample(5, 100));
    noisy.extend(frames::sample(5, 101));
    // A sample whose reading is not a number the gateway accepts: dead-lettered, acknowledged.
    noisy.extend(frames::sample_with(5, 102, f64::INFINITY));
    pty.write(&noisy);
    let acks = pty.read_acks_until(Duration::from_secs(10), |acks| {
        acks.iter().any(|ack| ack.seq == 102)
    });
    assert!(acks.iter().any(|ack| ack.seq == 102), "{acks:?}");
    assert!(port_metric(&gateway, "edge_serial_crc_errors_total", &pty) >= 1.0);
    assert!(port_metric(&gateway, "edge_serial_resyncs_total", &pty) >= 2.0);
    assert_eq!(
        port_metric(&gateway, "edge_serial_out_of_order_total", &pty),
        1.0
    );
    assert_eq!(
        gateway.metric("edge_events_rejected_total{reason=\"invalid_event\"}"),
        1.0
    );

    wait_until("102 events at the cloud", Duration::from_secs(20), || {
        cloud.inbox.unique() == 102
    });
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert_eq!(
        per_device.get("s1").cloned(),
        Some((0..102).collect::<Vec<u64>>())
    );
    assert_eq!(
        gateway.metric("edge_events_received_total{source=\"serial\"}"),
        102.0
    );
}

#[test]
fn an_unplugged_port_is_reopened_without_spinning_and_nothing_else_stops() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pty = Pty::new(dir.path(), "ttyUSB-test");
    let gateway = gateway_on(&pty, broker.port);
    wait_until("the port open", Duration::from_secs(10), || {
        port_metric(&gateway, "edge_serial_connected", &pty) == 1.0
    });
    let mut first = frames::hello("s2", 1, 0);
    for seq in 0..10 {
        first.extend(frames::sample(1, seq));
    }
    pty.write(&first);
    pty.read_acks_until(Duration::from_secs(10), |acks| {
        acks.iter().any(|ack| ack.seq == 9)
    });

    pty.unplug();
    wait_until("the port to be seen gone", Duration::from_secs(10), || {
        port_metric(&gateway, "edge_serial_connected", &pty) == 0.0
    });
    // While the port is gone the gateway waits, it does not spin.
    let pid = gateway.pid().expect("gateway running");
    let before = cpu_seconds(pid);
    // MQTT devices are served meanwhile.
    assert_eq!(publish_events(gateway.device_port, 2, 10), 20);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "the gateway used {used:.2} s of CPU in 2 s with the port gone"
    );

    pty.plug();
    wait_until("the port reopened", Duration::from_secs(15), || {
        port_metric(&gateway, "edge_serial_connected", &pty) == 1.0
    });
    assert!(port_metric(&gateway, "edge_serial_reconnects_total", &pty) >= 1.0);
    let mut second = frames::hello("s2", 1, 10);
    for seq in 10..20 {
        second.extend(frames::sample(1, seq));
    }
    pty.write(&second);
    let acks = pty.read_acks_until(Duration::from_secs(10), |acks| {
        acks.iter().any(|ack| ack.seq == 19)
    });
    assert!(acks.iter().any(|ack| ack.seq == 19), "{acks:?}");
    wait_until("all events at the cloud", Duration::from_secs(20), || {
        cloud.inbox.unique() == 40
    });
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert_eq!(
        per_device.get("s2").cloned(),
        Some((0..20).collect::<Vec<u64>>())
    );
}

/// CPU time (user + system) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}
