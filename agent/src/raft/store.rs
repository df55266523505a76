//! Durable Raft storage on redb: log entries, hard state, conf state and the latest snapshot.
//!
//! Every mutation is one redb write transaction committed with immediate durability *before*
//! the in-memory copy changes and before any message that depends on it is sent, so a crash at
//! any point loses nothing that was acknowledged. Reads are served from an in-memory copy of the
//! (compacted, hence short) log, which is what raft-rs's synchronous [`Storage`] trait needs.
//!
//! Layout: table `entries` (index -> rust-protobuf `Entry`), table `meta` with keys
//! `hard_state`, `conf_state`, `snapshot` (rust-protobuf encodings).
//!
//! Caveats: the whole uncompacted log is held in memory; compaction (`raft.snapshot_entries`)
//! keeps it short. Membership is fixed at first start from the configuration.

// Reads the clock (adapter: retries opening the store for a bounded time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::path::Path;
use std::sync::Arc;

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{Database, ReadableTable, StorageBackend, TableDefinition};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";

/// A storage failure. The agent treats every one as fatal for the Raft loop: it stops rather
/// than acting on state it could not make durable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("raft store: {0}")]
    Db(Box<redb::Error>),
    /// A stored record could not be decoded.
    #[error("raft store: corrupt {what}: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoder's error.
        source: protobuf::ProtobufError,
    },
    /// Stored membership differs from the configured one.
    #[error(
        "raft store: stored voters {stored:?} differ from configured peers {configured:?}; \
         membership changes are not supported yet: restore the old peers list or start with an \
         empty data_dir"
    )]
    MembershipMismatch {
        /// Voters in the store.
        stored: Vec<u64>,
        /// Voters in the config.
        configured: Vec<u64>,
    },
    /// A caller broke an ordering rule (compacting beyond the log, appending with a gap).
    #[error("raft store: {0}")]
    Order(String),
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(Box::new(e.into())))
    };
}

/// A redb backend kept in memory and shared, so a simulated crash can drop the `Database`
/// and reopen the same bytes: whatever was committed survives, nothing else does.
#[derive(Clone, Debug, Default)]
pub struct SharedMemBackend(Arc<redb::backends::InMemoryBackend>);

impl SharedMemBackend {
    /// A new, empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StorageBackend for SharedMemBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.0.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.0.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

/// Raft storage: redb for durability, memory for reads.
pub struct RaftStore {
    db: Database,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

fn decode<M: PbMessage>(what: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes).map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}

fn encode<M: PbMessage>(what: &str, m: &M) -> Result<Vec<u8>, StoreError> {
    m.write_to_bytes().map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}

impl RaftStore {
    /// Opens (or creates) `raft.redb` in `dir`.
    ///
    /// A database still locked by another process is retried for up to five seconds: after a
    /// crash or `SIGKILL` the previous instance's threads may still be releasing the file
    /// lock when systemd (or an operator) starts the next one. A second agent that keeps
    /// running on the same directory still gets the error.
    pub fn open_dir(dir: &Path, voters: &[u64]) -> Result<Self, StoreError> {
        let path = dir.join("raft.redb");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match Database::create(&path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break db_err!(other)?,
            }
        };
        Self::open(db, voters)
    }

    /// Opens a store on a shared in-memory backend (simulation and tests).
    pub fn open_mem(backend: SharedMemBackend, voters: &[u64]) -> Result<Self, StoreError> {
        let db = db_err!(Database::builder().create_with_backend(backend))?;
        Self::open(db, voters)
    }

    fn open(db: Database, voters: &[u64]) -> Result<Self, StoreError> {
        let mut configured: Vec<u64> = voters.to_vec();
        configured.sort_unstable();
        let txn = db_err!(db.begin_write())?;
        let (hard_state, conf_state, snapshot, entries) = {
            let mut meta = db_err!(txn.open_table(META))?;
            let entries_table = db_err!(txn.open_table(ENTRIES))?;
            let read = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
                Ok(db_err!(meta.get(key))?.map(|v| v.value().to_vec()))
            };
            let hard_state: HardState = match read(HARD_STATE)? {
                Some(b) => decode(HARD_STATE, &b)?,
                None => HardState::default(),
            };
            let snapshot: Snapshot = match read(SNAPSHOT)? {
                Some(b) => decode(SNAPSHOT, &b)?,
                None => Snapshot::default(),
            };
            let stored_conf = read(CONF_STATE)?;
            let conf_state: ConfState = match stored_conf {
                Some(b) => {
                    let cs: ConfState = decode(CONF_STATE, &b)?;
                    let mut stored = cs.get_voters().to_vec();
                    stored.sort_unstable();
                    if stored != configured {
                        return Err(StoreError::MembershipMismatch { stored, configured });
                    }
                    cs
                }
                None => {
                    let mut cs = ConfState::default();
                    cs.set_voters(configured.clone());
                    meta.insert(CONF_STATE, encode(CONF_STATE, &cs)?.as_slice())
                        .map_err(|e| StoreError::Db(Box::new(e.into())))?;
                    cs
                }
            };
            let mut entries = Vec::new();
            for row in db_err!(entries_table.range(snapshot.get_metadata().index + 1..))? {
                let (k, v) = db_err!(row)?;
                let e: Entry = decode(&format!("entry {}", k.value()), v.value())?;
                entries.push(e);
            }
            (hard_state, conf_state, snapshot, entries)
        };
        db_err!(txn.commit())?;
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(StoreError::Order(format!(
                    "stored log has a gap between {} and {}",
                    pair[0].index, pair[1].index
                )));
            }
        }
        Ok(RaftStore {
            db,
            hard_state,
            conf_state,
            snapshot,
            entries,
        })
    }

    /// The latest snapshot (empty when none was taken or received).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    fn first(&self) -> u64 {
        self.entries
            .first()
            .map_or(self.snapshot.get_metadata().index + 1, |e| e.index)
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    fn term_of(&self, idx: u64) -> Option<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Some(meta.term);
        }
        let first = self.first();
        if idx < first || idx > self.last() {
            return None;
        }
        self.entries.get((idx - first) as usize).map(|e| e.term)
    }

    /// Makes one Ready durable: an incoming snapshot, new entries (truncating any conflicting
    /// suffix) and the hard state, in one transaction.
    pub fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        if snapshot.is_none() && entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut first = self.first();
        let mut last = self.last();
        if let Some(snap) = snapshot {
            first = snap.get_metadata().index + 1;
            last = snap.get_metadata().index;
        }
        if let Some(e) = entries.first() {
            if e.index < first || e.index > last + 1 {
                return Err(StoreError::Order(format!(
                    "append at {} outside [{first}, {}]",
                    e.index,
                    last + 1
                )));
            }
        }
        let txn = db_err!(self.db.begin_write())?;
        {
            let mut meta = db_err!(txn.open_table(META))?;
            let mut table = db_err!(txn.open_table(ENTRIES))?;
            if let Some(snap) = snapshot {
                db_err!(meta.insert(SNAPSHOT, encode(SNAPSHOT, snap)?.as_slice()))?;
                let cs = snap.get_metadata().get_conf_state();
                db_err!(meta.insert(CONF_STATE, encode(CONF_STATE, cs)?.as_slice()))?;
                db_err!(table.retain(|_, _| false))?;
            }
            if let Some(e) = entries.first() {
                db_err!(table.retain_in(e.index.., |_, _| false))?;
                for e in entries {
                    db_err!(table.insert(e.index, encode("entry", e)?.as_slice()))?;
                }
            }
            if let Some(hs) = hard_state {
                db_err!(meta.insert(HARD_STATE, encode(HARD_STATE, hs)?.as_slice()))?;
            }
        }
        db_err!(txn.commit())?;
        if let Some(snap) = snapshot {
            let meta = snap.get_metadata();
            self.snapshot = snap.clone();
            self.conf_state = meta.get_conf_state().clone();
            self.entries.clear();
            self.hard_state.term = self.hard_state.term.max(meta.term);
            self.hard_state.commit = meta.index;
        }
        if let Some(e) = entries.first() {
            let keep = (e.index - self.first()) as usize;
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records a new commit index (from a `LightReady`).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.persist(None, &[], Some(&hs))
    }

    /// Takes a snapshot at `index` (which must be applied and in the log) with the given state
    /// data, and drops the entries it covers.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        if index <= self.snapshot.get_metadata().index {
            return Ok(());
        }
        let Some(term) = self.term_of(index) else {
            return Err(StoreError::Order(format!(
                "cannot snapshot at {index}: log holds [{}, {}]",
                self.first(),
                self.last()
            )));
        };
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        let txn = db_err!(self.db.begin_write())?;
        {
            let mut meta = db_err!(txn.open_table(META))?;
            let mut table = db_err!(txn.open_table(ENTRIES))?;
            db_err!(meta.insert(SNAPSHOT, encode(SNAPSHOT, &snap)?.as_slice()))?;
            db_err!(table.retain_in(..=index, |_, _| false))?;
        }
        db_err!(txn.commit())?;
        let drop_n = (index + 1 - self.first()) as usize;
        self.entries.drain(..drop_n.min(self.entries.len()));
        self.snapshot = snap;
        Ok(())
    }

    /// Index of the latest snapshot (0 when none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
}

fn unavailable() -> raft::Error {
    raft::Error::Store(StorageError::Unavailable)
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.first();
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(unavailable());
        }
        let lo = (low - first) as usize;
        let hi = (high - first) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot.get_metadata().index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx).ok_or_else(unavailable)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn survives_reopen_and_truncates_conflicts() {
        let backend = SharedMemBackend::new();
        let mut s = RaftStore::open_mem(backend.clone(), &[1, 2, 3]).expect("open");
        let ents: Vec<_> = (1..=5).map(|i| entry(i, 1)).collect();
        let hs = HardState {
            term: 1,
            vote: 2,
            ..Default::default()
        };
        s.persist(None, &ents, Some(&hs)).expect("persist");
        // A new leader overwrites 4..: the old 4 and 5 must go.
        s.persist(None, &[entry(4, 2)], None).expect("overwrite");
        assert_eq!(s.last_index().expect("last"), 4);
        s.set_commit(3).expect("commit");
        drop(s);
        let s = RaftStore::open_mem(backend, &[3, 2, 1]).expect("reopen");
        assert_eq!(s.last_index().expect("last"), 4);
        assert_eq!(s.term(4).expect("term"), 2);
        assert_eq!(s.hard_state().vote, 2);
        assert_eq!(s.hard_state().commit, 3);
        let st = s.initial_state().expect("state");
        assert_eq!(st.conf_state.get_voters(), &[1, 2, 3]);
    }

    #[test]
    fn compaction_and_snapshot_survive_reopen() {
        let backend = SharedMemBackend::new();
        let mut s = RaftStore::open_mem(backend.clone(), &[1, 2, 3]).expect("open");
        let ents: Vec<_> = (1..=10).map(|i| entry(i, 1)).collect();
        s.persist(None, &ents, None).expect("persist");
        s.compact(6, b"state".to_vec()).expect("compact");
        assert_eq!(s.first_index().expect("first"), 7);
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        drop(s);
        let s = RaftStore::open_mem(backend, &[1, 2, 3]).expect("reopen");
        assert_eq!(s.first_index().expect("first"), 7);
        assert_eq!(s.term(6).expect("term"), 1);
        let snap = s.snapshot(0, 2).expect("snap");
        assert_eq!(snap.get_data(), b"state");
        let got = s
            .entries(7, 11, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn incoming_snapshot_replaces_log() {
        let mut s = RaftStore::open_mem(SharedMemBackend::new(), &[1, 2, 3]).expect("open");
        s.persist(None, &[entry(1, 1), entry(2, 1)], None)
            .expect("persist");
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 3;
        snap.mut_metadata()
            .mut_conf_state()
            .set_voters(vec![1, 2, 3]);
        s.persist(Some(&snap), &[entry(21, 3)], None).expect("snap");
        assert_eq!(s.first_index().expect("first"), 21);
        assert_eq!(s.last_index().expect("last"), 21);
        assert_eq!(s.hard_state().commit, 20);
    }

    #[test]
    fn membership_mismatch_is_refused_and_gaps_are_errors() {
        let backend = SharedMemBackend::new();
        drop(RaftStore::open_mem(backend.clone(), &[1, 2, 3]).expect("open"));
        let err = RaftStore::open_mem(backend, &[1, 2, 4])
            .err()
            .expect("mismatch");
        assert!(err.to_string().contains("differ from configured peers"));
        let mut s = RaftStore::open_mem(SharedMemBackend::new(), &[1]).expect("open");
        let err = s.persist(None, &[entry(5, 1)], None).expect_err("gap");
        assert!(err.to_string().contains("outside"));
        assert!(s
            .entries(1, 9, None, GetEntriesContext::empty(false))
            .is_err());
    }
}
