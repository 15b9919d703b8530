//! What a failed load reports: every problem found, each at `file:line:column`.

use std::fmt;

/// Why a configuration file was rejected: every problem found in it, in file order.
///
/// `Display` prints one line per problem, `FILE:LINE:COLUMN: message`, the format editors and
/// `check-config` users expect; a problem about the whole file (it could not be read) prints as
/// `FILE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given to [`parse`](super::parse) or [`load`](super::load).
    pub file: String,
    /// Never empty.
    pub problems: Vec<Problem>,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column, counted in characters; 0 when the problem concerns the whole file.
    pub column: usize,
    /// Lowercase, names the key, no trailing period.
    pub message: String,
}

/// A problem found while checking a document, located by byte offset until the source text
/// turns it into a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Issue {
    /// Byte offset into the source.
    pub(super) at: usize,
    pub(super) message: String,
}

impl Issue {
    pub(super) fn new(at: usize, message: impl Into<String>) -> Self {
        Self {
            at,
            message: message.into(),
        }
    }
}

/// Why a duration or size string was rejected; shown after `invalid duration \`...\` for \`key\`: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum UnitError {
    /// Not `<integer><unit>` repeated, or a unit not in the list.
    #[error("expected a number followed by {units}")]
    Syntax {
        /// The accepted units, as a phrase.
        units: &'static str,
    },
    /// Units of a duration must go from largest to smallest, each at most once.
    #[error("units must go from largest to smallest, each at most once")]
    Order,
    /// The value does not fit in 64 bits.
    #[error("value is too large")]
    Overflow,
}

impl ConfigError {
    /// Locates each issue in `source` and sorts them in file order.
    pub(super) fn from_issues(file: &str, source: &str, mut issues: Vec<Issue>) -> Self {
        issues.sort_by_key(|issue| issue.at);
        let problems = issues
            .into_iter()
            .map(|issue| Problem::at(source, issue.at, issue.message))
            .collect();
        Self {
            file: file.to_owned(),
            problems,
        }
    }

    /// One problem about the whole file.
    pub(super) fn whole_file(file: &str, message: String) -> Self {
        Self {
            file: file.to_owned(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message,
            }],
        }
    }
}

impl Problem {
    /// The problem at byte `offset` of `source`; an offset past the end points just after the
    /// last character, and one inside a character points at that character.
    pub(super) fn at(source: &str, offset: usize, message: String) -> Self {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            if problem.line == 0 {
                write!(f, "{}: {}", self.file, problem.message)?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.file, problem.line, problem.column, problem.message
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
