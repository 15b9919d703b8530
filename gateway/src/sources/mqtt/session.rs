//! One device connection: MQTT 3.1.1 from CONNECT to close, with acknowledgements withheld until
//! the journal has committed what they acknowledge.
//!
//! # Flow
//! Packets are parsed from what the socket delivered. The events of one read (at most
//! [`MAX_GROUP`]) become one append request to the journal writer; its QoS 1 PUBACKs (QoS 2
//! PUBRECs) wait in a FIFO beside the request's [`Commit`] and are written once it resolves, in
//! the order the PUBLISH packets arrived (MQTT 3.1.1, 4.6). While [`MAX_PENDING`] requests await
//! their commit, or the writer's queue is full, the connection stops reading: the device's
//! in-flight window fills and it waits. That is the backpressure a broker that acknowledges on
//! receipt cannot give.
//!
//! Control packets (PINGREQ, PUBREL, SUBSCRIBE, UNSUBSCRIBE) are answered at once. Devices only
//! publish here: a SUBSCRIBE is answered with a failure return code for each filter.
//!
//! # Who may speak for whom
//! A login speaks for the devices it names ([`Grant`]). A publish for another device is refused
//! like any bad input: counted (`reason="not_authorized"`), dead-lettered, logged at a limited
//! rate, and acknowledged once the dead letter is queued, so the device does not resend it
//! forever and what it sends next is not held up behind it (MQTT 3.1.1 has no negative PUBACK;
//! Mosquitto and EMQX drop a refused publish the same way). A client id held by a connection of
//! another login is refused at CONNECT (return code 2): a login cannot push another login's
//! device off the gateway.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttc::{
    ConnectReturnCode, Packet, Protocol, QoS, SubAck, SubscribeReasonCode, mqttbytes::Error,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use crate::journal::{Commit, CommitFailed, Record};
use crate::sources::Grant;

use super::listener::{Registration, Shared};

/// A device must send CONNECT within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet accepted (remaining length). Payloads over 64 KiB are rejected with a reason
/// and dead-lettered by the ingest stage; only packets past this limit close the connection.
const MAX_PACKET: usize = 256 * 1024;
/// Bytes the read buffer grows by.
const READ_CHUNK: usize = 8 * 1024;
/// Most events in one append request.
const MAX_GROUP: usize = 256;
/// Most append requests of one connection waiting for their commit.
const MAX_PENDING: usize = 8;

/// A packet that waits for a commit before it may be sent.
#[derive(Debug, Clone, Copy)]
enum Ack {
    /// PUBACK, for a QoS 1 PUBLISH.
    Puback(u16),
    /// PUBREC, for a QoS 2 PUBLISH.
    Pubrec(u16),
}

/// Events parsed from the socket and the acknowledgements they owe.
#[derive(Debug, Default)]
struct Group {
    records: Vec<Record>,
    acks: Vec<Ack>,
}

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The device disconnected (DISCONNECT or end of stream).
    Disconnected,
    /// A newer connection with the same client id took over.
    TakenOver,
    /// The gateway is stopping.
    Shutdown,
    /// The socket failed.
    Io(std::io::Error),
    /// The device broke the protocol.
    Protocol(String),
    /// The journal did not store events this connection handed it.
    Journal,
}

/// A device's byte stream: plain TCP, or TLS over it.
trait DeviceStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> DeviceStream for T {}

/// Serves one device connection until it closes.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
) {
    let _open = shared.ingest.metrics().device_connected();
    let _ = stream.set_nodelay(true);
    // Over TLS, the handshake comes first, within the time a CONNECT has; a verified client
    // certificate names the device's login.
    let (stream, certificate): (Box<dyn DeviceStream>, Option<String>) = match shared.tls() {
        None => (Box::new(stream), None),
        Some(tls) => {
            let handshake = tokio::time::timeout(CONNECT_TIMEOUT, tls.acceptor().accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| super::tls::certificate_name(leaf));
                    (Box::new(stream), certificate)
                }
                Ok(Err(error)) => {
                    shared.tls_refused(peer, &error.to_string());
                    return;
                }
                Err(_) => {
                    shared.tls_refused(peer, "no TLS handshake within 10 s");
                    return;
                }
            }
        }
    };
    let mut connection = Connection {
        stream,
        certificate,
        peer,
        input: BytesMut::with_capacity(READ_CHUNK),
        output: BytesMut::new(),
        shared: Arc::clone(&shared),
        grant: Grant::Login {
            name: "".into(),
            devices: Arc::new([]),
        },
    };
    let Some((client_id, keep_alive, registration)) = connection.handshake().await else {
        return;
    };
    let close = connection
        .serve(keep_alive, Arc::clone(&registration.taken_over), shutdown)
        .await;
    shared.unregister(&client_id, registration.number);
    let peer = connection.peer;
    match close {
        Close::Disconnected | Close::Shutdown => {
            tracing::debug!(%peer, client_id, ?close, "device connection closed");
        }
        Close::TakenOver => {
            tracing::info!(%peer, client_id, "a new connection with the same client id took over");
        }
        Close::Io(error) => {
            tracing::debug!(%peer, client_id, %error, "device connection failed");
        }
        Close::Protocol(detail) => connection.protocol_error(&client_id, &detail),
        Close::Journal => {
            tracing::error!(
                %peer,
                client_id,
                "closed a device connection: the journal did not store its events; the device resends what was not acknowledged"
            );
        }
    }
}

struct Connection {
    stream: Box<dyn DeviceStream>,
    /// The login its verified client certificate names, over TLS with client certificates.
    certificate: Option<String>,
    peer: SocketAddr,
    input: BytesMut,
    output: BytesMut,
    shared: Arc<Shared>,
    /// Who the connection may speak for: nobody until its login is accepted.
    grant: Grant,
}

impl Connection {
    /// Reads CONNECT and answers it: the client id, the keep-alive deadline and the claim on the
    /// client id of an accepted connection; `None` when it was refused or failed (already counted
    /// and logged).
    async fn handshake(&mut self) -> Option<(String, Option<Duration>, Registration)> {
        let connect = match tokio::time::timeout(CONNECT_TIMEOUT, self.read_packet()).await {
            Ok(Ok(Some(Packet::Connect(connect)))) => connect,
            Ok(Ok(Some(other))) => {
                self.protocol_error(
                    "",
                    &format!("expected CONNECT, got {}", packet_name(&other)),
                );
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Err(Close::Protocol(detail))) => {
                if detail.starts_with(UNSUPPORTED_PROTOCOL) {
                    self.send_connack(false, ConnectReturnCode::RefusedProtocolVersion)
                        .await;
                }
                self.protocol_error("", &detail);
                return None;
            }
            Ok(Err(_)) => return None,
            Err(_) => {
                self.protocol_error("", "no CONNECT within 10 s");
                return None;
            }
        };
        if connect.protocol != Protocol::V4 {
            self.send_connack(false, ConnectReturnCode::RefusedProtocolVersion)
                .await;
            self.protocol_error(
                &connect.client_id,
                &format!("{UNSUPPORTED_PROTOCOL}: MQTT 5; use MQTT 3.1.1"),
            );
            return None;
        }
        let grant = match self
            .shared
            .check_login(connect.login.as_ref(), self.certificate.as_deref())
        {
            Ok(grant) => grant,
            Err(code) => {
                self.shared.ingest.metrics().add_device_login_refused();
                if let Some(suppressed) = self.shared.ingest.allow_warning("login") {
                    let user = connect.login.as_ref().map(|login| login.username.as_str());
                    tracing::warn!(
                        peer = %self.peer,
                        client_id = connect.client_id,
                        user,
                        suppressed,
                        "refused a device login: {}",
                        match (code, &self.certificate) {
                            (ConnectReturnCode::NotAuthorized, Some(_)) =>
                                "its username is not the name of its certificate",
                            (ConnectReturnCode::NotAuthorized, None) => "no username and password",
                            _ => "unknown user or wrong password",
                        }
                    );
                }
                self.send_connack(false, code).await;
                return None;
            }
        };
        let client_id = if connect.client_id.is_empty() {
            if !connect.clean_session {
                self.send_connack(false, ConnectReturnCode::BadClientId)
                    .await;
                self.protocol_error("", "an empty client id needs a clean session");
                return None;
            }
            format!("anonymous-{}", self.shared.next_number())
        } else {
            connect.client_id
        };
        // Claimed before the CONNACK: once the device hears it is connected, a newer connection
        // with its id must find this one to take over.
        let Ok(registration) =
            self.shared
                .register(&client_id, self.shared.next_number(), grant.login())
        else {
            self.shared.ingest.metrics().add_device_client_id_refused();
            if let Some(suppressed) = self.shared.ingest.allow_warning("client_id_taken") {
                tracing::warn!(
                    peer = %self.peer,
                    client_id,
                    user = grant.login(),
                    suppressed,
                    "refused a device connection: its client id is held by a connection of another login"
                );
            }
            self.send_connack(false, ConnectReturnCode::BadClientId)
                .await;
            return None;
        };
        self.grant = grant;
        // The gateway keeps no state for a device between connections: devices only publish,
        // and what they published is in the journal. A device asking to resume its session finds
        // it "present", so its client resends the publishes it has no PUBACK for (3.1.2.4).
        self.send_connack(!connect.clean_session, ConnectReturnCode::Success)
            .await;
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        Some((client_id, keep_alive, registration))
    }

    async fn serve(
        &mut self,
        keep_alive: Option<Duration>,
        taken_over: Arc<tokio::sync::Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Close {
        let journal = self.shared.ingest.journal().clone();
        let mut commits = FuturesOrdered::new();
        let mut ready: Option<Group> = None;
        let mut closing: Option<Close> = None;
        let mut last_heard = Instant::now();
        let mut taken_over = pin!(taken_over.notified_owned());
        loop {
            let accepting = closing.is_none() && ready.is_none() && commits.len() < MAX_PENDING;
            if accepting {
                let parsed = self.parse_buffered().await;
                self.shared.ingest.flush_rules();
                match parsed {
                    Ok((group, stop)) => {
                        if !group.records.is_empty() {
                            ready = Some(group);
                        } else if !group.acks.is_empty() {
                            commits.push_back(settle(None, group.acks));
                        }
                        closing = stop;
                    }
                    Err(close) => return close,
                }
            }
            if !self.output.is_empty() {
                // Flushed: over TLS, what was written may wait in the session's buffer.
                let written = async {
                    self.stream.write_all(&self.output).await?;
                    self.stream.flush().await
                };
                if let Err(error) = written.await {
                    return Close::Io(error);
                }
                self.output.clear();
            }
            if closing.is_some() && ready.is_none() && commits.is_empty() {
                return closing.unwrap_or(Close::Disconnected);
            }
            let reading = closing.is_none() && ready.is_none() && commits.len() < MAX_PENDING;
            let deadline = keep_alive.map(|limit| last_heard + limit);
            tokio::select! {
                biased;
                _ = &mut taken_over => return Close::TakenOver,
                _ = shutdown.changed(), if closing.is_none() => closing = Some(Close::Shutdown),
                settled = commits.next(), if !commits.is_empty() => match settled {
                    Some(Ok(acks)) => {
                        self.encode_acks(&acks);
                        // Acks of later requests that are already committed go out in the same write.
                        loop {
                            match now_or_never(commits.next()) {
                                Some(Some(Ok(acks))) => self.encode_acks(&acks),
                                // None of this request's acks, nor any later one's, may go out.
                                Some(Some(Err(CommitFailed))) => return Close::Journal,
                                Some(None) | None => break,
                            }
                        }
                    }
                    Some(Err(CommitFailed)) => return Close::Journal,
                    None => {}
                },
                permit = journal.reserve(), if ready.is_some() => match (permit, ready.take()) {
                    (Ok(permit), Some(group)) => {
                        commits.push_back(settle(Some(permit.submit(group.records)), group.acks));
                    }
                    _ => return Close::Journal,
                },
                read = self.read_more(), if reading => match read {
                    Ok(0) => closing = Some(Close::Disconnected),
                    Ok(_) => last_heard = Instant::now(),
                    Err(error) => return Close::Io(error),
                },
                _ = sleep_until(deadline), if reading && deadline.is_some() => {
                    return Close::Protocol("keep-alive expired: nothing heard for 1.5 × keep-alive".into());
                }
            }
        }
    }

    /// Takes the complete packets the buffer holds (up to [`MAX_GROUP`] events) and answers the
    /// control packets among them. Returns the events with the acknowledgements they owe, and
    /// `Some` if the device disconnected.
    async fn parse_buffered(&mut self) -> Result<(Group, Option<Close>), Close> {
        let mut group = Group::default();
        while group.records.len() < MAX_GROUP {
            let packet = match Packet::read(&mut self.input, MAX_PACKET) {
                Ok(packet) => packet,
                Err(Error::InsufficientBytes(_)) => break,
                Err(error) => return Err(Close::Protocol(describe(&error))),
            };
            match packet {
                Packet::Publish(publish) => {
                    let record = self
                        .shared
                        .ingest
                        .accept(&self.grant, &publish.topic, &publish.payload)
                        .await;
                    group.records.extend(record);
                    match publish.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => group.acks.push(Ack::Puback(publish.pkid)),
                        QoS::ExactlyOnce => group.acks.push(Ack::Pubrec(publish.pkid)),
                    }
                }
                Packet::PubRel(pubrel) => put_ack(&mut self.output, PUBCOMP, pubrel.pkid),
                Packet::PingReq => self.output.put_slice(&PINGRESP),
                Packet::Subscribe(subscribe) => {
                    if let Some(suppressed) = self.shared.ingest.allow_warning("device_subscribe") {
                        tracing::warn!(
                            peer = %self.peer,
                            suppressed,
                            "refused a device subscription: devices can only publish to the gateway"
                        );
                    }
                    let codes = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
                    if SubAck::new(subscribe.pkid, codes)
                        .write(&mut self.output)
                        .is_err()
                    {
                        return Err(Close::Protocol("unanswerable SUBSCRIBE".into()));
                    }
                }
                Packet::Unsubscribe(unsubscribe) => {
                    put_ack(&mut self.output, UNSUBACK, unsubscribe.pkid);
                }
                Packet::Disconnect => return Ok((group, Some(Close::Disconnected))),
                // The gateway never publishes to devices: there is nothing for these to answer.
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                other @ (Packet::Connect(_)
                | Packet::ConnAck(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp) => {
                    return Err(Close::Protocol(format!(
                        "unexpected {} from a device",
                        packet_name(&other)
                    )));
                }
            }
        }
        Ok((group, None))
    }

    /// Reads what the socket has: the number of bytes, 0 at end of stream.
    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.input.capacity() - self.input.len() < READ_CHUNK / 4 {
            self.input.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.input).await
    }

    /// Reads one whole packet (for the handshake); `None` at end of stream. A CONNECT for another
    /// protocol version is refused from its raw bytes: the 3.1.1 parser would misread an MQTT 5
    /// CONNECT's properties.
    async fn read_packet(&mut self) -> Result<Option<Packet>, Close> {
        loop {
            if let Some((name, level)) = connect_protocol(&self.input)
                && (name != b"MQTT" || level != 4)
            {
                return Err(Close::Protocol(format!(
                    "{UNSUPPORTED_PROTOCOL}: {} level {level}; use MQTT 3.1.1 (level 4)",
                    String::from_utf8_lossy(name)
                )));
            }
            match Packet::read(&mut self.input, MAX_PACKET) {
                Ok(packet) => return Ok(Some(packet)),
                Err(Error::InsufficientBytes(missing)) => {
                    self.input.reserve(missing.max(READ_CHUNK));
                    match self.stream.read_buf(&mut self.input).await {
                        Ok(0) => return Ok(None),
                        Ok(_) => {}
                        Err(error) => return Err(Close::Io(error)),
                    }
                }
                Err(error) => return Err(Close::Protocol(describe(&error))),
            }
        }
    }

    fn encode_acks(&mut self, acks: &[Ack]) {
        for ack in acks {
            match *ack {
                Ack::Puback(pkid) => put_ack(&mut self.output, PUBACK, pkid),
                Ack::Pubrec(pkid) => put_ack(&mut self.output, PUBREC, pkid),
            }
        }
    }

    async fn send_connack(&mut self, session_present: bool, code: ConnectReturnCode) {
        let packet = [0x20, 0x02, u8::from(session_present), code as u8];
        if self.stream.write_all(&packet).await.is_ok() {
            let _ = self.stream.flush().await;
        }
    }

    fn protocol_error(&self, client_id: &str, detail: &str) {
        self.shared.ingest.metrics().add_device_protocol_error();
        if let Some(suppressed) = self.shared.ingest.allow_warning("device_protocol") {
            tracing::warn!(
                peer = %self.peer,
                client_id,
                suppressed,
                "closed a device connection: {detail}"
            );
        }
    }
}

/// Resolves when the events of an append request are committed (at once when it had none), to
/// the acknowledgements they owe.
async fn settle(commit: Option<Commit>, acks: Vec<Ack>) -> Result<Vec<Ack>, CommitFailed> {
    if let Some(commit) = commit {
        commit.await?;
    }
    Ok(acks)
}

const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const PUBCOMP: u8 = 0x70;
const UNSUBACK: u8 = 0xB0;
const PINGRESP: [u8; 2] = [0xD0, 0x00];
/// How a refused protocol version is described (the handshake answers it with CONNACK 1).
const UNSUPPORTED_PROTOCOL: &str = "unsupported protocol";

/// Appends a 4-byte acknowledgement packet (fixed header, remaining length 2, packet id).
fn put_ack(output: &mut BytesMut, first_byte: u8, pkid: u16) {
    output.put_u8(first_byte);
    output.put_u8(0x02);
    output.put_u16(pkid);
}

/// The protocol name and level of a CONNECT at the start of `bytes`, once enough of it is there.
fn connect_protocol(bytes: &[u8]) -> Option<(&[u8], u8)> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length: 1 to 4 bytes, 7 bits each, the top bit saying another follows.
    let mut at = 1;
    while bytes.get(at)? & 0x80 != 0 {
        at += 1;
        if at > 4 {
            return None;
        }
    }
    at += 1;
    let len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    let name = bytes.get(at + 2..at + 2 + len)?;
    let level = *bytes.get(at + 2 + len)?;
    Some((name, level))
}

fn describe(error: &Error) -> String {
    match error {
        Error::PayloadSizeLimitExceeded(size) => {
            format!("packet of {size} bytes is over the {MAX_PACKET}-byte limit")
        }
        Error::InvalidProtocol => format!("{UNSUPPORTED_PROTOCOL}: not MQTT 3.1.1"),
        Error::InvalidProtocolLevel(level) => {
            format!("{UNSUPPORTED_PROTOCOL}: level {level}; use MQTT 3.1.1 (level 4)")
        }
        other => format!("malformed packet: {other}"),
    }
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Polls a future once: its output if it is ready now.
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
