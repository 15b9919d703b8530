//! Accepting device connections: the connection cap, logins and what each may speak for, one
//! task per connection, and session takeover by client id (by the same login only).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{ConnectReturnCode, Login};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::DevicesConfig;
use crate::rules::DevicePattern;
use crate::sources::{Grant, Ingest};

use super::session;
use super::tls::{DeviceTls, DeviceTlsError};

/// How long connections get, once the gateway stops, to hand back the acknowledgements of what
/// was committed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// CONNACK with return code 3, "server unavailable".
const CONNACK_UNAVAILABLE: [u8; 4] = [0x20, 0x02, 0x00, 0x03];

/// Errors starting the device listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The listen address is unusable.
    #[error("failed to listen for devices on {listen}")]
    Listen {
        /// The address.
        listen: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files of the device endpoint cannot be used.
    #[error(transparent)]
    Tls(#[from] DeviceTlsError),
    /// A device password file could not be read.
    #[error("failed to read password file {path} of device user `{user}`")]
    PasswordFile {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The MQTT endpoint devices publish to.
#[derive(Debug)]
pub struct DeviceListener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What every connection of the listener shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) ingest: Ingest,
    logins: HashMap<String, Account>,
    /// Per client id: the connection holding it, its login, and how to tell it to go.
    sessions: Mutex<HashMap<String, Session>>,
    next_session: AtomicU64,
    connections: Arc<Semaphore>,
    /// TLS on the endpoint, when configured.
    tls: Option<Arc<DeviceTls>>,
}

/// A device login.
#[derive(Debug)]
struct Account {
    password: String,
    grant: Grant,
}

/// The connection holding a client id.
#[derive(Debug)]
struct Session {
    number: u64,
    login: Option<Arc<str>>,
    taken_over: Arc<Notify>,
}

/// A client id held by a connection of another login: it cannot be taken over.
#[derive(Debug)]
pub(super) struct ClientIdTaken;

/// A connection's claim on its client id; a newer connection with the same id takes it over.
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) number: u64,
    pub(super) taken_over: Arc<Notify>,
}

impl DeviceListener {
    /// Binds `config.listen` and reads the device password files. Must be called within a tokio
    /// runtime.
    pub fn bind(config: &DevicesConfig, ingest: Ingest) -> Result<Self, ListenerError> {
        let mut logins = HashMap::new();
        for user in &config.users {
            let password = std::fs::read_to_string(&user.password_file).map_err(|source| {
                ListenerError::PasswordFile {
                    user: user.name.clone(),
                    path: user.password_file.clone(),
                    source,
                }
            })?;
            let account = Account {
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
                grant: Grant::Login {
                    name: user.name.as_str().into(),
                    devices: user
                        .devices
                        .iter()
                        .cloned()
                        .collect::<Arc<[DevicePattern]>>(),
                },
            };
            logins.insert(user.name.clone(), account);
        }
        let tls = config
            .tls
            .as_ref()
            .map(|tls| DeviceTls::load(tls, !config.users.is_empty()))
            .transpose()?
            .map(Arc::new);
        let listen_error = |source| ListenerError::Listen {
            listen: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let listener = TcpListener::from_std(listener).map_err(listen_error)?;
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                ingest,
                logins,
                sessions: Mutex::default(),
                next_session: AtomicU64::new(1),
                connections: Arc::new(Semaphore::new(
                    config.max_connections.min(Semaphore::MAX_PERMITS),
                )),
                tls,
            }),
        })
    }

    /// The endpoint's TLS, to reload its files (SIGHUP, `POST /reload`); `None` without TLS.
    pub fn tls(&self) -> Option<Arc<DeviceTls>> {
        self.shared.tls.clone()
    }

    /// The address devices connect to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves devices until `shutdown` turns true; then gives open connections a few seconds
    /// to acknowledge what was committed, and closes them.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let metrics = Arc::clone(self.shared.ingest.metrics());
        while !*shutdown.borrow() {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&self.shared.connections).try_acquire_owned()
                        else {
                            metrics.add_device_connection_refused();
                            if let Some(suppressed) =
                                self.shared.ingest.allow_warning("device_connections_full")
                            {
                                tracing::warn!(
                                    %peer,
                                    suppressed,
                                    "refused a device connection: devices.max_connections are open"
                                );
                            }
                            let _ = stream.try_write(&CONNACK_UNAVAILABLE);
                            continue;
                        };
                        tasks.spawn(session::serve(
                            stream,
                            peer,
                            Arc::clone(&self.shared),
                            permit,
                            shutdown.clone(),
                        ));
                    }
                    Err(error) => {
                        if let Some(suppressed) = self.shared.ingest.allow_warning("device_accept") {
                            tracing::warn!(%error, suppressed, "failed to accept a device connection");
                        }
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(self.listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = tasks.len(),
                "device connections still waiting for the journal at shutdown: closing them; their devices resend what was not acknowledged"
            );
            tasks.shutdown().await;
        }
    }
}

impl Shared {
    /// The endpoint's TLS, when configured.
    pub(super) fn tls(&self) -> Option<&DeviceTls> {
        self.tls.as_deref()
    }

    /// Counts and logs (at a limited rate) a connection whose TLS handshake failed.
    pub(super) fn tls_refused(&self, peer: SocketAddr, reason: &str) {
        self.ingest.metrics().add_device_tls_refused();
        if let Some(suppressed) = self.ingest.allow_warning("device_tls") {
            tracing::warn!(%peer, suppressed, "refused a device connection: TLS: {reason}");
        }
    }

    /// Whether a login may connect, and what it may then do. A verified client certificate
    /// (`certificate`: the name it stands for) is a login by itself: the devices of the user of
    /// that name, or the device of that name; a username given beside it must be that name.
    /// Otherwise: any device when no logins are configured; else the devices of the login, when
    /// the user is known and the password matches.
    pub(super) fn check_login(
        &self,
        login: Option<&Login>,
        certificate: Option<&str>,
    ) -> Result<Grant, ConnectReturnCode> {
        if let Some(name) = certificate {
            if login.is_some_and(|login| login.username != name) {
                return Err(ConnectReturnCode::NotAuthorized);
            }
            return Ok(match self.logins.get(name) {
                Some(account) => account.grant.clone(),
                None => Grant::Login {
                    name: name.into(),
                    devices: DevicePattern::new(name).into_iter().collect(),
                },
            });
        }
        if self.logins.is_empty() {
            if self
                .tls
                .as_ref()
                .is_some_and(|tls| tls.client_certificates())
            {
                // Certificates are the only logins (the handshake asks for one): not reached.
                return Err(ConnectReturnCode::NotAuthorized);
            }
            return Ok(Grant::AnyDevice);
        }
        let Some(login) = login else {
            return Err(ConnectReturnCode::NotAuthorized);
        };
        match self.logins.get(&login.username) {
            Some(account)
                if constant_time_eq(account.password.as_bytes(), login.password.as_bytes()) =>
            {
                Ok(account.grant.clone())
            }
            _ => Err(ConnectReturnCode::BadUserNamePassword),
        }
    }

    /// A number unique to this connection, for anonymous client ids.
    pub(super) fn next_number(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Claims `client_id` for connection `number` of `login`. An older connection of the same
    /// login with the same id is told to close (MQTT 3.1.1, 3.1.4-2); one of another login keeps
    /// it, and this claim is refused: a login cannot push another's device off the gateway.
    pub(super) fn register(
        &self,
        client_id: &str,
        number: u64,
        login: Option<&str>,
    ) -> Result<Registration, ClientIdTaken> {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = sessions.get(client_id)
            && held.login.as_deref() != login
        {
            return Err(ClientIdTaken);
        }
        let taken_over = Arc::new(Notify::new());
        let previous = sessions.insert(
            client_id.to_owned(),
            Session {
                number,
                login: login.map(Arc::from),
                taken_over: Arc::clone(&taken_over),
            },
        );
        drop(sessions);
        if let Some(previous) = previous {
            previous.taken_over.notify_one();
        }
        Ok(Registration { number, taken_over })
    }

    /// Gives up `client_id` unless a newer connection has claimed it.
    pub(super) fn unregister(&self, client_id: &str, number: u64) {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sessions
            .get(client_id)
            .is_some_and(|held| held.number == number)
        {
            sessions.remove(client_id);
        }
    }
}

/// Compares secrets in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(constant_time_eq(b"", b""));
    }
}
