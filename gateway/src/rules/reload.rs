//! Hot reload of the rules: SIGHUP or `POST /reload` re-reads the configuration file. Valid rules
//! replace the running ones (alert state of unchanged rules carries over); an invalid file is
//! rejected with its problems logged, and the running rules stay.

use std::path::PathBuf;

use super::service::RulesHandle;
use crate::config;

/// Re-reads rules from the configuration file.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    rules: RulesHandle,
}

impl Reloader {
    /// Reloads from `path` into the engine behind `rules`.
    pub fn new(path: PathBuf, rules: RulesHandle) -> Self {
        Self { path, rules }
    }

    /// Reloads now: a summary, or every problem of the file (`file:line:col: message` lines).
    /// Only the rules are taken from the file; other changes need a restart.
    pub async fn reload(&self) -> Result<String, String> {
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
