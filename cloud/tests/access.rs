//! End to end: who may speak for a gateway in the cloud. The broker access-control recipe of
//! docs/cloud.md (one login per gateway, `pattern write edge/%u/#`) on a Mosquitto of the
//! test's own, `edge-alerts` logging in to it over TLS, gateways trying to speak for each
//! other, and PostgreSQL reached over TLS. Certificates are made by the test (`openssl`).

mod common;

#[path = "../../tests/common/pki.rs"]
#[allow(dead_code, unreachable_pub)]
mod pki;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use edge_alerts::store::postgres::PostgresStore;
use edge_alerts::store::{AlertFilter, Store};
use edge_alerts::{AlertState, Applied, Message};
use pki::Pki;

/// The access-control file of the recipe in docs/cloud.md.
const ACL: &str = "\
# edge-alerts reads what every gateway publishes.
user edge-alerts
topic read edge/#

# Each gateway, logged in with its id as user name, writes under its own id only.
pattern write edge/%u/#
";

fn event(gateway: &str, device: &str, seq: u32) -> (String, Vec<u8>) {
    (
        format!("edge/{gateway}/devices/{device}/events"),
        format!(
            r#"{{"id":"{device}:1:{seq}","gateway":"{gateway}","device":"{device}","boot":1,"seq":{seq},"received_at":{seq},"readings":{{"temp_c":20.5}}}}"#
        )
        .into_bytes(),
    )
}

/// An alert transition of alert `id`, as `gateway` says, on `topic_gateway`'s alert topic.
fn alert(topic_gateway: &str, gateway: &str, id: &str, state: &str) -> (String, Vec<u8>) {
    (
        format!("edge/{topic_gateway}/alerts"),
        format!(
            r#"{{"id":"{id}","gateway":"{gateway}","rule":"hot","device":"d1","state":"{state}","severity":"critical","at":1000,"value":36.0,"event":"d1:1:1","labels":{{}}}}"#
        )
        .into_bytes(),
    )
}

/// (gateway, device, last_seen) of every device in the store at `db`.
fn devices(db: &std::path::Path) -> Vec<(String, String, i64)> {
    query(db, async |store| store.devices().await.unwrap_or_default())
        .into_iter()
        .map(|device| (device.gateway, device.device, device.last_seen))
        .collect()
}

#[test]
fn the_broker_recipe_and_edge_alerts_keep_each_gateway_to_its_own_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let passwords = dir.path().join("passwd");
    for (user, password) in [
        ("gw-a", "a-secret"),
        ("gw-b", "b-secret"),
        ("edge-alerts", "e-secret"),
    ] {
        let status = Command::new("mosquitto_passwd")
            .args(["-b"])
            .args(if passwords.exists() {
                vec![]
            } else {
                vec!["-c"]
            })
            .arg(&passwords)
            .args([user, password])
            .stdout(Stdio::null())
            .status()
            .expect("mosquitto_passwd comes with mosquitto");
        assert!(status.success(), "mosquitto_passwd {user}");
    }
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).expect("write acl");
    // One broker: a plain listener for the gateways, a TLS one for edge-alerts, the same
    // logins and access control on both.
    let (port, tls_port) = (free_port(), free_port());
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            // `user root`: started as root, Mosquitto would drop to a user that cannot read the
            // test's key file.
            "user root\nper_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             max_queued_messages 0\nlistener {port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\n\
             certfile {}\nkeyfile {}\n",
            passwords.display(),
            acl.display(),
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
        ),
    )
    .expect("write mosquitto.conf");
    let _broker = Running(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("mosquitto.log")).expect("log"))
            .spawn()
            .expect("mosquitto"),
    );
    for port in [port, tls_port] {
        wait_until("mosquitto", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    let db = dir.path().join("alerts.db");
    let source = format!("mqtts://edge-alerts:e-secret@127.0.0.1:{tls_port}");
    let (_service, api_port) = edge_alerts_serving(
        &[
            "--source",
            &source,
            "--ca-file",
            pki.path("ca.pem").to_str().expect("utf-8 path"),
            "--sqlite",
            db.to_str().expect("utf-8 path"),
        ],
        dir.path(),
        "edge-alerts",
    );
    // The same login over TLS, trusting another CA: it must not get in.
    let other_db = dir.path().join("other.db");
    let _distrustful = edge_alerts_with(
        &[
            "--source",
            &source,
            "--ca-file",
            pki.path("other-ca.pem").to_str().expect("utf-8 path"),
            "--client-id",
            "edge-alerts-other-ca",
            "--sqlite",
            other_db.to_str().expect("utf-8 path"),
        ],
        &dir.path().join("other-ca.log"),
    );

    // Gateway B says it is online (retained): once the consumer, logged in over TLS, has
    // that, it has subscribed.
    let b = Some(("gw-b", "b-secret"));
    publish_as(port, b, &[("edge/gw-b/status".into(), b"online".to_vec())]);
    wait_until("the consumer to subscribe", Duration::from_secs(20), || {
        query(&db, async |store| {
            store
                .gateways()
                .await
                .is_ok_and(|gateways| gateways.len() == 1)
        })
    });
    // Gateway B fires an alert and sends an event.
    let b_alert = "gw-b:alert:5d1c9a0e:1";
    publish_as(
        port,
        b,
        &[
            alert("gw-b", "gw-b", b_alert, "firing"),
            event("gw-b", "d1", 1),
        ],
    );
    wait_until(
        "gateway B's alert and event",
        Duration::from_secs(20),
        || {
            devices(&db).len() == 1
                && query(&db, async |store| {
                    store
                        .alerts(&AlertFilter::default())
                        .await
                        .is_ok_and(|alerts| alerts.len() == 1)
                })
        },
    );

    // Gateway A, with its own login, tries to speak for B on B's topics: the broker denies
    // each publish (Mosquitto drops it, and closes the connection of an MQTT 3.1.1 client).
    let a = Some(("gw-a", "a-secret"));
    for forged in [
        alert("gw-b", "gw-b", b_alert, "resolved"),
        event("gw-b", "forged", 1),
    ] {
        let _ = try_publish_as(port, a, &[forged]);
    }
    // On its own topics, A sends B's alert id (edge-alerts refuses it) and the same event id
    // as B's (its own event). The last message marks the end.
    let refused_before = consumer_counters(api_port).refused;
    publish_as(
        port,
        a,
        &[
            alert("gw-a", "gw-a", b_alert, "resolved"),
            event("gw-a", "d1", 1),
            event("gw-a", "d2", 1),
        ],
    );
    wait_until("gateway A's last event", Duration::from_secs(20), || {
        devices(&db).contains(&("gw-a".into(), "d2".into(), 1))
    });
    assert_eq!(
        devices(&db),
        [
            ("gw-a".to_owned(), "d1".to_owned(), 1),
            ("gw-a".to_owned(), "d2".to_owned(), 1),
            ("gw-b".to_owned(), "d1".to_owned(), 1)
        ],
        "the same event id from two gateways is two events; nothing reached B's device list"
    );
    let alerts = query(&db, async |store| {
        store.alerts(&AlertFilter::default()).await.expect("alerts")
    });
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (
            alerts[0].id.as_str(),
            alerts[0].state,
            alerts[0].resolved_at
        ),
        (b_alert, AlertState::Firing, None),
        "B's alert is untouched"
    );
    assert_eq!(
        consumer_counters(api_port).refused,
        refused_before + 1,
        "the alert with another gateway's id is refused, and counted"
    );
    // The consumer that did not trust the broker's certificate stored nothing.
    assert!(
        !other_db.exists() || devices(&other_db).is_empty(),
        "a broker with a certificate of an unknown CA was trusted"
    );
}

/// A TLS front for the machine's PostgreSQL, speaking PostgreSQL's own TLS upgrade (an
/// `SSLRequest`, then the handshake): every connection it forwards is TLS, and one that does
/// not ask for TLS is closed.
async fn postgres_tls_front(pki: &Pki) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let certs = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err()
                    || request != [0, 0, 0, 8, 4, 210, 22, 47]
                    || client.write_all(b"S").await.is_err()
                {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn postgres_is_reached_over_tls_with_the_server_certificate_checked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new();
    let port = postgres_tls_front(&pki).await;
    let schema = PostgresSchemaName::new();
    let config = format!("host=127.0.0.1 port={port} user=postgres dbname=test sslmode=require");
    let trusting =
        |ca: &str| edge_alerts::tls::client_config(Some(&pki.path(ca))).expect("trust roots");

    // Trusting the server's CA: connected over TLS, and a message stored.
    let store = PostgresStore::connect(&config, Some(&schema.0), Some(trusting("ca.pem")))
        .await
        .expect("PostgreSQL over TLS");
    let (_, payload) = event("gw", "d1", 1);
    let message = Message::Event(serde_json::from_slice(&payload).expect("event"));
    assert_eq!(
        store.apply(&message, 0, &[]).await.expect("apply"),
        Applied::New
    );
    assert_eq!(store.devices().await.expect("devices").len(), 1);

    // Trusting another CA: refused, with the reason.
    let error = PostgresStore::connect(&config, Some(&schema.0), Some(trusting("other-ca.pem")))
        .await
        .expect_err("a server certificate of an unknown CA was trusted");
    assert!(
        error.to_string().contains("certificate"),
        "the error names the certificate: {error}"
    );
    // Without sslmode=require the connection is plain, which this server refuses.
    let plain = format!("host=127.0.0.1 port={port} user=postgres dbname=test sslmode=disable");
    assert!(
        PostgresStore::connect(&plain, Some(&schema.0), None)
            .await
            .is_err()
    );
    schema.drop_now().await;
}

/// A schema name of the test's own, dropped by [`PostgresSchemaName::drop_now`].
struct PostgresSchemaName(String);

impl PostgresSchemaName {
    fn new() -> Self {
        Self(format!("edge_alerts_tls_{:08x}", rand::random::<u32>()))
    }

    async fn drop_now(self) {
        if let Ok((client, connection)) =
            tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0))
                .await;
        }
    }
}

#[test]
fn over_nats_with_tls_the_server_certificate_is_checked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let port = free_port();
    let store_dir = dir.path().join("jetstream");
    let _server = Running(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store_dir)
            .args(["--tls", "--tlscert"])
            .arg(pki.path("server.pem"))
            .arg("--tlskey")
            .arg(pki.path("server.key"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("nats.log")).expect("log"))
            .spawn()
            .expect("spawn nats-server (Debian package nats-server)"),
    );
    wait_until("nats-server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let source = format!("tls://127.0.0.1:{port}");
    let consumer = |name: &str, ca: &str| {
        let db = dir.path().join(format!("{name}.db"));
        let running = edge_alerts_with(
            &[
                "--source",
                &source,
                "--ca-file",
                pki.path(ca).to_str().expect("utf-8 path"),
                "--group",
                name,
                "--sqlite",
                db.to_str().expect("utf-8 path"),
            ],
            &dir.path().join(format!("{name}.log")),
        );
        (running, db)
    };
    let (_trusting, db) = consumer("trusting", "ca.pem");
    let (_distrustful, other_db) = consumer("distrustful", "other-ca.pem");

    // A gateway publishing over TLS, once the consumer has made the stream.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tls = edge_alerts::tls::client_config(Some(&pki.path("ca.pem"))).expect("roots");
        let client = async_nats::ConnectOptions::new()
            .require_tls(true)
            .tls_client_config(rustls::ClientConfig::clone(&tls))
            .connect(source.as_str())
            .await
            .expect("connect over TLS");
        let jetstream = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while jetstream.get_stream("EDGE").await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the consumer never made its stream over TLS"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, payload) = event("gw", "d1", 1);
        jetstream
            .publish("edge.gw.devices.d1.events", payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored by the stream");
    });
    wait_until("the event stored", Duration::from_secs(20), || {
        devices(&db).len() == 1
    });
    assert!(
        !other_db.exists() || devices(&other_db).is_empty(),
        "a server with a certificate of an unknown CA was trusted"
    );
    // Its refusal is logged when its connection attempt fails, which may come after the other
    // consumer's first store.
    let log_path = dir.path().join("distrustful.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until(
        "the distrustful consumer to say why it does not consume",
        Duration::from_secs(20),
        || log().contains("not consuming from NATS"),
    );
    assert!(
        log().contains("UnknownIssuer"),
        "the distrustful consumer says why it does not consume: {}",
        log()
    );
}
