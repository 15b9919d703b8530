//! AWS EventBridge for the tests: moto's server (an AWS API on loopback: EventBridge delivers
//! a bus's entries through a rule to a CloudWatch Logs group that the test reads back), and a
//! proxy that
//! speaks HTTP between the gateway and moto: it passes calls, cuts the endpoint away, answers
//! every call with a `ThrottlingException`, or spoils the `Detail` of one device's entries in
//! transit (so that moto, for real, refuses those entries alone).
//!
//! moto's server is found in `$EDGE_MOTO_SERVER`, else as `moto_server` on the `PATH`
//! (`scripts/test.sh` installs it in a virtual environment).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use super::*;

/// A moto server of the test's own, on an ephemeral port.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start() -> Self {
        let program = std::env::var("EDGE_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {program} ({error}): install moto's server \
                     (python3 -m venv v && v/bin/pip install 'moto[server]') and set \
                     EDGE_MOTO_SERVER, or run scripts/test.sh"
                )
            });
        let moto = Self { port, child };
        wait_until("moto's server", Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }

    /// Calls an AWS JSON API on moto (see [`aws_call`]).
    pub fn call(&self, service: &str, target: &str, body: &serde_json::Value) -> serde_json::Value {
        aws_call(self.port, service, target, body)
    }

    /// Creates `bus`, a log group, and a rule sending every entry of the gateway to it;
    /// returns the group's name. (A rule's SQS target works too, but moto's queues slow down
    /// as they fill: taking and reading back thousands of entries costs minutes.)
    pub fn bus_to_log(&self, bus: &str) -> String {
        self.call(
            "events",
            "AWSEvents.CreateEventBus",
            &serde_json::json!({ "Name": bus }),
        );
        let group = format!("/aws/events/{bus}");
        self.call(
            "logs",
            "Logs_20140328.CreateLogGroup",
            &serde_json::json!({ "logGroupName": group }),
        );
        self.call(
            "events",
            "AWSEvents.PutRule",
            &serde_json::json!({
                "Name": "to-log",
                "EventBusName": bus,
                "EventPattern": "{\"source\":[\"edge-gateway\"]}",
                "State": "ENABLED",
            }),
        );
        self.call(
            "events",
            "AWSEvents.PutTargets",
            &serde_json::json!({
                "Rule": "to-log",
                "EventBusName": bus,
                "Targets": [{
                    "Id": "log",
                    "Arn": format!("arn:aws:logs:us-east-1:123456789012:log-group:{group}"),
                }],
            }),
        );
        group
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls an AWS JSON API on moto at `port`: `target` is the `X-Amz-Target` (`AWSEvents.PutRule`,
/// `AmazonSQS.ReceiveMessage`); the service is named in the credential scope, as a signed
/// request names it (moto does not check the signature).
pub fn aws_call(
    port: u16,
    service: &str,
    target: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    aws_try_call(port, service, target, body).unwrap_or_else(|error| panic!("{error}"))
}

/// [`aws_call`], with a failure returned: moto's server is not thread-safe everywhere (a
/// `FilterLogEvents` while the rule's target creates log streams can fail with a 500,
/// "dictionary changed size during iteration"), so a poll can fail now and pass next time.
pub fn aws_try_call(
    port: u16,
    service: &str,
    target: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let content_type = match service {
        "sqs" => "application/x-amz-json-1.0",
        _ => "application/x-amz-json-1.1",
    };
    let scope = service;
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Amz-Target: {target}\r\n\
         Content-Type: {content_type}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=testing/20260101/us-east-1/{scope}/aws4_request, SignedHeaders=host, \
         Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
        return Err(format!("{target} failed: {head}\n{body}"));
    }
    Ok(serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// Reads the log group that a bus's rule fills, into an inbox: each log event is an
/// EventBridge event whose `detail` is what the gateway put. Read in the order the bus took
/// them (moto stamps each with the time it took it, calls being one at a time).
pub struct LogReader {
    pub inbox: Inbox,
    /// The `detail-type`, `source` and `time` of each entry, in arrival order.
    pub envelopes: Arc<Mutex<Vec<(String, String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogReader {
    pub fn start(moto_port: u16, group: &str, gateway: &str) -> Self {
        let inbox = Inbox::default();
        let envelopes: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (inbox, envelopes, stop) =
                (inbox.clone(), Arc::clone(&envelopes), Arc::clone(&stop));
            let (group, gateway) = (group.to_owned(), gateway.to_owned());
            std::thread::spawn(move || {
                let mut seen = std::collections::HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let mut events = Vec::new();
                    let mut token = serde_json::Value::Null;
                    let mut failures = 0;
                    loop {
                        let mut request = serde_json::json!({ "logGroupName": group });
                        if !token.is_null() {
                            request["nextToken"] = token.clone();
                        }
                        let target = "Logs_20140328.FilterLogEvents";
                        let page = match aws_try_call(moto_port, "logs", target, &request) {
                            Ok(page) => page,
                            // A page that failed is asked for again (see `aws_try_call`);
                            // one that keeps failing is a broken set-up.
                            Err(error) => {
                                failures += 1;
                                assert!(failures < 20, "{error}");
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        };
                        events.extend(page["events"].as_array().cloned().unwrap_or_default());
                        token = page["nextToken"].clone();
                        if token.is_null() {
                            break;
                        }
                    }
                    events.sort_by(|a, b| {
                        let time =
                            |event: &serde_json::Value| event["timestamp"].as_f64().unwrap_or(0.0);
                        time(a).total_cmp(&time(b))
                    });
                    for event in events {
                        let Some(message) = event["message"].as_str() else {
                            continue;
                        };
                        let body: serde_json::Value =
                            serde_json::from_str(message).unwrap_or_default();
                        let id = body["id"].as_str().unwrap_or("").to_owned();
                        if !seen.insert(id) {
                            continue;
                        }
                        let kind = body["detail-type"].as_str().unwrap_or("").to_owned();
                        envelopes.lock().expect("lock").push((
                            kind.clone(),
                            body["source"].as_str().unwrap_or("").to_owned(),
                            body["time"].to_string(),
                        ));
                        let detail = &body["detail"];
                        match kind.as_str() {
                            "edge.status" => inbox.push(
                                &format!("edge/{gateway}/status"),
                                detail["status"].as_str().unwrap_or("").as_bytes(),
                            ),
                            "edge.alert" => inbox.push(
                                &format!("edge/{gateway}/alerts"),
                                detail.to_string().as_bytes(),
                            ),
                            _ => inbox.push(
                                &format!(
                                    "edge/{gateway}/devices/{}/events",
                                    detail["device"].as_str().unwrap_or("")
                                ),
                                detail.to_string().as_bytes(),
                            ),
                        }
                    }
                }
            })
        };
        Self {
            inbox,
            envelopes,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the proxy does to `PutEvents` calls on their way.
#[derive(Debug, Default)]
struct Tamper {
    /// The device whose entries' `Detail` is spoiled.
    spoil: Option<String>,
    /// The device whose entries are refused for now, and in how many more calls.
    refuse: Option<(String, u32)>,
}

/// The device an entry of a `PutEvents` request is for.
fn entry_device(entry: &serde_json::Value) -> Option<String> {
    let detail: serde_json::Value = serde_json::from_str(entry["Detail"].as_str()?).ok()?;
    detail["device"].as_str().map(str::to_owned)
}

const PASS: u8 = 0;
const CUT: u8 = 1;
const THROTTLE: u8 = 2;

/// An HTTP proxy in front of moto (see the module docs); it stops when dropped.
pub struct AwsProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    tamper: Arc<Mutex<Tamper>>,
    put_events: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl AwsProxy {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Self {
            port,
            mode: Arc::new(AtomicU8::new(PASS)),
            tamper: Arc::default(),
            put_events: Arc::default(),
            throttled: Arc::default(),
            stop: Arc::default(),
        };
        let (mode, tamper, put_events, throttled, stop) = (
            Arc::clone(&proxy.mode),
            Arc::clone(&proxy.tamper),
            Arc::clone(&proxy.put_events),
            Arc::clone(&proxy.throttled),
            Arc::clone(&proxy.stop),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if mode.load(Ordering::Relaxed) == CUT {
                            drop(client);
                            continue;
                        }
                        let (mode, tamper, put_events, throttled, stop) = (
                            Arc::clone(&mode),
                            Arc::clone(&tamper),
                            Arc::clone(&put_events),
                            Arc::clone(&throttled),
                            Arc::clone(&stop),
                        );
                        std::thread::spawn(move || {
                            serve(
                                client,
                                upstream,
                                &mode,
                                &tamper,
                                &put_events,
                                &throttled,
                                &stop,
                            );
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        proxy
    }

    pub fn pass(&self) {
        self.mode.store(PASS, Ordering::Relaxed);
    }

    /// The endpoint away: connections are closed, new ones refused at once.
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::Relaxed);
    }

    /// Every call answered `400 ThrottlingException`.
    pub fn throttle(&self) {
        self.mode.store(THROTTLE, Ordering::Relaxed);
    }

    /// The `Detail` of `device`'s entries replaced by text that is not JSON, on the way.
    pub fn spoil_device(&self, device: &str) {
        self.tamper.lock().expect("lock").spoil = Some(device.to_owned());
    }

    /// In the next `calls` calls that hold entries of `device`, the first of them is answered
    /// `ThrottlingException` in its place of the result (and not passed to moto), as EventBridge
    /// refuses single entries when an account's limit is hit; the device's later entries in the
    /// call pass.
    pub fn refuse_device_for_now(&self, device: &str, calls: u32) {
        self.tamper.lock().expect("lock").refuse = Some((device.to_owned(), calls));
    }

    /// `PutEvents` calls passed to moto.
    pub fn put_events_calls(&self) -> u64 {
        self.put_events.load(Ordering::Relaxed)
    }

    /// Calls answered with a throttle.
    pub fn throttled_calls(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP/1.1 request or response: its head and its body (by `Content-Length`, or to
/// the end of the stream when it has none).
fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    buffer.drain(..head_end + 4);
    match length {
        Some(length) => {
            while buffer.len() < length {
                let read = stream.read(&mut chunk).ok()?;
                if read == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            let body = buffer.drain(..length).collect();
            Some((head, body))
        }
        None if head.starts_with("HTTP/") => {
            let mut body = std::mem::take(buffer);
            let _ = stream.read_to_end(&mut body);
            Some((head, body))
        }
        None => Some((head, Vec::new())),
    }
}

/// `head` with its `Content-Length` (and `Connection`) replaced.
fn with_length(head: &str, length: usize, connection: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in head.lines() {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("connection")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    ));
    out.into_bytes()
}

/// Puts a `ThrottlingException` result at each position of `refused` among moto's results.
fn splice_refused(mut result: serde_json::Value, refused: &[usize]) -> String {
    let mut entries = result["Entries"].as_array().cloned().unwrap_or_default();
    for &n in refused {
        let failure = serde_json::json!({
            "ErrorCode": "ThrottlingException",
            "ErrorMessage": "Rate exceeded",
        });
        entries.insert(n.min(entries.len()), failure);
    }
    let failed = entries
        .iter()
        .filter(|entry| entry.get("ErrorCode").is_some())
        .count();
    result["Entries"] = serde_json::Value::Array(entries);
    result["FailedEntryCount"] = serde_json::json!(failed);
    result.to_string()
}

/// Writes a JSON response; false if the client is gone.
fn respond(client: &mut TcpStream, status: u16, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {status} OK\r\nContent-Type: application/x-amz-json-1.1\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).is_ok() && client.write_all(body.as_bytes()).is_ok()
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    mode: &AtomicU8,
    tamper: &Mutex<Tamper>,
    put_events: &AtomicU64,
    throttled: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut buffer = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // Blocks until the gateway's next call, or its end of the connection.
        let Some((head, mut body)) = read_message(&mut client, &mut buffer) else {
            return;
        };
        match mode.load(Ordering::Relaxed) {
            CUT => return,
            THROTTLE => {
                throttled.fetch_add(1, Ordering::Relaxed);
                let answer = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                     x-amzn-ErrorType: ThrottlingException\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                );
                if client.write_all(head.as_bytes()).is_err() || client.write_all(answer).is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        // Positions of the entries refused for now, answered here.
        let mut refused: Vec<usize> = Vec::new();
        let mut entries_sent = usize::MAX;
        if head.contains("AWSEvents.PutEvents") {
            put_events.fetch_add(1, Ordering::Relaxed);
            let mut tamper = tamper.lock().expect("lock");
            if let Ok(mut request) = serde_json::from_slice::<serde_json::Value>(&body)
                && let Some(entries) = request["Entries"].as_array_mut()
            {
                if let Some(device) = &tamper.spoil {
                    for entry in entries.iter_mut() {
                        if entry_device(entry).as_deref() == Some(device.as_str()) {
                            entry["Detail"] = serde_json::Value::String("{not json".into());
                        }
                    }
                }
                if let Some((device, calls)) = &mut tamper.refuse
                    && *calls > 0
                {
                    // The device's first entry of the call: its later ones pass.
                    refused = (0..entries.len())
                        .find(|&n| entry_device(&entries[n]).as_deref() == Some(device.as_str()))
                        .into_iter()
                        .collect();
                    if !refused.is_empty() {
                        *calls -= 1;
                        for &n in refused.iter().rev() {
                            entries.remove(n);
                        }
                    }
                }
                entries_sent = entries.len();
                body = request.to_string().into_bytes();
            }
        }
        if entries_sent == 0 {
            // Every entry refused: moto is not asked.
            let answer = splice_refused(serde_json::json!({ "Entries": [] }), &refused);
            if !respond(&mut client, 200, &answer) {
                return;
            }
            continue;
        }
        let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let mut request = with_length(&head, body.len(), "close");
        request.extend_from_slice(&body);
        if server.write_all(&request).is_err() {
            return;
        }
        let mut answer = Vec::new();
        let Some((head, mut body)) = read_message(&mut server, &mut answer) else {
            return;
        };
        if !refused.is_empty()
            && let Ok(result) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            body = splice_refused(result, &refused).into_bytes();
        }
        let mut response = with_length(&head, body.len(), "keep-alive");
        response.extend_from_slice(&body);
        if client.write_all(&response).is_err() {
            return;
        }
    }
}
