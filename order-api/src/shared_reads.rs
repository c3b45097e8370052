//! Single-statement reads pipelined over a few connections that every request shares, instead
//! of one pooled connection held per read in flight.
//!
//! With one connection per read, 64 concurrent `GET /orders/{id}` take turns on a pool of 10:
//! each read waits for a checkout, and each statement is one round trip on its own backend.
//! A shared connection takes every statement sent to it at once (tokio-postgres writes them
//! back to back and matches the answers in order), so reads never wait for a checkout and
//! PostgreSQL reads several statements per wake-up (docs/decisions.md).
//!
//! Only statements that stand alone may share a connection: no transaction, no session state.
//! Sharing needs named prepared statements; with them off (a pooler in transaction mode) the
//! connection serves one unnamed statement at a time, so no connection is shared then.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use order_store::{AsyncPgConnection, Pool, PooledConn, StoreError};

/// A few connections checked out of `pool` for good, each shared by any number of reads.
pub struct SharedReads {
    pool: Pool,
    lanes: Box<[Mutex<Option<Arc<PooledConn>>>]>,
    next: AtomicUsize,
}

/// One read's use of a shared connection.
pub struct SharedConnection<'a> {
    reads: &'a SharedReads,
    lane: usize,
    conn: Arc<PooledConn>,
}

impl SharedReads {
    /// `lanes` connections of `pool` shared by reads; `None` for none.
    pub fn new(pool: Pool, lanes: u32) -> Option<Self> {
        (lanes > 0).then(|| Self {
            pool,
            lanes: (0..lanes).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// The next lane's connection, checked out of the pool when the lane has none yet (at the
    /// first read, and after a failure retired the last one).
    pub async fn connection(&self) -> Result<SharedConnection<'_>, StoreError> {
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        if let Some(conn) = self.lock(lane).clone() {
            return Ok(SharedConnection {
                reads: self,
                lane,
                conn,
            });
        }
        let fresh = Arc::new(self.pool.get_owned().await?);
        let (conn, surplus) = {
            let mut slot = self.lock(lane);
            if let Some(current) = &*slot {
                // Another read filled the lane meanwhile: share its connection; ours goes
                // back to the pool (after the lock is released).
                (current.clone(), Some(fresh))
            } else {
                *slot = Some(fresh.clone());
                (fresh, None)
            }
        };
        drop(surplus);
        Ok(SharedConnection {
            reads: self,
            lane,
            conn,
        })
    }

    fn lock(&self, lane: usize) -> MutexGuard<'_, Option<Arc<PooledConn>>> {
        // A poisoned lock only means a thread panicked while holding it; the slot holds a
        // whole value either way.
        self.lanes[lane]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl SharedConnection<'_> {
    pub fn get(&self) -> &AsyncPgConnection {
        &self.conn
    }

    /// Takes this connection out of its lane after a statement on it failed, so that the next
    /// read starts a fresh one: the server may have closed it. The reads still running on it
    /// finish; the last one returns it to the pool, which drops it if it is broken.
    pub fn retire(self) {
        let retired = {
            let mut slot = self.reads.lock(self.lane);
            if slot
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, &self.conn))
            {
                slot.take()
            } else {
                None
            }
        };
        drop(retired);
    }
}
