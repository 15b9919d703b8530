//! What the cloud received, and the subscribers that fill it.

use super::*;

/// An event as the cloud received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub id: String,
    pub device: String,
    pub boot: u64,
    pub seq: u64,
    pub body: serde_json::Value,
    /// Position in arrival order, counting alerts too.
    pub order: usize,
}

/// An alert as the cloud received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedAlert {
    pub body: serde_json::Value,
    /// Position in arrival order, counting events too.
    pub order: usize,
}

/// Everything a cloud subscriber received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<Vec<String>>>,
    alerts: Arc<Mutex<Vec<ReceivedAlert>>>,
    arrivals: Arc<std::sync::atomic::AtomicUsize>,
    /// How many events each batch received held, in arrival order.
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Inbox {
    pub(crate) fn push(&self, topic: &str, payload: &[u8]) {
        if topic.ends_with("/status") {
            self.statuses
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(payload).into_owned());
            return;
        }
        let body: serde_json::Value =
            serde_json::from_slice(payload).expect("the cloud receives JSON");
        if let serde_json::Value::Array(events) = body {
            // A batch: each of its events, as if it had come alone.
            assert!(
                topic.ends_with("/events") && !topic.contains("/devices/"),
                "a batch on {topic}"
            );
            self.batches.lock().expect("lock").push(events.len());
            for event in events {
                self.push_one(topic, event);
            }
            return;
        }
        self.push_one(topic, body);
    }

    fn push_one(&self, topic: &str, body: serde_json::Value) {
        let order = self
            .arrivals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if topic.ends_with("/alerts") {
            self.alerts
                .lock()
                .expect("lock")
                .push(ReceivedAlert { body, order });
            return;
        }
        let received = Received {
            order,
            topic: topic.to_owned(),
            id: body["id"].as_str().expect("id").to_owned(),
            device: body["device"].as_str().expect("device").to_owned(),
            boot: body["boot"].as_u64().expect("boot"),
            seq: body["seq"].as_u64().expect("seq"),
            body,
        };
        self.messages.lock().expect("lock").push(received);
    }

    /// How many events each batch received held, in arrival order.
    pub fn batches(&self) -> Vec<usize> {
        self.batches.lock().expect("lock").clone()
    }

    /// The alerts received, in arrival order.
    pub fn alerts(&self) -> Vec<ReceivedAlert> {
        self.alerts.lock().expect("lock").clone()
    }

    pub fn all(&self) -> Vec<Received> {
        self.messages.lock().expect("lock").clone()
    }

    pub fn statuses(&self) -> Vec<String> {
        self.statuses.lock().expect("lock").clone()
    }

    /// Distinct ids received.
    pub fn unique(&self) -> usize {
        let messages = self.messages.lock().expect("lock");
        messages
            .iter()
            .map(|m| m.id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Asserts that `devices` devices each arrived with seqs `0..per_device`, in order, and that
    /// duplicates share their id and content.
    pub fn assert_complete(&self, devices: usize, per_device: u32) {
        let seen = self.check_order_and_duplicates();
        assert_eq!(seen.len(), devices, "every device arrived");
        for (device, seqs) in seen {
            assert_eq!(
                seqs,
                (0..u64::from(per_device)).collect::<Vec<_>>(),
                "{device} is missing events"
            );
        }
    }

    /// Checks what the cloud got: duplicates share their id *and* content; after dropping
    /// duplicates, every device's events are in order. Returns the seqs per device.
    pub fn check_order_and_duplicates(&self) -> BTreeMap<String, Vec<u64>> {
        self.check_order(true)
    }

    /// Like [`Inbox::check_order_and_duplicates`], for events a device sent twice (a serial
    /// device resending after a gateway restart): a duplicate may then differ from the original
    /// in `received_at` only.
    pub fn check_order_and_resent_duplicates(&self) -> BTreeMap<String, Vec<u64>> {
        self.check_order(false)
    }

    fn check_order(&self, identical: bool) -> BTreeMap<String, Vec<u64>> {
        let messages = self.all();
        let mut first: HashMap<&str, &Received> = HashMap::new();
        let mut per_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for message in &messages {
            match first.get(message.id.as_str()) {
                Some(original) => {
                    let (mut first_body, mut again) = (original.body.clone(), message.body.clone());
                    if !identical {
                        first_body["received_at"] = serde_json::Value::Null;
                        again["received_at"] = serde_json::Value::Null;
                    }
                    assert_eq!(
                        first_body, again,
                        "a duplicate must be identical to the original"
                    );
                }
                None => {
                    first.insert(&message.id, message);
                    assert!(
                        message.topic == format!("edge/test-gw/devices/{}/events", message.device)
                            || message.topic == "edge/test-gw/events",
                        "{} came on {}",
                        message.id,
                        message.topic
                    );
                    assert_eq!(
                        message.id,
                        format!("{}:{}:{}", message.device, message.boot, message.seq)
                    );
                    per_device
                        .entry(message.device.clone())
                        .or_default()
                        .push(message.seq);
                }
            }
        }
        for (device, seqs) in &per_device {
            assert!(
                seqs.windows(2).all(|pair| pair[0] < pair[1]),
                "events of {device} out of order: {seqs:?}"
            );
        }
        per_device
    }
}

/// A cloud-side subscriber over MQTT (to Mosquitto), with a persistent session.
pub struct Subscriber {
    pub inbox: Inbox,
    runtime: tokio::runtime::Runtime,
}

impl Subscriber {
    pub fn connect(port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let inbox = Inbox::default();
        let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
        {
            let inbox = inbox.clone();
            runtime.spawn(async move {
                let mut options =
                    MqttOptions::new(format!("cloud-{}", free_port()), "127.0.0.1", port);
                options
                    .set_clean_session(false)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(1 << 20, 1 << 20)
                    .set_inflight(1000);
                let (client, mut event_loop) = AsyncClient::new(options, 100);
                let mut subscribed_tx = Some(subscribed_tx);
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if !ack.session_present {
                                let _ = client.try_subscribe("edge/#", QoS::AtLeastOnce);
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            inbox.push(&publish.topic, &publish.payload)
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        }
        subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("cloud subscriber did not subscribe");
        Self { inbox, runtime }
    }
}
