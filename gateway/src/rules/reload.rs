//! Hot reload: SIGHUP or `POST /reload` re-reads the device endpoint's TLS certificate and key
//! (certificates are rotated without a restart; connections open stay open) and the rules from
//! the configuration file. Valid rules replace the running ones (alert state of unchanged rules
//! carries over); an invalid file, or TLS files that cannot be used, are rejected with their
//! problems logged, and what runs stays.

use std::path::PathBuf;
use std::sync::Arc;

use super::service::RulesHandle;
use crate::config;
use crate::sources::mqtt::DeviceTls;

/// Re-reads the device TLS files and the rules from the configuration file.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    rules: RulesHandle,
    device_tls: Option<Arc<DeviceTls>>,
}

impl Reloader {
    /// Reloads from `path` into the engine behind `rules`.
    pub fn new(path: PathBuf, rules: RulesHandle) -> Self {
        Self {
            path,
            rules,
            device_tls: None,
        }
    }

    /// Re-reads the files of the device endpoint's TLS too.
    pub fn with_device_tls(mut self, device_tls: Option<Arc<DeviceTls>>) -> Self {
        self.device_tls = device_tls;
        self
    }

    /// Reloads now: a summary, or every problem (`file:line:col: message` lines for the
    /// configuration). The TLS files are those the gateway started with; only the rules are
    /// taken from the configuration file, other changes need a restart.
    pub async fn reload(&self) -> Result<String, String> {
        let tls = match &self.device_tls {
            None => None,
            Some(tls) => match tls.reload() {
                Ok(()) => {
                    tracing::info!("device TLS certificate and key re-read");
                    Some(Ok("device TLS certificate and key re-read".to_owned()))
                }
                Err(error) => {
                    tracing::error!(
                        "device TLS files not reloaded: {error}; the running certificate stays"
                    );
                    Some(Err(error.to_string()))
                }
            },
        };
        let rules = self.reload_rules().await;
        match (tls, rules) {
            (None, rules) => rules,
            (Some(Ok(tls)), Ok(rules)) => Ok(format!("{tls}; {rules}")),
            (Some(Err(tls)), Ok(_)) => Err(tls),
            (Some(Ok(_)), Err(rules)) => Err(rules),
            (Some(Err(tls)), Err(rules)) => Err(format!("{tls}\n{rules}")),
        }
    }

    async fn reload_rules(&self) -> Result<String, String> {
        let config = match config::load(&self.path) {
            Ok(config) => config,
            Err(error) => {
                let problems = error.to_string();
                tracing::error!(
                    config = %self.path.display(),
                    "rules not reloaded: the configuration has problems; the running rules stay\n{problems}"
                );
                return Err(problems);
            }
        };
        let count = config.rules.len();
        match self.rules.reload(config.rules).await {
            Some(resolved) => {
                let summary = format!(
                    "reloaded {count} rules from {}; {resolved} alerts of removed or changed rules resolved",
                    self.path.display()
                );
                tracing::info!("{summary}");
                Ok(summary)
            }
            None => Err("the rule engine has stopped".to_owned()),
        }
    }
}
