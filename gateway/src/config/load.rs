//! Reading a configuration file: TOML syntax, then the shape serde expects, then [`validate`];
//! unknown keys are collected on the way and every problem is located at `line:column`.

use std::path::Path;

use toml::de::{DeTable, Deserializer};

use super::error::{ConfigError, Issue};
use super::locate::KeyPath;
use super::model::Config;
use super::raw::RawConfig;
use super::validate::validate;

/// Reads and checks the configuration file at `path`.
///
/// A file that cannot be read gives a single problem about the whole file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::whole_file(&file, format!("failed to read config file: {error}"))
    })?;
    parse(&source, &file)
}

/// Checks the configuration in `source`; `file_name` only labels the problems.
///
/// Reports every unknown key and every invalid value at once. A TOML syntax error or a value of
/// the wrong TOML type stops the reading there, so only the first of those is reported (with any
/// unknown keys seen before it).
pub fn parse(source: &str, file_name: &str) -> Result<Config, ConfigError> {
    let fail = |issues| ConfigError::from_issues(file_name, source, issues);
    let document = DeTable::parse(source).map_err(|error| fail(vec![syntax_issue(&error)]))?;

    let mut unknown = Vec::new();
    let raw: Result<RawConfig, _> = serde_ignored::deserialize(
        Deserializer::from(document.clone()),
        |path: serde_ignored::Path<'_>| unknown.push(KeyPath::from_ignored(&path)),
    );
    let mut issues: Vec<Issue> = unknown
        .iter()
        .map(|path| {
            let at = path.offset_in(document.get_ref()).unwrap_or(0);
            Issue::new(at, format!("unknown key `{path}`"))
        })
        .collect();
    let raw = match raw {
        Ok(raw) => raw,
        Err(error) => {
            issues.push(type_issue(&error, document.get_ref()));
            return Err(fail(issues));
        }
    };
    match validate(&raw) {
        Ok((mut config, warnings)) if issues.is_empty() => {
            config.warnings = ConfigError::from_issues(file_name, source, warnings)
                .problems
                .into_iter()
                .map(|problem| {
                    format!(
                        "{file_name}:{}:{}: warning: {}",
                        problem.line, problem.column, problem.message
                    )
                })
                .collect();
            Ok(config)
        }
        Ok(_) => Err(fail(issues)),
        Err(more) => {
            issues.extend(more);
            Err(fail(issues))
        }
    }
}

/// A TOML syntax error, e.g. a missing `=` or a duplicate key.
fn syntax_issue(error: &toml::de::Error) -> Issue {
    let at = error.span().map_or(0, |span| span.start);
    Issue::new(at, format!("invalid toml: {}", error.message()))
}

/// A value serde could not take, e.g. a string where a number belongs; names the key.
fn type_issue(error: &toml::de::Error, document: &DeTable<'_>) -> Issue {
    let at = error.span().map_or(0, |span| span.start);
    let path = KeyPath::at_offset(document, at);
    let message = error.message();
    let text = match message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        Some((found, expected)) if !path.is_empty() => format!(
            "wrong type for `{path}`: expected {}, found {}",
            plain_words(expected),
            plain_words(found)
        ),
        _ if !path.is_empty() => format!("invalid value for `{path}`: {message}"),
        _ => format!("invalid config: {message}"),
    };
    Issue::new(at, text)
}

/// Serde's names for types, in TOML's words.
fn plain_words(serde_words: &str) -> &str {
    match serde_words {
        "i64" => "an integer",
        "a sequence" => "an array",
        "map" => "a table",
        "sequence" => "an array",
        other => other,
    }
}
