/// What to do when the journal is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Evict the oldest row.
    #[default]
    DropOldest,
    /// Refuse the new row.
    DropNewest,
    /// Hold the source back.
    Block,
}
/// SQLite synchronous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Sync each commit.
    #[default]
    Full,
    /// Sync at checkpoints.
    Normal,
}
