//! The dashboard's sessions and the throttle on failed logins (sans-IO: every call is given
//! the time).
//!
//! Logging in with the token mints a session: 32 random bytes (hex in the cookie), the name the
//! user gave, and an expiry. The cookie holds the session's id, never the token; logging out
//! revokes the session on the server, so a copied cookie stops working too. Sessions live in
//! this instance's memory: a restart logs everyone out, and instances behind one address need
//! sticky sessions. At most [`MAX_SESSIONS`] live at once; minting one more ends the one
//! closest to expiry.
//!
//! Failed logins are counted per client address: after [`FAILURES_ALLOWED`] within
//! [`FAILURE_WINDOW`], that address's logins are refused (429, right token or not) until the
//! window has passed. At most [`MAX_ADDRESSES`] addresses are tracked; beyond that the
//! addresses not yet tracked share one count, so a flood of addresses throttles itself, not
//! the memory.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Sessions alive at once, at most.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed logins allowed per address within [`FAILURE_WINDOW`].
pub const FAILURES_ALLOWED: u32 = 5;
/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are tracked, at most.
pub const MAX_ADDRESSES: usize = 4096;

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The name the user logged in as.
    pub name: String,
    /// When it ends.
    pub expires: Instant,
}

/// The sessions alive now.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Mints a session for `name` at `now`; returns its id.
    pub fn mint(&self, name: &str, now: Instant) -> String {
        let id: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        live.retain(|_, session| session.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(soonest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            live.remove(&soonest);
        }
        live.insert(
            id.clone(),
            Session {
                name: name.to_owned(),
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// The session `id` names, if it is alive at `now`.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        live.get(id)
            .filter(|session| session.expires > now)
            .cloned()
    }

    /// Ends the session `id` (log out).
    pub fn revoke(&self, id: &str) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        live.remove(id);
    }

    /// Sessions held now (expired ones included until the next mint).
    pub fn len(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Failed logins per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Where the addresses beyond [`MAX_ADDRESSES`] are counted together.
const OVERFLOW: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Throttle {
    /// How long `address` must wait before it may try to log in at `now` (`None`: it may).
    pub fn wait(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // An address not tracked while the table is full is counted with the overflow.
        let key = if failures.contains_key(&address) || failures.len() < MAX_ADDRESSES {
            address
        } else {
            OVERFLOW
        };
        let (count, since) = failures.get(&key)?;
        let ends = *since + FAILURE_WINDOW;
        (*count >= FAILURES_ALLOWED && ends > now).then(|| ends - now)
    }

    /// Counts a failed login from `address` at `now`.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !failures.contains_key(&address) && failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (_, since)| *since + FAILURE_WINDOW > now);
        }
        let key = if failures.contains_key(&address) || failures.len() < MAX_ADDRESSES {
            address
        } else {
            OVERFLOW
        };
        let entry = failures.entry(key).or_insert((0, now));
        if entry.1 + FAILURE_WINDOW <= now {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// A successful login from `address` clears its count.
    pub fn succeeded(&self, address: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&address);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_is_revoked() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.mint("ana", now);
        assert_eq!(id.len(), 64);
        assert_ne!(id, sessions.mint("ana", now), "each login mints a new id");
        assert_eq!(sessions.get(&id, now).unwrap().name, "ana");
        assert!(sessions.get(&id, now + SESSION_LIFETIME).is_none());
        sessions.revoke(&id);
        assert!(sessions.get(&id, now).is_none());
        assert!(sessions.get("guess", now).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.mint("first", start);
        for n in 1..=MAX_SESSIONS {
            sessions.mint("more", start + Duration::from_millis(n as u64));
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.get(&first, start).is_none(),
            "the one closest to expiry went"
        );
    }

    #[test]
    fn failed_logins_are_throttled_per_address_for_a_window() {
        let throttle = Throttle::default();
        let now = Instant::now();
        let (one, two): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(throttle.wait(one, now), None);
            throttle.failed(one, now);
        }
        let wait = throttle.wait(one, now).unwrap();
        assert_eq!(wait, FAILURE_WINDOW);
        assert_eq!(
            throttle.wait(two, now),
            None,
            "another address is not held up"
        );
        assert_eq!(throttle.wait(one, now + FAILURE_WINDOW), None);
        throttle.succeeded(one);
        assert_eq!(throttle.wait(one, now), None);
    }

    #[test]
    fn a_flood_of_addresses_shares_one_count() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..MAX_ADDRESSES as u32 {
            throttle.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        let newcomer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FAILURES_ALLOWED {
            throttle.failed(newcomer, now);
        }
        assert!(throttle.wait(newcomer, now).is_some());
        assert!(throttle.failures.lock().unwrap().len() <= MAX_ADDRESSES + 1);
    }
}
