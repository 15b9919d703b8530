//! The journal's budget and the removal of rows it forces: how `max_size` is split between the
//! WAL, dead letters and rows, and how the oldest rows give way (under `when_full =
//! "drop_oldest"`) or expire (past `max_age`).

use rusqlite::params;

use super::record::{DeadLetter, row_cost};

/// What the schema's fixed pages take, set aside before rows get their share of `max_size`.
const SCHEMA_PAGES_BYTES: u64 = 8 * 4096;
/// WAL bytes one appended row costs, generously (see [`Budget::rows_per_transaction`]).
const WAL_BYTES_PER_ROW: u64 = 1024;
/// Rows removed per eviction step, at least: evicting one row per append would cost a query per
/// event when the journal sits full.
pub(crate) const EVICTION_CHUNK_DIVISOR: u64 = 64;

/// Space the journal's files may use, split by purpose. All of it adds up to `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Bytes of WAL before a checkpoint and truncation.
    pub(crate) wal: u64,
    /// Bytes kept for dead letters.
    pub(crate) dead_letters: u64,
    /// Accounted bytes of event rows (see [`super::Record::cost`]).
    pub(crate) rows: u64,
}

impl Budget {
    pub(crate) fn for_max_size(max_size: u64) -> Self {
        let wal = (max_size / 8)
            .clamp(32 * 1024, 16 * 1024 * 1024)
            .min(max_size / 4);
        let dead_letters = (max_size / 16).min(2 * 1024 * 1024);
        // The schema's fixed pages (header, the small tables and their indexes; a few pages of
        // 4 KiB), then B-tree pages are not filled to the last byte and interior pages cost a
        // little too: leave 15 % of the rest to SQLite.
        let rows = max_size.saturating_sub(wal + dead_letters + SCHEMA_PAGES_BYTES) * 85 / 100;
        Self {
            wal,
            dead_letters,
            rows,
        }
    }

    /// Most rows one transaction may append. Every page a transaction touches is written to the
    /// WAL before a checkpoint can copy it back: half the WAL budget is the autocheckpoint
    /// threshold, the other half is for the transaction that crosses it. A row costs about
    /// [`WAL_BYTES_PER_ROW`] of WAL (its bytes, b-tree page overhead, the eviction it causes).
    pub(crate) fn rows_per_transaction(self) -> usize {
        usize::try_from(self.wal / 2 / WAL_BYTES_PER_ROW).unwrap_or(usize::MAX)
    }

    pub(crate) fn dead_letter_rows(self) -> u64 {
        (self.dead_letters / (DeadLetter::MAX_PAYLOAD as u64 + 512)).clamp(8, 1000)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Evict {
    /// Remove head rows until this many accounted bytes are gone.
    Bytes(u64),
    /// Remove head rows that arrived before this time (ms since the epoch).
    OlderThan(i64),
}

/// Rows removed from the head of the events lane.
#[derive(Debug, Default)]
pub(crate) struct Evicted {
    /// Each removed row's id and device, in id order (to count the loss per destination).
    pub(crate) rows: Vec<(i64, String)>,
    /// Accounted bytes freed.
    pub(crate) freed: u64,
}

/// Removes rows from the head of the events lane (lowest ids first). Alerts are never evicted or
/// expired here.
pub(crate) fn evict_head(
    tx: &rusqlite::Transaction<'_>,
    evict: Evict,
) -> Result<Evicted, rusqlite::Error> {
    const STEP: i64 = 512;
    let mut evicted = Evicted::default();
    let mut select = tx.prepare_cached(
        "SELECT id, received_at, device, length(device), length(payload) FROM events
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut after = 0;
    'scan: loop {
        let head = select
            .query_map(params![after, STEP], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let exhausted = head.len() < STEP as usize;
        for (id, received_at, device, device_len, payload_len) in head {
            let take = match evict {
                Evict::Bytes(need) => evicted.freed < need,
                Evict::OlderThan(cutoff) => received_at < cutoff,
            };
            if !take {
                break 'scan;
            }
            evicted.freed += row_cost(device_len, payload_len);
            evicted.rows.push((id, device));
            after = id;
        }
        if exhausted {
            break;
        }
    }
    if let Some((last, _)) = evicted.rows.last() {
        tx.prepare_cached("DELETE FROM events WHERE id <= ?1")?
            .execute([last])?;
    }
    Ok(evicted)
}
