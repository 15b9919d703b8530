//! Finds keys in the parsed document: the place of a key serde ignored, and the key under the
//! place serde complained about. Both come from the spans of a `DeTable`, the parse that keeps
//! where every key and value was written.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A key path as users write it: `journal.max_age`, `serial[0].baud`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The path serde_ignored reports, without the steps serde adds for `Option` and `Spanned`.
    pub(super) fn from_ignored(path: &serde_ignored::Path<'_>) -> Self {
        let mut segments = Vec::new();
        let mut step = path;
        loop {
            step = match step {
                serde_ignored::Path::Root => break,
                serde_ignored::Path::Seq { parent, index } => {
                    segments.push(Segment::Index(*index));
                    parent
                }
                serde_ignored::Path::Map { parent, key } => {
                    // `toml::Spanned` deserializes as a struct with private field names.
                    if !key.starts_with("$__serde_spanned_private") {
                        segments.push(Segment::Key(key.clone()));
                    }
                    parent
                }
                serde_ignored::Path::Some { parent }
                | serde_ignored::Path::NewtypeStruct { parent }
                | serde_ignored::Path::NewtypeVariant { parent } => parent,
            };
        }
        segments.reverse();
        Self(segments)
    }

    /// Where the last key of the path is written in `document`, or its nearest ancestor that
    /// is there.
    pub(super) fn offset_in(&self, document: &DeTable<'_>) -> Option<usize> {
        offset_in_table(document, &self.0)
    }

    /// The deepest key whose key or value covers byte `offset` of the document.
    pub(super) fn at_offset(document: &DeTable<'_>, offset: usize) -> Self {
        let mut segments = Vec::new();
        find_in_table(document, offset, &mut segments);
        Self(segments)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn offset_in_table(table: &DeTable<'_>, segments: &[Segment]) -> Option<usize> {
    let (Segment::Key(key), rest) = segments.split_first()? else {
        return None;
    };
    let (found_key, value) = table.iter().find(|(k, _)| k.get_ref() == key)?;
    let here = found_key.span().start;
    if rest.is_empty() {
        return Some(here);
    }
    offset_in_value(value.get_ref(), rest).or(Some(here))
}

fn offset_in_value(value: &DeValue<'_>, segments: &[Segment]) -> Option<usize> {
    match (value, segments.first()?) {
        (DeValue::Table(table), Segment::Key(_)) => offset_in_table(table, segments),
        (DeValue::Array(array), Segment::Index(index)) => {
            let item = array.get(*index)?;
            let here = item.span().start;
            match &segments[1..] {
                [] => Some(here),
                rest => offset_in_value(item.get_ref(), rest).or(Some(here)),
            }
        }
        _ => None,
    }
}

/// Pushes the path to the deepest node covering `offset` onto `segments`; false if none does.
fn find_in_table(table: &DeTable<'_>, offset: usize, segments: &mut Vec<Segment>) -> bool {
    for (key, value) in table.iter() {
        segments.push(Segment::Key(key.get_ref().to_string()));
        if find_in_value(value.get_ref(), offset, segments)
            || key.span().contains(&offset)
            || value.span().contains(&offset)
        {
            return true;
        }
        segments.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, segments: &mut Vec<Segment>) -> bool {
    match value {
        DeValue::Table(table) => find_in_table(table, offset, segments),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                segments.push(Segment::Index(index));
                if find_in_value(item.get_ref(), offset, segments) || item.span().contains(&offset)
                {
                    return true;
                }
                segments.pop();
            }
            false
        }
        _ => false,
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}
