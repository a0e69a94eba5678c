//! The master's registry on disk: an embedded redb database in the state folder.
//!
//! The registry actor never waits on the disk. It hands the store batches of records to
//! write together with what must happen only once they are durable: launches to send to
//! agents (so a task an agent runs is always one the master remembers) and acknowledgements
//! of status updates (so an acknowledged update is never lost). One writer thread commits
//! whatever batches have queued up in one transaction (group commit: one fsync for many
//! updates), then carries out their deferred actions in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use corral_wire::pb;
use prost::Message as _;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const ROLES: TableDefinition<&str, f64> = TableDefinition::new("roles");
const COMPONENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("components");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("policy_history");

/// The file the registry lives in, inside the master's state folder.
pub const FILE: &str = "registry.redb";

/// Why the registry could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the registry {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the registry {path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("the state folder {dir} is in use by another master (its registry is locked); stop that master or choose another --state")]
    InUse { dir: PathBuf },
}

/// One record to write.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Tasks are most of the records: boxing them costs more.
pub enum Op {
    Task(pb::StoredTask),
    Framework(pb::StoredFramework),
    Agent(pb::StoredAgent),
    Role(String, f64),
    /// A policy component, by its digest.
    Component(String, Vec<u8>),
    /// A small value: the allocator's digest.
    Meta(String, Vec<u8>),
    /// One policy load or swap, in the order they happened.
    History(u64, pb::PolicyRecord),
    /// Forget a task, by id.
    ForgetTask(String),
    /// Forget a framework, by id.
    ForgetFramework(String),
    /// Forget a policy component, by digest.
    ForgetComponent(String),
    /// Forget a policy record, by its number.
    ForgetHistory(u64),
}

/// Something to do once a batch is durable.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Launches are most of them.
pub enum After {
    /// Send an envelope to an agent (a launch).
    Send(tokio_mpsc::UnboundedSender<pb::Envelope>, pb::Envelope),
    /// Let an agent's status update be acknowledged.
    Durable(oneshot::Sender<()>),
}

struct Batch {
    ops: Vec<Op>,
    after: Vec<After>,
}

/// Everything the registry held when the master stopped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tasks: Vec<pb::StoredTask>,
    pub frameworks: Vec<pb::StoredFramework>,
    pub agents: Vec<pb::StoredAgent>,
    pub roles: Vec<(String, f64)>,
    pub components: HashMap<String, Vec<u8>>,
    pub meta: HashMap<String, Vec<u8>>,
    /// Policy swaps, oldest first, with their sequence numbers.
    pub history: Vec<(u64, pb::PolicyRecord)>,
}

#[cfg(test)]
impl Loaded {
    /// The saved state of task `id`.
    pub(crate) fn task_state(&self, id: &str) -> Option<i32> {
        self.tasks
            .iter()
            .find(|t| t.spec.as_ref().is_some_and(|s| s.task_id == id))
            .and_then(|t| t.status.as_ref())
            .map(|s| s.state)
    }
}

/// The registry's writer. Dropping it finishes the queued batches and stops the thread.
pub struct Store {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    /// Set when the store is dropped: a commit that keeps failing is then given up.
    stopping: Arc<AtomicBool>,
    /// Commits to fail on purpose before trying them (tests of the retry; always 0 else).
    #[cfg_attr(not(test), allow(dead_code))]
    failures: Arc<AtomicU32>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl Store {
    /// Opens (or creates) the registry in `dir` and reads it whole.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] naming the file when it cannot be opened or a record cannot be
    /// decoded.
    pub fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
        let path = dir.join(FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                dir: dir.to_owned(),
            },
            e => open_err(&path, e),
        })?;
        // Make every table exist, so reads never meet a missing one.
        let txn = db.begin_write().map_err(|e| open_err(&path, e))?;
        {
            for def in [TASKS, FRAMEWORKS, AGENTS, COMPONENTS, META] {
                txn.open_table(def).map_err(|e| open_err(&path, e))?;
            }
            txn.open_table(ROLES).map_err(|e| open_err(&path, e))?;
            txn.open_table(HISTORY).map_err(|e| open_err(&path, e))?;
        }
        txn.commit().map_err(|e| open_err(&path, e))?;
        let loaded = load(&db, &path)?;
        let (tx, rx) = mpsc::channel::<Batch>();
        let stopping = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU32::new(0));
        let (writer_stopping, writer_failures) = (stopping.clone(), failures.clone());
        let thread = std::thread::Builder::new()
            .name("corral-store".into())
            .spawn(move || writer(db, path, rx, &writer_stopping, &writer_failures))
            .map_err(|e| open_err(dir, e))?;
        Ok((
            Store {
                tx: Some(tx),
                thread: Some(thread),
                stopping,
                failures,
            },
            loaded,
        ))
    }

    /// Queues `ops` for the next commit; `after` runs once they are durable.
    pub fn submit(&self, ops: Vec<Op>, after: Vec<After>) {
        if ops.is_empty() && after.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            if tx.send(Batch { ops, after }).is_err() {
                tracing::error!("the registry's writer stopped: changes are no longer saved");
            }
        }
    }

    /// Makes the next `n` commits fail as a disk error would.
    #[cfg(test)]
    fn fail_next_commits(&self, n: u32) {
        self.failures.store(n, Ordering::Release);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn load(db: &Database, path: &Path) -> Result<Loaded, StoreError> {
    let txn = db.begin_read().map_err(|e| open_err(path, e))?;
    let mut loaded = Loaded::default();
    macro_rules! messages {
        ($def:expr, $ty:ty, $out:expr) => {{
            let table = txn.open_table($def).map_err(|e| open_err(path, e))?;
            for item in table.iter().map_err(|e| corrupt(path, e))? {
                let (k, v) = item.map_err(|e| corrupt(path, e))?;
                let msg = <$ty>::decode(v.value())
                    .map_err(|e| corrupt(path, format!("record {:?}: {e}", k.value())))?;
                $out.push(msg);
            }
        }};
    }
    messages!(TASKS, pb::StoredTask, loaded.tasks);
    messages!(FRAMEWORKS, pb::StoredFramework, loaded.frameworks);
    messages!(AGENTS, pb::StoredAgent, loaded.agents);
    let history = txn.open_table(HISTORY).map_err(|e| open_err(path, e))?;
    for item in history.iter().map_err(|e| corrupt(path, e))? {
        let (k, v) = item.map_err(|e| corrupt(path, e))?;
        let record = pb::PolicyRecord::decode(v.value())
            .map_err(|e| corrupt(path, format!("policy history {}: {e}", k.value())))?;
        loaded.history.push((k.value(), record));
    }
    let roles = txn.open_table(ROLES).map_err(|e| open_err(path, e))?;
    for item in roles.iter().map_err(|e| corrupt(path, e))? {
        let (k, v) = item.map_err(|e| corrupt(path, e))?;
        loaded.roles.push((k.value().to_owned(), v.value()));
    }
    for (def, out) in [
        (COMPONENTS, &mut loaded.components),
        (META, &mut loaded.meta),
    ] {
        let table = txn.open_table(def).map_err(|e| open_err(path, e))?;
        for item in table.iter().map_err(|e| corrupt(path, e))? {
            let (k, v) = item.map_err(|e| corrupt(path, e))?;
            out.insert(k.value().to_owned(), v.value().to_vec());
        }
    }
    Ok(loaded)
}

/// Most batches one commit takes (bounds the latency of the first one).
const MAX_BATCHES_PER_COMMIT: usize = 4096;
/// Most records one commit takes once it has one batch: a burst of launches is written
/// (and sent) in pieces, so the first tasks start while the rest are still being written.
const MAX_OPS_PER_COMMIT: usize = 2048;

/// The first wait before a failed commit is tried again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn writer(
    db: Database,
    path: PathBuf,
    rx: mpsc::Receiver<Batch>,
    stopping: &AtomicBool,
    failures: &AtomicU32,
) {
    let mut db = Some(db);
    while let Ok(first) = rx.recv() {
        let mut ops = first.ops.len();
        let mut batches = vec![first];
        while batches.len() < MAX_BATCHES_PER_COMMIT && ops < MAX_OPS_PER_COMMIT {
            match rx.try_recv() {
                Ok(b) => {
                    ops += b.ops.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        // A failed commit (a full disk, an I/O error) is tried again until it succeeds,
        // and nothing after it is committed before: the registry in memory already holds
        // these changes, so dropping them would lose them for good (a status update sent
        // again would be a duplicate, and acknowledged unsaved). Meanwhile nothing is
        // acknowledged or launched, so agents keep their updates and send them again.
        let mut wait = RETRY_FIRST;
        // Batches with nothing to write (messages queued behind earlier ones, as kills
        // behind launches) need no commit: the batches before them are durable.
        loop {
            let error = match &db {
                _ if ops == 0 => break,
                Some(_) if take_one(failures) => "injected failure".to_owned(),
                Some(d) => match commit(d, &batches) {
                    Ok(()) => break,
                    Err(e) => e.to_string(),
                },
                None => "the database is not open".to_owned(),
            };
            if stopping.load(Ordering::Acquire) {
                tracing::error!(path = %path.display(), %error, "cannot save the registry; stopping with changes unsaved");
                return;
            }
            tracing::error!(path = %path.display(), %error, retry_in_ms = wait.as_millis() as u64, "cannot save the registry; nothing is acknowledged or launched until it is saved");
            std::thread::sleep(wait);
            wait = (wait * 2).min(RETRY_MAX);
            // After an I/O error the database must be opened again before it writes (and
            // closed first: a file is opened once).
            drop(db.take());
            db = Database::create(&path)
                .map_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open the registry again"))
                .ok();
        }
        for batch in batches {
            for after in batch.after {
                match after {
                    After::Send(to, env) => {
                        let _ = to.send(env);
                    }
                    After::Durable(done) => {
                        let _ = done.send(());
                    }
                }
            }
        }
    }
}

/// Takes one from `n` if it is not zero.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| k.checked_sub(1))
        .is_ok()
}

#[allow(clippy::result_large_err)] // One per commit, on the writer thread.
fn commit(db: &Database, batches: &[Batch]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut tasks = txn.open_table(TASKS)?;
        let mut frameworks = txn.open_table(FRAMEWORKS)?;
        let mut agents = txn.open_table(AGENTS)?;
        let mut roles = txn.open_table(ROLES)?;
        let mut components = txn.open_table(COMPONENTS)?;
        let mut meta = txn.open_table(META)?;
        let mut history = txn.open_table(HISTORY)?;
        for op in batches.iter().flat_map(|b| b.ops.iter()) {
            match op {
                Op::Task(t) => {
                    let id = t.spec.as_ref().map(|s| s.task_id.as_str()).unwrap_or("");
                    tasks.insert(id, t.encode_to_vec().as_slice())?;
                }
                Op::Framework(f) => {
                    frameworks.insert(f.framework_id.as_str(), f.encode_to_vec().as_slice())?;
                }
                Op::Agent(a) => {
                    agents.insert(a.agent_id.as_str(), a.encode_to_vec().as_slice())?;
                }
                Op::Role(name, weight) => {
                    roles.insert(name.as_str(), *weight)?;
                }
                Op::Component(digest, bytes) => {
                    if components.get(digest.as_str())?.is_none() {
                        components.insert(digest.as_str(), bytes.as_slice())?;
                    }
                }
                Op::Meta(key, value) => {
                    meta.insert(key.as_str(), value.as_slice())?;
                }
                Op::History(seq, record) => {
                    history.insert(*seq, record.encode_to_vec().as_slice())?;
                }
                Op::ForgetTask(id) => {
                    tasks.remove(id.as_str())?;
                }
                Op::ForgetFramework(id) => {
                    frameworks.remove(id.as_str())?;
                }
                Op::ForgetComponent(digest) => {
                    components.remove(digest.as_str())?;
                }
                Op::ForgetHistory(seq) => {
                    history.remove(*seq)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, state: pb::TaskState) -> pb::StoredTask {
        pb::StoredTask {
            spec: Some(pb::TaskSpec {
                task_id: id.into(),
                image: "busybox".into(),
                ..Default::default()
            }),
            status: Some(pb::TaskStatus {
                task_id: id.into(),
                state: state as i32,
                ..Default::default()
            }),
            agent_id: "a1".into(),
            generation: 1,
            attempt: Some(0),
            launched_ms: 1,
            seq: 1,
            kill_asked: false,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_acks_wait_for_the_commit() {
        let dir = std::env::temp_dir().join(format!("corral-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (store, loaded) = Store::open(&dir).expect("open");
            assert!(loaded.tasks.is_empty());
            let (done, durable) = oneshot::channel();
            store.submit(
                vec![
                    Op::Task(task("t1", pb::TaskState::TaskStaging)),
                    Op::Task(task("t1", pb::TaskState::TaskRunning)),
                    Op::Task(task("t2", pb::TaskState::TaskFinished)),
                    Op::Role("web".into(), 2.5),
                    Op::Component("abc".into(), vec![1, 2, 3]),
                    Op::Meta("allocator".into(), b"abc".to_vec()),
                ],
                vec![After::Durable(done)],
            );
            durable.blocking_recv().expect("committed");
        }
        let (_store, loaded) = Store::open(&dir).expect("reopen");
        assert_eq!(loaded.tasks.len(), 2);
        let t1 = loaded
            .tasks
            .iter()
            .find(|t| t.spec.as_ref().is_some_and(|s| s.task_id == "t1"))
            .expect("t1");
        assert_eq!(
            t1.status.as_ref().map(|s| s.state),
            Some(pb::TaskState::TaskRunning as i32)
        );
        assert_eq!(loaded.roles, vec![("web".to_owned(), 2.5)]);
        assert_eq!(loaded.components.get("abc"), Some(&vec![1, 2, 3]));
        assert_eq!(loaded.meta.get("allocator"), Some(&b"abc".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Waits for a batch's acknowledgement, for at most ten seconds.
    fn wait(mut ack: oneshot::Receiver<()>, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match ack.try_recv() {
                Ok(()) => return,
                Err(oneshot::error::TryRecvError::Closed) => panic!("{what}: dropped unsaved"),
                Err(oneshot::error::TryRecvError::Empty) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{what}: not saved in 10 s"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    #[test]
    fn a_failed_commit_is_tried_again_and_acknowledged_only_once_saved() {
        let dir = std::env::temp_dir().join(format!("corral-store-retry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (store, _) = Store::open(&dir).expect("open");
            store.fail_next_commits(2);
            let started = std::time::Instant::now();
            let (first_done, first) = oneshot::channel();
            store.submit(
                vec![Op::Task(task("t1", pb::TaskState::TaskRunning))],
                vec![After::Durable(first_done)],
            );
            let (second_done, second) = oneshot::channel();
            store.submit(
                vec![Op::Task(task("t2", pb::TaskState::TaskFinished))],
                vec![After::Durable(second_done)],
            );
            wait(first, "the first batch, after the failures");
            // Two failures wait 100 ms and then 200 ms, and reopen the file each time.
            assert!(
                started.elapsed() >= RETRY_FIRST * 3,
                "acknowledged after {:?}, before the retries",
                started.elapsed()
            );
            wait(second, "the batch queued behind it");
            // The store still takes changes after the failures.
            let (third_done, third) = oneshot::channel();
            store.submit(
                vec![Op::Task(task("t1", pb::TaskState::TaskFinished))],
                vec![After::Durable(third_done)],
            );
            wait(third, "a batch after the failures");
        }
        let (_store, loaded) = Store::open(&dir).expect("reopen");
        let finished = Some(pb::TaskState::TaskFinished as i32);
        assert_eq!(loaded.task_state("t1"), finished);
        assert_eq!(loaded.task_state("t2"), finished);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_registry_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("corral-store-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(FILE), b"this is not a database").expect("write");
        let err = Store::open(&dir).expect_err("garbage is refused");
        assert!(err.to_string().contains(FILE), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
