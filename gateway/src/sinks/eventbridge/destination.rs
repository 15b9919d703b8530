//! The EventBridge adapter (the AWS SDK for Rust, rustls with ring).
//!
//! 1. The client is made at the first connection: credentials and region from the standard
//!    chain (environment, profile, instance role), the region and endpoint of the uplink if set,
//!    no retries of the SDK's own (this adapter decides), a connect timeout of 10 s and twice the
//!    uplink's `ack_timeout` for each call (a stall is the driver's to notice, at `ack_timeout`). A connection says `online` (if the uplink takes the
//!    status lane) and awaits that entry's result: that is the proof the bus takes entries.
//! 2. Offering hands the row to the connection's task, which calls `PutEvents` with the next
//!    [batch](super::batch) as soon as the previous call answered: one call at a time, so that
//!    entries reach the bus in the order they were offered.
//! 3. Each entry's result decides, never `FailedEntryCount`: an `EventId` confirms; a malformed
//!    or invalid entry is refused for good (dead-lettered); any other error code (throttling,
//!    an internal failure) sends that entry again, first in the queue, after a backoff (100 ms
//!    doubling to 5 s), and with it every later entry of its device in that call, put or not
//!    ([`super::batch::settle`]): later entries of the device come after it. A whole call
//!    refused for throttling, or failing on the server's side, is sent again after the same
//!    backoff.
//! 4. A call that fails otherwise (the endpoint unreachable, access denied, no such bus) ends
//!    the connection: the driver reconnects with its backoff, and offers again what was not
//!    confirmed.

use std::collections::VecDeque;
use std::time::Duration;

use crate::sinks::pipeline::{ConfirmationSender, Pipeline};
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::{Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use tokio::sync::mpsc;

use super::batch::{
    self, ALERT, EVENT, MAX_BYTES, Outcome, SOURCE, STATUS, Verdict, entry_time, next_batch,
};
use crate::config::UplinkConfig;
use crate::journal::Lane;
use crate::sinks::destination::{
    Confirmation, Connection, Destination, DestinationError, Outgoing, Rejection, RejectionKind,
};
use crate::sinks::error::SinkError;

/// How long connecting to the endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest wait before sending again what was throttled or failed.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// An EventBridge event bus as a destination.
pub struct EventBridgeDestination {
    event_bus: String,
    region: Option<String>,
    endpoint: Option<String>,
    gateway: String,
    status: bool,
    window: usize,
    ack_timeout: Duration,
    client: Option<Client>,
}

impl std::fmt::Debug for EventBridgeDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeDestination")
            .field("event_bus", &self.event_bus)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl EventBridgeDestination {
    /// Prepares the destination; the client is made at the first connection.
    pub fn new(uplink: &UplinkConfig, gateway_id: &str) -> Result<Self, SinkError> {
        Ok(Self {
            event_bus: uplink.event_bus.clone(),
            region: uplink.region.clone(),
            endpoint: uplink.endpoint.clone(),
            gateway: gateway_id.to_owned(),
            status: uplink.lanes.status,
            window: usize::from(uplink.max_inflight.max(1)),
            ack_timeout: uplink.ack_timeout,
            client: None,
        })
    }

    async fn client(&mut self) -> Result<Client, DestinationError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(DestinationError::misconfigured(
                "no AWS region: set the uplink's `region`, or AWS_REGION",
            ));
        }
        let mut config = aws_sdk_eventbridge::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(crate::sinks::destination::request_timeout(
                        self.ack_timeout,
                    ))
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = Client::from_conf(config.build());
        self.client = Some(client.clone());
        Ok(client)
    }
}

impl Destination for EventBridgeDestination {
    type Connection = EventBridgeConnection;

    fn describe(&self) -> String {
        format!(
            "eventbridge {} bus {}",
            self.endpoint
                .as_deref()
                .or(self.region.as_deref())
                .unwrap_or("(region from the environment)"),
            self.event_bus
        )
    }

    async fn connect(&mut self) -> Result<EventBridgeConnection, DestinationError> {
        let client = self.client().await?;
        let bus = Bus {
            client,
            name: self.event_bus.clone(),
            gateway: self.gateway.clone(),
        };
        if self.status {
            bus.status("online").await?;
        }
        let task_bus = bus.clone();
        let pipeline = Pipeline::spawn(self.window, |queued, settled| {
            run(task_bus, queued, settled)
        });
        Ok(EventBridgeConnection {
            bus,
            pipeline,
            status: self.status,
        })
    }
}

/// What every call needs.
#[derive(Clone)]
struct Bus {
    client: Client,
    name: String,
    gateway: String,
}

impl Bus {
    fn entry(
        &self,
        detail_type: &str,
        detail: String,
        time_ms: Option<i64>,
    ) -> PutEventsRequestEntry {
        let mut entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.name)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail);
        if let Some(ms) = time_ms {
            entry = entry.time(DateTime::from_millis(ms));
        }
        entry.build()
    }

    /// Puts the gateway's status and awaits its entry's result.
    async fn status(&self, status: &str) -> Result<(), DestinationError> {
        let detail = serde_json::json!({ "gateway": self.gateway, "status": status }).to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let entry = self.entry(STATUS, detail, Some(now));
        let output = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|error| call_failed(&error))?;
        match output.entries().first() {
            Some(result) if result.error_code().is_none() && result.event_id().is_some() => Ok(()),
            Some(result) => Err(DestinationError::transient(format!(
                "the status entry was refused: {} {}",
                result.error_code().unwrap_or("(no code)"),
                result.error_message().unwrap_or("")
            ))),
            None => Err(DestinationError::transient(
                "PutEvents answered no result for the status entry",
            )),
        }
    }
}

/// Why a whole call failed, for the log; misconfigured when retrying alone cannot help.
fn call_failed<E, R>(error: &SdkError<E, R>) -> DestinationError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("(no code)");
            let message = service.err().message().unwrap_or("");
            let text = format!("PutEvents refused: {code}: {message}");
            if matches!(
                code,
                "AccessDeniedException"
                    | "ResourceNotFoundException"
                    | "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ValidationException"
            ) {
                DestinationError::misconfigured(text)
            } else {
                DestinationError::transient(text)
            }
        }
        other => DestinationError::transient(format!(
            "PutEvents failed: {}",
            aws_sdk_eventbridge::error::DisplayErrorContext(other)
        )),
    }
}

/// Whether a whole call may be sent again as it is: throttled, or failed on the server's side.
fn call_retryable<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            code.contains("Throttl") || code.starts_with("Internal") || code == "ServiceUnavailable"
        }
        _ => false,
    }
}

/// A live connection: the task that calls `PutEvents`, behind the shared two channels.
pub struct EventBridgeConnection {
    bus: Bus,
    pipeline: Pipeline,
    status: bool,
}

impl std::fmt::Debug for EventBridgeConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeConnection")
            .finish_non_exhaustive()
    }
}

impl Connection for EventBridgeConnection {
    fn offer(&mut self, message: Outgoing) -> Result<(), DestinationError> {
        self.pipeline.offer(message)
    }

    async fn next(&mut self) -> Result<Confirmation, DestinationError> {
        self.pipeline.next().await
    }

    async fn close(mut self, grace: Duration) -> Vec<Confirmation> {
        let deadline = tokio::time::Instant::now() + grace;
        // The task sends what it holds, then ends.
        let confirmed = self.pipeline.drain(grace).await;
        if self.status {
            let _ = tokio::time::timeout_at(deadline, self.bus.status("offline")).await;
        }
        confirmed
    }
}

/// Doubles from [`RETRY_MIN`] to [`RETRY_MAX`].
struct Backoff(Option<Duration>);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0.map_or(RETRY_MIN, |wait| (wait * 2).min(RETRY_MAX));
        self.0 = Some(wait);
        wait
    }
}

/// Queues an offered message, or refuses it at once when no call can carry it; false when the
/// connection is gone.
async fn admit(
    message: Outgoing,
    queue: &mut VecDeque<Outgoing>,
    settled: &ConfirmationSender,
) -> bool {
    let size = batch::size_of(&message);
    if size <= MAX_BYTES {
        queue.push_back(message);
        return true;
    }
    let rejection = Rejection {
        kind: RejectionKind::Permanent,
        reason: format!("the entry is {size} bytes, over EventBridge's limit of {MAX_BYTES}"),
    };
    settled
        .send(Ok(Confirmation::Rejected(message.tag, rejection)))
        .await
        .is_ok()
}

/// The connection's task: batches what is offered, one call at a time (see the module docs).
async fn run(bus: Bus, mut offers: mpsc::Receiver<Outgoing>, settled: ConfirmationSender) {
    let mut queue: VecDeque<Outgoing> = VecDeque::new();
    let mut open = true;
    let mut backoff = Backoff(None);
    let mut retrying = false;
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            match offers.recv().await {
                Some(message) => {
                    if !admit(message, &mut queue, &settled).await {
                        return;
                    }
                }
                None => return,
            }
        }
        loop {
            match offers.try_recv() {
                Ok(message) => {
                    if !admit(message, &mut queue, &settled).await {
                        return;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if queue.is_empty() {
            continue;
        }
        let batch = next_batch(&mut queue);
        let entries: Vec<PutEventsRequestEntry> = batch
            .iter()
            .map(|message| {
                let detail_type = match message.lane {
                    Lane::Events => EVENT,
                    Lane::Alerts => ALERT,
                };
                let detail = String::from_utf8_lossy(&message.row.payload).into_owned();
                bus.entry(detail_type, detail, entry_time(&message.row.payload))
            })
            .collect();
        let answer = bus
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            Err(error) if call_retryable(&error) => {
                let wait = backoff.next();
                if !retrying {
                    tracing::warn!(error = %call_failed(&error), retry_in = ?wait, "EventBridge throttles or fails: backing off");
                }
                retrying = true;
                for message in batch.into_iter().rev() {
                    queue.push_front(message);
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(error) => {
                let _ = settled.send(Err(call_failed(&error))).await;
                return;
            }
        };
        let results = output.entries();
        if results.len() != batch.len() {
            let _ = settled
                .send(Err(DestinationError::transient(format!(
                    "PutEvents answered {} results for {} entries",
                    results.len(),
                    batch.len()
                ))))
                .await;
            return;
        }
        let outcomes: Vec<Outcome> = results
            .iter()
            .map(|result| match (result.error_code(), result.event_id()) {
                (None, Some(_)) => Outcome::Put,
                (code, _) => {
                    Outcome::Failed(code.unwrap_or("(no code and no event id)").to_owned())
                }
            })
            .collect();
        let verdicts = batch::settle(&batch, &outcomes);
        let mut again = Vec::new();
        for ((message, result), verdict) in batch.into_iter().zip(results).zip(verdicts) {
            let reason = || {
                format!(
                    "{}: {}",
                    result.error_code().unwrap_or("(no code)"),
                    result.error_message().unwrap_or("")
                )
            };
            let confirmation = match verdict {
                Verdict::Confirm => Confirmation::Confirmed(message.tag),
                Verdict::Refuse => Confirmation::Rejected(
                    message.tag,
                    Rejection {
                        kind: RejectionKind::Permanent,
                        reason: reason(),
                    },
                ),
                Verdict::Again => {
                    if !retrying && result.error_code().is_some() {
                        tracing::warn!(
                            reason = reason(),
                            "EventBridge refused an entry for now: sending it again"
                        );
                    }
                    again.push(message);
                    continue;
                }
            };
            if settled.send(Ok(confirmation)).await.is_err() {
                return;
            }
        }
        if again.is_empty() {
            backoff = Backoff(None);
            retrying = false;
        } else {
            retrying = true;
            for message in again.into_iter().rev() {
                queue.push_front(message);
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }
}
