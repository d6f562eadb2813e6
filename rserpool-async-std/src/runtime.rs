//! Where the embedding API's driver tasks run ([`Spawner`]), and how they are stopped.

use futures_lite::future;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed driver task.
pub type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type SpawnFn = dyn Fn(BoxTask) + Send + Sync;

/// Runs the driver task of a [`PoolElement`](crate::PoolElement),
/// [`Session`](crate::Session), [`PoolUser`](crate::PoolUser) or
/// [`Registrar`](crate::Registrar).
///
/// async-io has no spawner of its own, so by default ([`Spawner::thread`]) each driver gets
/// a thread of its own running `futures_lite::future::block_on` (async-io's reactor serves
/// it like any other task). An application with an executor hands its spawn function over
/// instead, e.g. async-std's or smol's:
///
/// ```
/// use rserpool_async_std::Spawner;
/// let on_async_std = Spawner::new(|task| {
///     async_std::task::spawn(task);
/// });
/// # let _ = on_async_std;
/// ```
#[derive(Clone, Default)]
pub struct Spawner {
    spawn: Option<Arc<SpawnFn>>,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.spawn {
            Some(_) => "Spawner(custom)",
            None => "Spawner(thread)",
        })
    }
}

impl Spawner {
    /// One thread per driver (the default).
    pub fn thread() -> Spawner {
        Spawner { spawn: None }
    }

    /// Spawns driver tasks with `spawn` (which must run the task to completion, detached).
    pub fn new(spawn: impl Fn(BoxTask) + Send + Sync + 'static) -> Spawner {
        Spawner {
            spawn: Some(Arc::new(spawn)),
        }
    }

    pub(crate) fn spawn(&self, name: &str, task: BoxTask) -> std::io::Result<()> {
        match &self.spawn {
            Some(f) => {
                f(task);
                Ok(())
            }
            None => std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || future::block_on(task))
                .map(|_| ()),
        }
    }
}

/// Control over a spawned driver task: kill it (drop the driver at once, sockets closed by
/// the kernel, as `kill -9` would) and learn when it ended.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    kill: async_channel::Sender<()>,
    /// In an `Arc` to keep the API objects `Unpin` (the receiver is not).
    done: Arc<async_channel::Receiver<()>>,
}

impl Task {
    /// Spawns `run` (the driver's future) with a kill switch.
    pub(crate) fn spawn<F>(spawner: &Spawner, name: &str, run: F) -> std::io::Result<Task>
    where
        F: Future + Send + 'static,
    {
        let (kill, kill_rx) = async_channel::bounded::<()>(1);
        let (done_tx, done) = async_channel::bounded::<()>(1);
        let task = async move {
            future::or(
                async {
                    run.await;
                },
                async {
                    // Killed: `run` is dropped with the driver and all its sockets.
                    let _ = kill_rx.recv().await;
                },
            )
            .await;
            drop(done_tx);
        };
        spawner.spawn(name, Box::pin(task))?;
        Ok(Task {
            kill,
            done: Arc::new(done),
        })
    }

    /// Drops the driver at once and waits until it is gone.
    pub(crate) async fn kill(&self) {
        let _ = self.kill.try_send(());
        self.finished().await;
    }

    /// Waits until the driver task has ended.
    pub(crate) async fn finished(&self) {
        let _ = self.done.recv().await;
    }

    /// True once the driver task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.done.is_closed()
    }
}

/// A seed for the machines' RNG (PE identifiers, server identifiers, hash seeds, jitter):
/// std's per-process random hash keys mixed with the time and a counter. Not a secret, as
/// RSerPool identifiers are not security tokens.
pub(crate) fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killed_task_finishes_and_seeds_differ() {
        let task = Task::spawn(&Spawner::thread(), "test", future::pending::<()>()).unwrap();
        assert!(!task.is_finished());
        future::block_on(task.kill());
        assert!(task.is_finished());
        let done = Task::spawn(&Spawner::thread(), "test", async {}).unwrap();
        future::block_on(done.finished());
        assert!(done.is_finished());
        assert_ne!(fresh_seed(), fresh_seed());
    }
}
