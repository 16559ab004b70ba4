//! Raft storage on redb: one file per node holding the log, the vote, the committed log
//! id and the latest state-machine snapshot (design.md: redb, not sled).
//!
//! The state machine itself lives in memory ([`Machine`]); on start it is restored from the
//! persisted snapshot, and openraft re-applies the committed log after it. Every write
//! that openraft must be able to rely on (vote, appended entries) is committed, i.e.
//! fsynced, before it is acknowledged.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;

use crate::model::machine::{Machine, Request, Response};

openraft::declare_raft_types!(
    /// The cluster's Raft types: our requests and responses, u64 node ids.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Node id.
pub type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

/// postcard fails only on sequences of unknown length or a failing custom `Serialize`;
/// if a future type brought one, the write fails loudly instead of storing nothing.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, AnyError> {
    postcard::to_allocvec(value).map_err(any)
}

/// Stores a snapshot's metadata and data in one transaction.
fn write_snapshot(
    db: &Database,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<(), AnyError> {
    write_meta(
        db,
        &[
            (SNAPSHOT_META, Some(encode(meta)?)),
            (SNAPSHOT_DATA, Some(encode(data)?)),
        ],
    )
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(bytes).map_err(|e| AnyError::new(&e))
}

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// A storage file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct OpenError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// A snapshot as stored: its metadata and the encoded state machine.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// Opens (or creates) a node's storage file and restores the state machine from it.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let fail = |reason: String| OpenError {
        path: path.to_path_buf(),
        reason,
    };
    let db = Database::create(path).map_err(|e| fail(e.to_string()))?;
    // The file holds the cluster's DNSSEC private keys: the node's user only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(format!("cannot make it private (mode 0600): {e}")))?;
    }
    let tx = db.begin_write().map_err(|e| fail(e.to_string()))?;
    tx.open_table(LOGS).map_err(|e| fail(e.to_string()))?;
    tx.open_table(META).map_err(|e| fail(e.to_string()))?;
    tx.commit().map_err(|e| fail(e.to_string()))?;
    let db = Arc::new(db);
    let logs = LogStore {
        db: Arc::clone(&db),
    };
    let machine = StateMachineStore::restore(db)
        .map_err(|e| fail(format!("cannot restore the state machine: {e}")))?;
    Ok((logs, machine))
}

fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, AnyError> {
    let meta: Option<SnapshotMeta<NodeId, BasicNode>> = read_meta(db, SNAPSHOT_META)?;
    let data: Option<Vec<u8>> = read_meta(db, SNAPSHOT_DATA)?;
    Ok(meta.zip(data))
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
    let tx = db.begin_read().map_err(any)?;
    let table = tx.open_table(META).map_err(any)?;
    match table.get(key).map_err(any)? {
        Some(value) => decode(value.value()).map(Some),
        None => Ok(None),
    }
}

fn write_meta(db: &Database, entries: &[(&str, Option<Vec<u8>>)]) -> Result<(), AnyError> {
    let tx = db.begin_write().map_err(any)?;
    {
        let mut table = tx.open_table(META).map_err(any)?;
        for (key, value) in entries {
            match value {
                Some(bytes) => {
                    table.insert(*key, bytes.as_slice()).map_err(any)?;
                }
                None => {
                    table.remove(*key).map_err(any)?;
                }
            }
        }
    }
    tx.commit().map_err(any)
}

/// The Raft log, vote and committed id.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let read = || -> Result<Vec<Entry<TypeConfig>>, AnyError> {
            let tx = self.db.begin_read().map_err(any)?;
            let table = tx.open_table(LOGS).map_err(any)?;
            let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
            let mut entries = Vec::new();
            for item in table.range::<u64>((start, end)).map_err(any)? {
                let (_, value) = item.map_err(any)?;
                entries.push(decode(value.value())?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let read = || -> Result<LogState<TypeConfig>, AnyError> {
            let last_purged: Option<LogId<NodeId>> = read_meta(&self.db, LAST_PURGED)?;
            let tx = self.db.begin_read().map_err(any)?;
            let table = tx.open_table(LOGS).map_err(any)?;
            let last = match table.last().map_err(any)? {
                Some((_, value)) => Some(decode::<Entry<TypeConfig>>(value.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        encode(vote)
            .and_then(|vote| write_meta(&self.db, &[(VOTE, Some(vote))]))
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        read_meta(&self.db, VOTE).map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        committed
            .map(|c| encode(&c))
            .transpose()
            .and_then(|committed| write_meta(&self.db, &[(COMMITTED, committed)]))
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        read_meta(&self.db, COMMITTED).map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self.write_entries(entries);
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result.map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.delete_range((Bound::Included(log_id.index), Bound::Unbounded), None)
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.delete_range(
            (Bound::Unbounded, Bound::Included(log_id.index)),
            Some(log_id),
        )
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

impl LogStore {
    /// Writes entries in one transaction. redb's commit is durable (fsync) by default:
    /// once this returns, the entries are on disk and may be acknowledged.
    pub fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), AnyError> {
        let tx = self.db.begin_write().map_err(any)?;
        {
            let mut table = tx.open_table(LOGS).map_err(any)?;
            for entry in entries {
                table
                    .insert(entry.log_id.index, encode(&entry)?.as_slice())
                    .map_err(any)?;
            }
        }
        tx.commit().map_err(any)
    }

    /// Deletes entries in `range`; with `purged`, records it as the last purged id in the
    /// same transaction (so a crash never leaves the two disagreeing).
    fn delete_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        purged: Option<LogId<NodeId>>,
    ) -> Result<(), AnyError> {
        let tx = self.db.begin_write().map_err(any)?;
        {
            let mut table = tx.open_table(LOGS).map_err(any)?;
            table
                .retain_in::<u64, _>(range, |_, _| false)
                .map_err(any)?;
            if let Some(purged) = purged {
                let mut meta = tx.open_table(META).map_err(any)?;
                meta.insert(LAST_PURGED, encode(&purged)?.as_slice())
                    .map_err(any)?;
            }
        }
        tx.commit().map_err(any)
    }
}

/// What the state machine holds besides the application state.
#[derive(Debug, Default)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    machine: Machine,
    snapshots_built: u64,
}

/// The state machine, in memory, with its latest snapshot on disk.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    applied: Arc<Mutex<Applied>>,
    published: Arc<tokio::sync::watch::Sender<Arc<Machine>>>,
}

impl StateMachineStore {
    fn restore(db: Arc<Database>) -> Result<StateMachineStore, AnyError> {
        let mut applied = Applied::default();
        if let Some((meta, data)) = read_snapshot(&db)? {
            applied.machine = Machine::restore(&data).map_err(any)?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership;
        }
        let (published, _) = tokio::sync::watch::channel(Arc::new(applied.machine.clone()));
        Ok(StateMachineStore {
            db,
            applied: Arc::new(Mutex::new(applied)),
            published: Arc::new(published),
        })
    }

    /// The application state after every applied batch and installed snapshot: what DNS,
    /// the API and the state owner read (never waiting for Raft).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Machine>> {
        self.published.subscribe()
    }

    /// A copy of the current application state (for the API and DNS).
    pub async fn machine(&self) -> Machine {
        self.applied.lock().await.machine.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let mut applied = self.applied.lock().await;
            applied.snapshots_built += 1;
            let id = match applied.last_applied {
                Some(last) => format!(
                    "{}-{}-{}",
                    last.leader_id, last.index, applied.snapshots_built
                ),
                None => format!("--{}", applied.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: id,
            };
            (meta, applied.machine.snapshot())
        };
        write_snapshot(&self.db, &meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self.applied.lock().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.lock().await;
        let mut responses = Vec::new();
        let mut changed = false;
        for entry in entries {
            changed |= matches!(entry.payload, EntryPayload::Normal(_));
            applied.last_applied = Some(entry.log_id);
            responses.push(match entry.payload {
                EntryPayload::Blank => Response::Applied,
                EntryPayload::Normal(request) => applied.machine.apply(&request),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::Applied
                }
            });
        }
        if changed {
            self.published
                .send_replace(Arc::new(applied.machine.clone()));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let machine = Machine::restore(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        write_snapshot(&self.db, meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        let mut applied = self.applied.lock().await;
        applied.machine = machine;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        self.published
            .send_replace(Arc::new(applied.machine.clone()));
        tracing::info!(snapshot = %meta.snapshot_id, last_log = ?meta.last_log_id.map(|l| l.index), "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current =
            read_snapshot(&self.db).map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

// openraft's test suite returns its own (large) StorageError; these tests pass it on.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct RedbBuilder;

    /// Removes the test's database file when the suite is done with it.
    struct Cleanup(std::path::PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Cleanup> for RedbBuilder {
        async fn build(&self) -> StorageResult<(Cleanup, LogStore, StateMachineStore)> {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("opengslb-raft-suite-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| StorageIOError::write(any(e)))?;
            let (logs, machine) =
                open(&dir.join("raft.redb")).map_err(|e| StorageIOError::write(any(e)))?;
            Ok((Cleanup(dir), logs, machine))
        }
    }

    /// openraft's own storage test suite, against the redb store.
    #[test]
    fn passes_openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(RedbBuilder)
    }

    /// Everything acknowledged survives a reopen of the file: vote, log, committed id,
    /// snapshot, and the state machine rebuilt from that snapshot.
    #[tokio::test]
    async fn reopening_the_file_keeps_everything() -> StorageResult<()> {
        let dir = std::env::temp_dir().join(format!("opengslb-raft-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| StorageIOError::write(any(e)))?;
        let path = dir.join("raft.redb");
        let vote = Vote::new_committed(3, 1);
        let log_id = |i| LogId::new(openraft::CommittedLeaderId::new(3, 1), i);
        {
            let (mut logs, mut sm) = open(&path).map_err(|e| StorageIOError::write(any(e)))?;
            logs.save_vote(&vote).await?;
            let request = Request::V1(crate::model::machine::RequestV1::RevokeAgent {
                agent_id: "eu-x".into(),
            });
            let entries = vec![
                Entry {
                    log_id: log_id(1),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(2),
                    payload: EntryPayload::Normal(request),
                },
            ];
            logs.write_entries(entries.clone())
                .map_err(StorageIOError::write_logs)?;
            logs.save_committed(Some(log_id(2))).await?;
            sm.apply(entries).await?;
            sm.build_snapshot().await?;
        }
        let (mut logs, mut sm) = open(&path).map_err(|e| StorageIOError::write(any(e)))?;
        assert_eq!(logs.read_vote().await?, Some(vote));
        assert_eq!(logs.read_committed().await?, Some(log_id(2)));
        assert_eq!(logs.get_log_state().await?.last_log_id, Some(log_id(2)));
        assert_eq!(logs.try_get_log_entries(1..3).await?.len(), 2);
        assert_eq!(
            sm.applied_state().await?.0,
            Some(log_id(2)),
            "restored from the snapshot"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
