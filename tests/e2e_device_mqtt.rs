//! End to end: the device side of MQTT as the real `edge-gateway` speaks it. Raw packets over
//! TCP where a client library would not send them (MQTT 5, garbage, silence), rumqttc where it
//! would (QoS 0/1/2, subscriptions).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

/// A CONNECT packet (MQTT 3.1.1 unless `level` says otherwise) with a clean session.
fn connect_packet(client_id: &str, keep_alive: u16, level: u8) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x02];
    body.extend(keep_alive.to_be_bytes());
    if level == 5 {
        // Properties, as MQTT 5 clients send them: a session expiry interval of 60 s.
        body.extend([0x05, 0x11, 0x00, 0x00, 0x00, 0x3c]);
    }
    body.extend((client_id.len() as u16).to_be_bytes());
    body.extend(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// A raw TCP connection to the gateway's device port.
fn raw_connection(port: u16) -> TcpStream {
    let stream =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect to gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Sends CONNECT and returns the CONNACK's 4 bytes.
fn handshake(stream: &mut TcpStream, client_id: &str, keep_alive: u16, level: u8) -> [u8; 4] {
    stream
        .write_all(&connect_packet(client_id, keep_alive, level))
        .expect("send CONNECT");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("read CONNACK");
    connack
}

/// Whether the gateway closed the connection (end of stream or reset) within the read timeout.
fn closed_by_gateway(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn protocol_violations_close_only_the_offending_connection() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let gateway = Gateway::start(broker.port, JournalSettings::default());

    // MQTT 5 is refused with "unacceptable protocol version", not dropped silently.
    let mut v5 = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut v5, "v5-device", 60, 5),
        [0x20, 0x02, 0x00, 0x01]
    );
    assert!(closed_by_gateway(&mut v5));

    // Garbage after a good CONNECT (packet type 0 is reserved) closes that connection.
    let mut garbage = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut garbage, "garbage", 60, 4),
        [0x20, 0x02, 0x00, 0x00]
    );
    garbage
        .write_all(&[0x00, 0x03, 0xde, 0xad, 0xbe])
        .expect("send garbage");
    assert!(closed_by_gateway(&mut garbage));

    // A packet that is not CONNECT first is refused too.
    let mut no_connect = raw_connection(gateway.device_port);
    no_connect.write_all(&[0xC0, 0x00]).expect("send PINGREQ");
    assert!(closed_by_gateway(&mut no_connect));

    wait_until("protocol errors counted", Duration::from_secs(10), || {
        gateway.metric("edge_device_protocol_errors_total") == 3.0
    });
    assert!(gateway.log().contains("closed a device connection"));

    // Everyone else keeps publishing.
    let acked = publish_events(gateway.device_port, 4, 50);
    assert_eq!(acked, 200);
    wait_until("good events delivered", Duration::from_secs(20), || {
        cloud.inbox.unique() == 200
    });
}

#[test]
fn a_silent_connection_is_closed_after_its_keep_alive() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(broker.port, JournalSettings::default());
    let mut quiet = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut quiet, "quiet", 1, 4),
        [0x20, 0x02, 0x00, 0x00]
    );
    let started = Instant::now();
    assert!(closed_by_gateway(&mut quiet), "still open after 10 s");
    let waited = started.elapsed();
    // 1.5 × the 1 s keep-alive, with room for a slow machine.
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert_eq!(gateway.metric("edge_device_protocol_errors_total"), 1.0);

    // A PINGREQ keeps a connection alive and is answered.
    let mut pinging = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut pinging, "pinging", 1, 4),
        [0x20, 0x02, 0x00, 0x00]
    );
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        pinging.write_all(&[0xC0, 0x00]).expect("send PINGREQ");
        let mut pingresp = [0u8; 2];
        pinging.read_exact(&mut pingresp).expect("read PINGRESP");
        assert_eq!(pingresp, [0xD0, 0x00]);
    }
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_over() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start(broker.port, JournalSettings::default());
    let mut first = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut first, "twin", 60, 4),
        [0x20, 0x02, 0x00, 0x00]
    );
    let mut second = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut second, "twin", 60, 4),
        [0x20, 0x02, 0x00, 0x00]
    );
    assert!(
        closed_by_gateway(&mut first),
        "the older connection stays open"
    );
    second.write_all(&[0xC0, 0x00]).expect("send PINGREQ");
    let mut pingresp = [0u8; 2];
    second
        .read_exact(&mut pingresp)
        .expect("the newer connection is served");
    assert_eq!(pingresp, [0xD0, 0x00]);
    // The older connection's task ends just after its socket closes: poll for the gauge.
    wait_until("one connection counted", Duration::from_secs(10), || {
        gateway.metric("edge_device_connections") == 1.0
    });
}

#[test]
fn connections_past_max_connections_are_refused_with_server_unavailable() {
    let broker = Mosquitto::start();
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "",
        "max_connections = 2",
        JournalSettings::default(),
    );
    // The start-up probe's connection must be gone before the slots are counted.
    wait_until("no device connections", Duration::from_secs(10), || {
        gateway.metric("edge_device_connections") == 0.0
    });
    let mut open: Vec<TcpStream> = (0..2)
        .map(|index| {
            let mut stream = raw_connection(gateway.device_port);
            assert_eq!(
                handshake(&mut stream, &format!("held-{index}"), 60, 4),
                [0x20, 0x02, 0x00, 0x00]
            );
            stream
        })
        .collect();
    let mut third = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut third, "third", 60, 4),
        [0x20, 0x02, 0x00, 0x03]
    );
    assert_eq!(gateway.metric("edge_device_connections_refused_total"), 1.0);

    // A freed slot is usable again.
    drop(open.pop());
    wait_until("a slot to free up", Duration::from_secs(10), || {
        gateway.metric("edge_device_connections") == 1.0
    });
    let mut fourth = raw_connection(gateway.device_port);
    assert_eq!(
        handshake(&mut fourth, "fourth", 60, 4),
        [0x20, 0x02, 0x00, 0x00]
    );
}

#[test]
fn every_qos_is_delivered_and_subscriptions_are_refused() {
    let broker = Mosquitto::start();
    let cloud = Subscriber::connect(broker.port);
    let gateway = Gateway::start(broker.port, JournalSettings::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (completions, suback) = runtime.block_on(async {
        let options = MqttOptions::new("qos-device", "127.0.0.1", gateway.device_port);
        let (client, mut event_loop) = AsyncClient::new(options, 10);
        for (seq, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let body = format!(r#"{{"device":"q","boot":1,"seq":{seq},"readings":{{"n":1}}}}"#);
            client
                .publish("devices/q/events", qos, false, body)
                .await
                .expect("queue publish");
        }
        client
            .subscribe("commands/#", QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let (mut completions, mut suback) = (Vec::new(), None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while completions.len() < 2 || suback.is_none() {
            match tokio::time::timeout_at(deadline, event_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => completions.push("puback"),
                Ok(Ok(Event::Incoming(Packet::PubComp(_)))) => completions.push("pubcomp"),
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => suback = Some(ack.return_codes),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("device connection failed: {error}"),
                Err(_) => panic!("timed out: {completions:?}, {suback:?}"),
            }
        }
        (completions, suback)
    });
    assert!(completions.contains(&"puback") && completions.contains(&"pubcomp"));
    assert_eq!(suback, Some(vec![SubscribeReasonCode::Failure]));
    wait_until(
        "all three events delivered",
        Duration::from_secs(20),
        || cloud.inbox.unique() == 3,
    );
    assert_eq!(
        cloud.inbox.check_order_and_duplicates().get("q"),
        Some(&vec![0, 1, 2])
    );
}
