//! The read path of a sink: a connection of its own on a thread of its own, so that sinks read
//! rows while the writer commits (WAL readers never block the writer, nor the writer them).

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::error::JournalError;
use super::read::read_lane;
use super::record::{Lane, StoredEvent};

struct ReadRequest {
    lane: Lane,
    after: i64,
    limit: usize,
    reply: oneshot::Sender<Result<Vec<StoredEvent>, JournalError>>,
}

/// Reads journaled events in id order for a sink.
#[derive(Debug, Clone)]
pub struct JournalReader {
    requests: std_mpsc::Sender<ReadRequest>,
}

impl std::fmt::Debug for ReadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRequest")
            .field("after", &self.after)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Opens a read connection to the journal at `path` (which the writer has created).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let fail = |source| JournalError::Sqlite {
            action: "open for reading",
            path: path.to_path_buf(),
            source,
        };
        let conn = open(path).map_err(fail)?;
        let (requests, incoming) = std_mpsc::channel::<ReadRequest>();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("journal-reader".into())
            .spawn(move || serve(conn, path, incoming))
            .map_err(|source| JournalError::DataDir {
                path: PathBuf::from("journal-reader thread"),
                source,
            })?;
        Ok(Self { requests })
    }

    /// Up to `limit` rows of `lane` with ids greater than `after`, in id order.
    pub async fn read(
        &self,
        lane: Lane,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let (reply, response) = oneshot::channel();
        self.requests
            .send(ReadRequest {
                lane,
                after,
                limit,
                reply,
            })
            .map_err(|_| JournalError::WriterStopped)?;
        response.await.map_err(|_| JournalError::WriterStopped)?
    }
}

fn serve(mut conn: Connection, path: PathBuf, incoming: std_mpsc::Receiver<ReadRequest>) {
    let mut file = file_id(&path);
    while let Ok(request) = incoming.recv() {
        // The writer moves an unreadable journal aside and starts a fresh one under the same
        // name: an open connection would go on reading the old file. Follow the name.
        let now = file_id(&path);
        if now.is_some() && now != file {
            match open(&path) {
                Ok(reopened) => {
                    conn = reopened;
                    file = now;
                }
                Err(error) => {
                    tracing::warn!(%error, "failed to reopen the replaced journal for reading")
                }
            }
        }
        let read = read_lane(&conn, request.lane, request.after, request.limit);
        let result = read.map_err(|source| JournalError::Sqlite {
            action: "read from",
            path: path.clone(),
            source,
        });
        // The sink may have gone away meanwhile: nothing to do then.
        let _ = request.reply.send(result);
    }
}

/// The file behind `path` (device and inode), to notice when it is replaced.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -1000;")?;
    Ok(conn)
}
