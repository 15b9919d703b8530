//! End to end: the uplink's TLS (server verification, mutual TLS), its MQTT login, and device
//! logins on the device endpoint. Each case shows the right party getting through and the wrong
//! one kept out, with the kept-out gateway's events staying in its journal. Certificates are
//! made at test time with the `openssl` command; brokers are Mosquitto instances of the test's
//! own.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Events each device publishes in a case.
const PER_DEVICE: u32 = 10;
/// Devices publishing in a case.
const DEVICES: usize = 2;
/// Events published in a case.
const EVENTS: u64 = 20;

/// A TOML line `key = "path"`.
fn path_setting(key: &str, path: &Path) -> String {
    format!("{key} = \"{}\"\n", path.display())
}

fn wait_for_port(port: u16) {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the listener", Duration::from_secs(10), || {
        TcpStream::connect(address).is_ok()
    });
}

/// Lines of the Mosquitto log about connections accepted on `port`.
fn connection_attempts(broker: &Mosquitto, port: u16) -> usize {
    let suffix = format!("on port {port}.");
    broker
        .log()
        .lines()
        .filter(|line| line.contains("New connection from") && line.ends_with(&suffix))
        .count()
}

/// Publishes the case's events and checks the cloud receives all of them, in order.
fn assert_delivers(gateway: &Gateway, cloud: &Subscriber) {
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        EVENTS
    );
    wait_until(
        "the cloud to get every event",
        Duration::from_secs(20),
        || cloud.inbox.unique() as u64 == EVENTS,
    );
    let per_device = cloud.inbox.check_order_and_duplicates();
    assert!(
        per_device
            .values()
            .all(|seqs| seqs.len() == PER_DEVICE as usize),
        "{per_device:?}"
    );
    wait_until("the journal to drain", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 0.0
    });
    assert_eq!(gateway.metric("edge_uplink_connected"), 1.0);
}

/// Publishes the case's events to a gateway whose uplink must be refused: the broker sees
/// several attempts, none of them connects, `/readyz` says not ready, and every event stays in
/// the journal. Returns the gateway's log.
fn assert_kept_out(gateway: &Gateway, broker: &Mosquitto, port: u16, cloud: &Subscriber) -> String {
    let delivered_before = cloud.inbox.all().len();
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        EVENTS
    );
    let attempts_before = connection_attempts(broker, port);
    wait_until(
        "three refused uplink attempts",
        Duration::from_secs(20),
        || {
            assert_eq!(
                gateway.metric("edge_uplink_connections_total"),
                0.0,
                "the uplink connected:\n{}",
                gateway.log()
            );
            connection_attempts(broker, port) >= attempts_before + 3
                && gateway.log().contains("uplink connection lost")
        },
    );
    assert_eq!(gateway.metric("edge_uplink_connected"), 0.0);
    assert_eq!(gateway.metric("edge_uplink_connections_total"), 0.0);
    assert_eq!(gateway.metric("edge_journal_rows"), EVENTS as f64);
    assert_eq!(
        http_get(gateway.admin(), "/readyz").map(|(status, _)| status),
        Some(503)
    );
    assert_eq!(cloud.inbox.all().len(), delivered_before);
    gateway.log()
}

#[test]
fn the_uplink_verifies_the_server_with_ca_file() {
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Mosquitto::start_with(&pki.tls_listener(tls_port, false));
    wait_for_port(tls_port);
    let cloud = Subscriber::connect(broker.port);
    let url = format!("mqtts://127.0.0.1:{tls_port}");

    let gateway = Gateway::start_with(
        &url,
        &path_setting("ca_file", &pki.path("ca.pem")),
        "",
        JournalSettings::default(),
    );
    assert_delivers(&gateway, &cloud);
    drop(gateway);

    // A CA that did not sign the server's certificate: the gateway must not trust the server.
    let gateway = Gateway::start_with(
        &url,
        &path_setting("ca_file", &pki.path("other-ca.pem")),
        "",
        JournalSettings::default(),
    );
    let log = assert_kept_out(&gateway, &broker, tls_port, &cloud);
    assert!(
        log.to_lowercase().contains("certificate"),
        "the refusal names the certificate:\n{log}"
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Mosquitto::start_with(&pki.tls_listener(tls_port, true));
    wait_for_port(tls_port);
    let cloud = Subscriber::connect(broker.port);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let ca = path_setting("ca_file", &pki.path("ca.pem"));

    let gateway = Gateway::start_with(
        &url,
        &format!(
            "{ca}{}{}",
            path_setting("client_cert_file", &pki.path("client.pem")),
            path_setting("client_key_file", &pki.path("client.key")),
        ),
        "",
        JournalSettings::default(),
    );
    assert_delivers(&gateway, &cloud);
    drop(gateway);

    let gateway = Gateway::start_with(&url, &ca, "", JournalSettings::default());
    assert_kept_out(&gateway, &broker, tls_port, &cloud);
    let log = broker.log();
    assert!(
        log.contains("peer did not return a certificate"),
        "Mosquitto refused for want of a client certificate:\n{log}"
    );
}

#[test]
fn the_uplink_logs_in_with_username_and_password_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let passwords = dir.path().join("mosquitto.passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["test-gw", "s3cret-uplink"])
        .stdout(Stdio::null())
        .status()
        .expect("mosquitto_passwd comes with mosquitto");
    assert!(status.success());
    let right = dir.path().join("right.pass");
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&right, "s3cret-uplink\n").expect("write");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let login_port = free_port();
    let broker = Mosquitto::start_with(&format!(
        "listener {login_port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        passwords.display()
    ));
    wait_for_port(login_port);
    let cloud = Subscriber::connect(broker.port);
    let url = format!("mqtt://127.0.0.1:{login_port}");

    let gateway = Gateway::start_with(
        &url,
        &format!(
            "username = \"test-gw\"\n{}",
            path_setting("password_file", &right)
        ),
        "",
        JournalSettings::default(),
    );
    assert_delivers(&gateway, &cloud);
    drop(gateway);

    let gateway = Gateway::start_with(
        &url,
        &format!(
            "username = \"test-gw\"\n{}",
            path_setting("password_file", &wrong)
        ),
        "",
        JournalSettings::default(),
    );
    assert_kept_out(&gateway, &broker, login_port, &cloud);
    assert!(broker.log().contains("not authorised"), "{}", broker.log());
    drop(gateway);

    // No login at all is refused too.
    let gateway = Gateway::start_with(&url, "", "", JournalSettings::default());
    assert_kept_out(&gateway, &broker, login_port, &cloud);
}

/// One JSON event of `device` as a raw MQTT message.
fn event(device: &str, seq: u32) -> (String, Vec<u8>) {
    (
        format!("devices/{device}/events"),
        format!(r#"{{"device":"{device}","boot":1,"seq":{seq},"readings":{{"n":{seq}}}}}"#)
            .into_bytes(),
    )
}

#[test]
fn devices_must_log_in_when_users_are_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("sensor-1.pass");
    std::fs::write(&password_file, "sensor-1-secret\n").expect("write");
    // No cloud: whatever gets in stays in the journal, where it can be counted.
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "",
        &format!(
            "users = [{{ name = \"sensor-1\", password_file = \"{}\" }}]\n",
            password_file.display()
        ),
        JournalSettings::default(),
    );

    let accepted: Vec<_> = (0..5).map(|seq| event("sensor-1", seq)).collect();
    try_publish_raw_as(
        gateway.device_port,
        Some(("sensor-1", "sensor-1-secret")),
        &accepted,
    )
    .expect("a device with the right login gets its events in");
    wait_until("the events journaled", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 5.0
    });

    let intruder: Vec<_> = (0..5).map(|seq| event("intruder", seq)).collect();
    let refused = [
        ("wrong password", Some(("sensor-1", "guess"))),
        ("unknown user", Some(("intruder", "sensor-1-secret"))),
        ("no login", None),
    ];
    for (what, credentials) in refused {
        let result = try_publish_raw_as(gateway.device_port, credentials, &intruder);
        assert!(result.is_err(), "a device with {what} was let in");
    }
    assert_eq!(gateway.metric("edge_journal_rows"), 5.0);
    assert_eq!(
        gateway.metric("edge_events_received_total{source=\"mqtt\"}"),
        5.0
    );
    // Every refusal is counted and logged, a connection without any login included.
    assert_eq!(gateway.metric("edge_device_logins_refused_total"), 3.0);
    assert!(
        gateway.log().contains("refused a device login"),
        "{}",
        gateway.log()
    );
    let stats = gateway.journal_command("stats");
    assert!(
        stats
            .lines()
            .any(|line| line.split_whitespace().eq(["sensor-1", "5"])),
        "{stats}"
    );
    assert!(!stats.contains("intruder"), "{stats}");
}

/// `run` with a config naming a file that is not there exits non-zero, quickly, naming it.
fn assert_run_refuses(gateway: &Gateway, missing: &Path) {
    let mut child = edge_gateway()
        .args(["run", "--config"])
        .arg(&gateway.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn edge-gateway");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "edge-gateway run kept running with {} missing",
                missing.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "the error names {}:\n{stderr}",
        missing.display()
    );
}

#[test]
fn run_refuses_missing_secret_files_and_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let gateway = Gateway::prepare(
        &format!("mqtts://127.0.0.1:{}", free_port()),
        &path_setting("ca_file", &missing),
        "",
        JournalSettings::default(),
    );
    assert_run_refuses(&gateway, &missing);

    let missing = dir.path().join("missing-uplink.pass");
    let gateway = Gateway::prepare(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        &format!(
            "username = \"test-gw\"\n{}",
            path_setting("password_file", &missing)
        ),
        "",
        JournalSettings::default(),
    );
    assert_run_refuses(&gateway, &missing);

    let missing = dir.path().join("missing-sensor.pass");
    let gateway = Gateway::prepare(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "",
        &format!(
            "users = [{{ name = \"sensor-1\", password_file = \"{}\" }}]\n",
            missing.display()
        ),
        JournalSettings::default(),
    );
    assert_run_refuses(&gateway, &missing);
}

#[test]
fn a_nats_uplink_over_tls_verifies_the_server_with_ca_file() {
    let pki = Pki::new();
    let cert = pki.path("server.pem").display().to_string();
    let key = pki.path("server.key").display().to_string();
    let server = NatsServer::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    let stream = unique_name("TLS").replace('-', "_");
    let trusted = |ca: &str| {
        let uplink = Uplink {
            url: format!("tls://127.0.0.1:{}", server.port),
            ..Uplink::nats(server.port, &stream, "edge")
        }
        .set("name", "bus")
        .set("ca_file", &pki.path(ca).display().to_string());
        Gateway::start_setup(GatewaySetup::with([uplink]))
    };

    // The wrong CA: the server is not believed, nothing is sent, everything waits.
    let stranger = trusted("other-ca.pem");
    assert_eq!(
        publish_events(stranger.device_port, DEVICES, PER_DEVICE),
        EVENTS
    );
    wait_until("the refused handshake", Duration::from_secs(20), || {
        stranger.log().contains("uplink connection lost")
    });
    assert_eq!(stranger.metric("edge_uplink_connections_total"), 0.0);
    assert_eq!(stranger.metric("edge_journal_rows"), EVENTS as f64);
    drop(stranger);

    // The right CA: connected over TLS, every event in the stream.
    let gateway = trusted("ca.pem");
    assert_eq!(
        publish_events(gateway.device_port, DEVICES, PER_DEVICE),
        EVENTS
    );
    wait_until(
        "the journal to drain over TLS",
        Duration::from_secs(30),
        || gateway.metric("edge_journal_rows") == 0.0,
    );
    assert!(gateway.metric("edge_uplink_acked_total{uplink=\"bus\"}") >= EVENTS as f64);
}

/// Connects as `client_id` with the login `user` (password `{user}-secret`) and waits for the
/// CONNACK: the client of an accepted connection, or the refusal's return code.
async fn connect_as(
    device_port: u16,
    client_id: &str,
    user: &str,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), rumqttc::ConnectReturnCode> {
    let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", device_port);
    options.set_credentials(user, format!("{user}-secret"));
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 16);
    match connack(&mut event_loop).await {
        Ok(()) => Ok((client, event_loop)),
        Err(NoSession::Refused(code)) => Err(code),
        Err(NoSession::Failed(error)) => panic!("{client_id} failed to connect: {error}"),
    }
}

/// Why a connection got no session.
enum NoSession {
    /// The CONNACK refused it with this code.
    Refused(rumqttc::ConnectReturnCode),
    /// It failed before (a TLS handshake, a closed connection, no CONNACK in 20 s).
    Failed(String),
}

/// Polls `event_loop` until the CONNACK: `Ok` when the connection is accepted.
async fn connack(event_loop: &mut rumqttc::EventLoop) -> Result<(), NoSession> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, event_loop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => {
                return if ack.code == rumqttc::ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(NoSession::Refused(ack.code))
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
                return Err(NoSession::Refused(code));
            }
            Ok(Err(error)) => return Err(NoSession::Failed(error.to_string())),
            Err(_) => return Err(NoSession::Failed("no CONNACK".to_owned())),
        }
    }
}

/// Publishes `messages` at QoS 1 on an open connection and waits for every PUBACK; panics if
/// the connection is lost or has to be made again meanwhile.
async fn publish_all(
    (client, event_loop): &mut (rumqttc::AsyncClient, rumqttc::EventLoop),
    messages: &[(String, Vec<u8>)],
) {
    for (topic, payload) in messages {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queue");
    }
    let mut acked = 0;
    while acked < messages.len() {
        match tokio::time::timeout(Duration::from_secs(20), event_loop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => {
                panic!("the connection had to be made again after {acked} PUBACKs")
            }
            Ok(Ok(_)) => {}
            other => panic!("the connection was lost after {acked} PUBACKs: {other:?}"),
        }
    }
}

#[test]
fn a_login_speaks_only_for_its_own_devices_and_keeps_its_client_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let login = |name: &str, devices: &str| {
        let file = dir.path().join(format!("{name}.pass"));
        std::fs::write(&file, format!("{name}-secret\n")).expect("write");
        format!(
            "  {{ name = \"{name}\", password_file = \"{}\"{devices} }},\n",
            file.display()
        )
    };
    // No cloud: whatever gets in stays in the journal, where it can be counted.
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "",
        &format!(
            "users = [\n{}{}{}]\n",
            login("sensor-1", ""),
            login("sensor-2", ""),
            login("bridge", ", devices = [\"gh-*\"]"),
        ),
        JournalSettings::default(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The owner of client id `sensor-2` is connected and stays so throughout.
        let mut owner = connect_as(gateway.device_port, "sensor-2", "sensor-2")
            .await
            .expect("the owner connects");

        // sensor-1 tries to take the client id over: refused, the owner keeps it.
        let refused = connect_as(gateway.device_port, "sensor-2", "sensor-1")
            .await
            .err();
        assert_eq!(refused, Some(rumqttc::ConnectReturnCode::BadClientId));
        wait_until("the refusal counted", Duration::from_secs(10), || {
            gateway.metric("edge_device_client_ids_refused_total") == 1.0
        });

        // sensor-1, as itself, publishes for itself and for sensor-2: every publish gets its
        // PUBACK (nothing is resent forever), only its own events are stored.
        let mut intruder = connect_as(gateway.device_port, "sensor-1", "sensor-1")
            .await
            .expect("sensor-1 connects");
        let mut messages: Vec<_> = (0..5).map(|seq| event("sensor-1", seq)).collect();
        messages.extend((0..5).map(|seq| event("sensor-2", seq)));
        publish_all(&mut intruder, &messages).await;

        // The owner was not pushed off: its own event goes through on the same connection.
        publish_all(&mut owner, &[event("sensor-2", 0)]).await;

        // A login with a glob speaks for the devices it matches, and no others.
        let mut bridge = connect_as(gateway.device_port, "bridge", "bridge")
            .await
            .expect("the bridge connects");
        let messages = [event("gh-1", 0), event("gh-2", 0), event("sensor-1", 9)];
        publish_all(&mut bridge, &messages).await;
    });

    wait_until("the journal rows", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 8.0
    });
    assert_eq!(
        gateway.metric("edge_events_rejected_total{reason=\"not_authorized\"}"),
        6.0
    );
    let stats = gateway.journal_command("stats");
    let count = |device: &str| {
        stats.lines().find_map(|line| {
            let words: Vec<_> = line.split_whitespace().collect();
            (words.len() == 2 && words[0] == device).then(|| words[1].to_owned())
        })
    };
    assert_eq!(count("sensor-1").as_deref(), Some("5"), "{stats}");
    assert_eq!(
        count("sensor-2").as_deref(),
        Some("1"),
        "only the owner's own event: {stats}"
    );
    assert_eq!(count("gh-1").as_deref(), Some("1"), "{stats}");
    assert_eq!(count("gh-2").as_deref(), Some("1"), "{stats}");
    // Each refusal is kept as a dead letter with what was refused and why.
    let inspection = gateway.journal_command("inspect");
    assert!(
        inspection.contains("login `sensor-1` may not publish for device `sensor-2`")
            && inspection.contains("login `bridge` may not publish for device `sensor-1`"),
        "{inspection}"
    );
    assert!(
        gateway.log().contains("not_authorized"),
        "the refusal is logged: {}",
        gateway.log()
    );
}

/// Client certificates for the device endpoint, beside the test PKI's: `sensor-1` (of the CA),
/// `stranger` (named `sensor-1`, of another CA), `expired` (of the CA, valid in 2020 only), and
/// `server-2`, a server certificate for 127.0.0.1 of the other CA (for a rotation).
fn device_certificates(pki: &Pki) {
    const KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for (name, ca, extensions) in [
        ("sensor-1", "ca", "client_ext"),
        ("stranger", "other-ca", "client_ext"),
        ("server-2", "other-ca", "server_ext"),
    ] {
        let subject = if name == "stranger" { "sensor-1" } else { name };
        pki.openssl(&format!(
            "req -new -config pki.cnf {KEY} -keyout {name}.key -out {name}.csr -subj /CN={subject}"
        ));
        pki.openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -set_serial 7 -days 2 \
             -extfile pki.cnf -extensions {extensions} -out {name}.pem"
        ));
    }
    // `openssl x509` cannot set dates in the past; `openssl ca` can, with a database of its own.
    std::fs::write(
        pki.path("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
    )
    .expect("write ca.cnf");
    std::fs::write(pki.path("index.txt"), "").expect("write index.txt");
    std::fs::write(pki.path("serial"), "1000\n").expect("write serial");
    pki.openssl(&format!(
        "req -new -config pki.cnf {KEY} -keyout expired.key -out expired.csr -subj /CN=sensor-1"
    ));
    pki.openssl(
        "ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
         -notext -startdate 20200101000000Z -enddate 20200102000000Z \
         -extfile pki.cnf -extensions client_ext",
    );
}

/// Connects to the device endpoint over TLS, trusting `trust` (a CA file) and presenting
/// `identity` (a certificate and key of the PKI) when given; the client and its event loop once
/// the CONNACK accepts it.
async fn connect_tls(
    port: u16,
    pki: &Pki,
    trust: &str,
    identity: Option<&str>,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), String> {
    connect_tls_as(port, pki, trust, identity, None).await
}

/// [`connect_tls`], with a username (and a password) in CONNECT beside the certificate.
async fn connect_tls_as(
    port: u16,
    pki: &Pki,
    trust: &str,
    identity: Option<&str>,
    user: Option<&str>,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(pki.path(&format!("{trust}.pem"))).expect("trust file")
    {
        roots.add(cert.expect("certificate")).expect("root");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                .expect("certificate file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    let mut options = rumqttc::MqttOptions::new(format!("tls-{}", free_port()), "127.0.0.1", port);
    if let Some(user) = user {
        options.set_credentials(user, "unchecked");
    }
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)),
    ));
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 16);
    match connack(&mut event_loop).await {
        Ok(()) => Ok((client, event_loop)),
        Err(NoSession::Refused(code)) => Err(format!("refused: {code:?}")),
        Err(NoSession::Failed(error)) => Err(error),
    }
}

#[test]
fn devices_log_in_by_certificate_and_the_certificate_rotates_without_dropping_them() {
    let pki = Pki::new();
    device_certificates(&pki);
    // The gateway's certificate files, as it is configured with them; replaced to rotate.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (dir.path().join("device.pem"), dir.path().join("device.key"));
    let install = |name: &str| {
        std::fs::copy(pki.path(&format!("{name}.pem")), &cert_file).expect("copy certificate");
        std::fs::copy(pki.path(&format!("{name}.key")), &key_file).expect("copy key");
    };
    install("server");
    // No cloud: whatever gets in stays in the journal, where it can be counted.
    let gateway = Gateway::start_with(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "",
        &format!(
            "tls = {{ cert_file = \"{}\", key_file = \"{}\", client_ca_file = \"{}\" }}\n",
            cert_file.display(),
            key_file.display(),
            pki.path("ca.pem").display()
        ),
        JournalSettings::default(),
    );
    let port = gateway.device_port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The certificate is the login: sensor-1 delivers for itself, and only for itself.
        let mut sensor = connect_tls(port, &pki, "ca", Some("sensor-1"))
            .await
            .expect("a device with a certificate of the CA connects");
        publish_all(&mut sensor, &[event("sensor-1", 0), event("sensor-2", 0)]).await;

        // Refused at the handshake: no certificate, one of another CA, an expired one, and a
        // device that does not speak TLS at all.
        for (case, identity) in [
            ("no certificate", None),
            ("another CA", Some("stranger")),
            ("expired", Some("expired")),
        ] {
            let refused = connect_tls(port, &pki, "ca", identity).await;
            assert!(refused.is_err(), "{case}: connected");
        }
        // A certificate speaks for its own name only: another username beside it is refused,
        // its own is accepted.
        let other = connect_tls_as(port, &pki, "ca", Some("sensor-1"), Some("sensor-2")).await;
        assert_eq!(other.err().as_deref(), Some("refused: NotAuthorized"));
        connect_tls_as(port, &pki, "ca", Some("sensor-1"), Some("sensor-1"))
            .await
            .expect("its own name beside its certificate");
        let plain = tokio::task::spawn_blocking(move || {
            try_publish_raw_as(port, None, &[event("sensor-1", 1)])
        })
        .await
        .expect("the plain-text device");
        assert!(plain.is_err(), "a plain-text device connected");

        // Rotation: new files and SIGHUP. The connected device stays connected (publish_all
        // fails on a reconnect), and new connections see the new certificate.
        install("server-2");
        signal(gateway.pid().expect("running"), "HUP");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while connect_tls(port, &pki, "other-ca", Some("sensor-1"))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new certificate was not served after SIGHUP"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            connect_tls(port, &pki, "ca", Some("sensor-1"))
                .await
                .is_err(),
            "the old certificate is still served"
        );
        publish_all(&mut sensor, &[event("sensor-1", 1)]).await;

        // And back, through POST /reload, which says what it did.
        install("server");
        let (status, body) = http_post(gateway.admin(), "/reload").expect("POST /reload");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("device TLS certificate and key re-read"),
            "{body}"
        );
        connect_tls(port, &pki, "ca", Some("sensor-1"))
            .await
            .expect("the first certificate served again");
        publish_all(&mut sensor, &[event("sensor-1", 2)]).await;
    });

    wait_until("the journal rows", Duration::from_secs(10), || {
        gateway.metric("edge_journal_rows") == 3.0
    });
    assert_eq!(
        gateway.metric("edge_events_rejected_total{reason=\"not_authorized\"}"),
        1.0,
        "sensor-1's certificate does not speak for sensor-2"
    );
    assert!(
        gateway.metric("edge_device_tls_refused_total") >= 4.0,
        "each refused handshake is counted: {}",
        gateway.metrics()
    );
}
