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

/// A simulated device (the real device core) on its own pty, `count` events 1 ms apart.
fn sim_device(
    dir: &std::path::Path,
    name: &str,
    count: u32,
) -> edge_sim::serial_device::SerialDevice {
    let mut config = edge_sim::serial_device::SerialDeviceConfig::new(
        name,
        0,
        rand_boot(),
        Duration::from_millis(1),
    );
    config.count = Some(count);
    edge_sim::serial_device::SerialDevice::spawn(config, &dir.join(name)).expect("spawn device")
}

fn rand_boot() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(1)
}

fn serial_config(link: &std::path::Path) -> String {
    format!(
        "\n[[serial]]\nport = \"{}\"\nbaud = 115200\n",
        link.display()
    )
}

/// Waits until the device has produced `count` events and every one is acknowledged.
fn wait_all_acknowledged(
    device: &edge_sim::serial_device::SerialDevice,
    count: u32,
    timeout: Duration,
) {
    wait_until("every event acknowledged to the device", timeout, || {
        let stats = device.stats();
        stats.produced == u64::from(count) && stats.pending == 0
    });
}

#[test]
fn ten_thousand_events_from_a_simulated_device_arrive_once_in_order() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let device = sim_device(dir.path(), "pty-sim-1", 10_000);
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        &serial_config(device.link()),
        JournalSettings::default(),
    );
    wait_all_acknowledged(&device, 10_000, Duration::from_secs(60));
    wait_until(
        "10 000 events at the cloud",
        Duration::from_secs(30),
        || cloud.inbox.unique() == 10_000,
    );
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert_eq!(
        per_device.get("pty-sim-1").cloned(),
        Some((0..10_000).collect::<Vec<u64>>())
    );
    assert_eq!(
        gateway.metric("edge_journal_appended_total"),
        10_000.0,
        "an event was stored twice"
    );
    let stats = device.stop();
    assert_eq!(stats.link.dropped_full, 0);
}

#[test]
fn kill_9_mid_stream_loses_nothing_the_device_resends() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let device = sim_device(dir.path(), "pty-sim-2", 4_000);
    let mut gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        &serial_config(device.link()),
        JournalSettings::default(),
    );
    wait_until("ingest under way", Duration::from_secs(20), || {
        gateway.metric("edge_journal_appended_total") > 1_000.0
    });
    gateway.kill();
    let at_kill = device.stats();
    std::thread::sleep(Duration::from_millis(500));
    gateway.spawn();
    wait_all_acknowledged(&device, 4_000, Duration::from_secs(60));
    wait_until("4 000 events at the cloud", Duration::from_secs(30), || {
        cloud.inbox.unique() == 4_000
    });
    let per_device = cloud.inbox.check_order_and_resent_duplicates();
    assert_eq!(
        per_device.get("pty-sim-2").cloned(),
        Some((0..4_000).collect::<Vec<u64>>())
    );
    let stats = device.stop();
    eprintln!(
        "killed with {} of {} produced events unacknowledged; {} retransmitted",
        at_kill.pending, at_kill.produced, stats.link.retransmitted
    );
    assert!(
        stats.link.retransmitted > 0,
        "the device resent after the restart"
    );
    assert_eq!(stats.link.dropped_full, 0);
}

#[test]
fn a_noisy_line_loses_nothing() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    // 500 events/s: well within what the noisy line carries even on a busy machine, so that
    // the device's outbox never has to drop (it would count it: see the assertion below).
    let mut config = edge_sim::serial_device::SerialDeviceConfig::new(
        "pty-noisy",
        0,
        rand_boot(),
        Duration::from_millis(2),
    );
    config.count = Some(2_000);
    // About one frame in ten corrupted on the way in, and acks on the way out.
    config.noise = Some(0.002);
    config.retransmit_timeout = Duration::from_millis(300);
    let link = dir.path().join("pty-noisy");
    let device = edge_sim::serial_device::SerialDevice::spawn(config, &link).expect("spawn device");
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        &serial_config(&link),
        JournalSettings::default(),
    );
    wait_all_acknowledged(&device, 2_000, Duration::from_secs(90));
    assert_eq!(
        device.stats().link.dropped_full,
        0,
        "the device's outbox overflowed: the line fell behind"
    );
    wait_until("2 000 events at the cloud", Duration::from_secs(30), || {
        cloud.inbox.unique() == 2_000
    });
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert_eq!(
        per_device.get("pty-noisy").cloned(),
        Some((0..2_000).collect::<Vec<u64>>())
    );
    assert_eq!(gateway.metric("edge_journal_appended_total"), 2_000.0);
    let crc_errors = gateway.metric(&format!(
        "edge_serial_crc_errors_total{{port=\"{}\"}}",
        link.display()
    ));
    let stats = device.stop();
    eprintln!(
        "{} bytes flipped; gateway CRC errors {crc_errors}; device bad frames {}, retransmitted {}",
        stats.flipped, stats.link.bad_frames, stats.link.retransmitted
    );
    assert!(
        stats.flipped > 0 && crc_errors > 0.0,
        "the line was not noisy"
    );
    assert!(stats.link.retransmitted > 0);
    assert!(stats.link.nacks > 0, "gaps were asked for");
    assert_eq!(stats.link.dropped_full, 0, "the outbox overflowed");
}

#[test]
fn an_unplugged_simulated_device_resends_what_it_kept() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let device = sim_device(dir.path(), "pty-sim-3", 3_000);
    let link = device.link().to_path_buf();
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        &serial_config(&link),
        JournalSettings::default(),
    );
    let connected = format!("edge_serial_connected{{port=\"{}\"}}", link.display());
    wait_until("some events in", Duration::from_secs(20), || {
        gateway.metric("edge_journal_appended_total") > 500.0
    });
    device.unplug();
    wait_until("the port seen gone", Duration::from_secs(10), || {
        gateway.metric(&connected) == 0.0
    });
    // The device samples on while unplugged; its outbox holds what the gateway cannot take.
    wait_until(
        "events kept while unplugged",
        Duration::from_secs(10),
        || device.stats().pending > 200,
    );
    device.plug();
    wait_all_acknowledged(&device, 3_000, Duration::from_secs(60));
    wait_until("3 000 events at the cloud", Duration::from_secs(30), || {
        cloud.inbox.unique() == 3_000
    });
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert_eq!(
        per_device.get("pty-sim-3").cloned(),
        Some((0..3_000).collect::<Vec<u64>>())
    );
    assert!(
        gateway.metric(&format!(
            "edge_serial_reconnects_total{{port=\"{}\"}}",
            link.display()
        )) >= 1.0
    );
}
