//! Brokers of the tests' own: Mosquitto and rumqttd for MQTT, NATS with JetStream, and the
//! machine's RabbitMQ.

use super::*;

/// A Mosquitto broker of the test's own, on an ephemeral port, with persistence so that a
/// subscriber's session (and queued messages) survive a restart.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            // `user root`: started as root, Mosquitto would otherwise drop to a user that cannot
            // write the persistence file in our temp dir, and sessions would not survive a restart.
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nautosave_interval 1\n",
            dir.path().display()
        );
        Self::launch(dir, port, &config)
    }

    /// A broker whose `port` is a plain listener allowing anonymous clients (for the cloud
    /// [`Subscriber`]), followed by `extra`: more listeners with settings of their own
    /// (`per_listener_settings` is on). It keeps root privileges when started as root, so that
    /// it can read the test's password and certificate files.
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "user root\nper_listener_settings true\nmax_queued_messages 0\nmax_inflight_messages 0\n\
             listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n"
        );
        Self::launch(dir, port, &config)
    }

    /// Writes `config` into `dir` and starts the broker listening on `port`.
    fn launch(dir: tempfile::TempDir, port: u16, config: &str) -> Self {
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write mosquitto.conf");
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.resume();
        broker
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts the broker (again) on the same port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            TcpStream::connect(address).is_ok()
        });
    }

    /// Stops the broker cleanly (it saves its sessions).
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A "cloud" rumqttd broker in this process; a link subscriber fills the inbox.
pub struct RumqttdCloud {
    pub port: u16,
    pub inbox: Inbox,
    runtime: tokio::runtime::Runtime,
}

impl RumqttdCloud {
    pub fn start() -> Self {
        let port = free_port();
        let (mut link_tx, mut link_rx) = edge_gateway::cloud_broker::start_cloud_broker(
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .expect("start rumqttd");
        link_tx.try_subscribe("edge/#").expect("subscribe");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let inbox = Inbox::default();
        {
            let inbox = inbox.clone();
            runtime.spawn(async move {
                let _keep = link_tx;
                loop {
                    match link_rx.next().await {
                        Ok(Some(rumqttd::Notification::Forward(forward))) => inbox.push(
                            &String::from_utf8_lossy(&forward.publish.topic),
                            &forward.publish.payload,
                        ),
                        Ok(Some(rumqttd::Notification::Unschedule)) => {
                            if link_rx.wake().await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("rumqttd to listen", Duration::from_secs(10), || {
            TcpStream::connect(address).is_ok()
        });
        Self {
            port,
            inbox,
            runtime,
        }
    }
}

/// A NATS server with JetStream of the test's own, on an ephemeral port, storing in a temp dir
/// (so a stream survives a stop and a restart).
#[derive(Debug)]
pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with more command-line options (e.g. `--tls --tlscert FILE --tlskey FILE`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        server.resume();
        server
    }

    /// Starts (again) on the same port and store.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log");
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server (Debian package nats-server)");
        self.child = Some(child);
        wait_until("nats-server listening", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Stops it (SIGKILL: the broker goes away without a goodbye).
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Reads a JetStream stream from its start into an [`Inbox`] (topics written the MQTT way, so
/// the inbox's checks apply), on a thread of its own; follows the stream through restarts.
pub struct NatsStreamReader {
    pub inbox: Inbox,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NatsStreamReader {
    pub fn start(port: u16, stream: &str, subject_prefix: &str) -> Self {
        let inbox = Inbox::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (inbox, stop) = (inbox.clone(), Arc::clone(&stop));
            let (stream, prefix) = (stream.to_owned(), subject_prefix.to_owned());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(read_stream(port, stream, prefix, inbox, stop));
            })
        };
        Self {
            inbox,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NatsStreamReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn read_stream(
    port: u16,
    name: String,
    prefix: String,
    inbox: Inbox,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use async_nats::jetstream::{self, consumer};
    use futures_util::StreamExt;
    let mut next = 1u64;
    let pause = || tokio::time::sleep(Duration::from_millis(100));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(client) = async_nats::connect(format!("127.0.0.1:{port}")).await else {
            pause().await;
            continue;
        };
        let context = jetstream::new(client);
        let Ok(stream) = context.get_stream(&name).await else {
            pause().await;
            continue;
        };
        let config = consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..consumer::pull::Config::default()
        };
        let Ok(consumer) = stream.create_consumer(config).await else {
            pause().await;
            continue;
        };
        let Ok(mut messages) = consumer.messages().await else {
            pause().await;
            continue;
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                Ok(Some(Ok(message))) => {
                    let Ok(info) = message.info() else { continue };
                    if info.stream_sequence < next {
                        continue;
                    }
                    next = info.stream_sequence + 1;
                    let topic = edge_schema::Address::from_nats_subject(&prefix, &message.subject)
                        .map(|address| address.mqtt_topic("edge"))
                        .unwrap_or_else(|| message.subject.to_string());
                    inbox.push(&topic, &message.payload);
                }
                Ok(Some(Err(_)) | None) => break,
                Err(_) => {}
            }
        }
    }
}

/// A name no other test (or run) uses, for streams, exchanges and queues on shared brokers.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The machine's RabbitMQ (127.0.0.1:5672, guest/guest).
pub const RABBITMQ_PORT: u16 = 5672;

/// Reads what reaches an exchange into an [`Inbox`]: an exclusive queue bound to it with `#`,
/// on a thread of its own; the exchange is declared (durable, topic) as the gateway declares it,
/// and deleted when the reader is dropped.
pub struct AmqpQueueReader {
    pub inbox: Inbox,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AmqpQueueReader {
    /// Starts reading; returns once the queue is bound.
    pub fn start(exchange: &str) -> Self {
        let inbox = Inbox::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = {
            let (inbox, stop, exchange) = (inbox.clone(), Arc::clone(&stop), exchange.to_owned());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(read_queue(exchange, inbox, stop, ready_tx));
            })
        };
        ready
            .recv_timeout(Duration::from_secs(20))
            .expect("the queue is bound");
        Self {
            inbox,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for AmqpQueueReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn read_queue(
    exchange: String,
    inbox: Inbox,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) {
    use futures_util::StreamExt;
    use lapin::options::*;
    use lapin::types::FieldTable;
    let connection = lapin::Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{RABBITMQ_PORT}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect to RabbitMQ on 127.0.0.1:5672");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind queue");
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "test-reader".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let _ = ready.send(());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let key = delivery.routing_key.as_str();
                let topic = edge_schema::Address::from_amqp_routing_key(key)
                    .map(|address| address.mqtt_topic("edge"))
                    .unwrap_or_else(|| key.to_owned());
                inbox.push(&topic, &delivery.data);
            }
            Ok(Some(Err(_)) | None) => break,
            Err(_) => {}
        }
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
}
