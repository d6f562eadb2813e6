//! A value shared between a driver task and the API objects, with "wait until it says so".

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

struct Inner<T> {
    value: T,
    wakers: Vec<Waker>,
}

/// Shared state: the driver task updates it ([`Watch::update`]), API objects read it
/// ([`Watch::get`]) or wait for a condition ([`Watch::wait_for`]).
pub(crate) struct Watch<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

impl<T> Clone for Watch<T> {
    fn clone(&self) -> Self {
        Watch {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Watch<T> {
    pub(crate) fn new(value: T) -> Watch<T> {
        Watch {
            inner: Arc::new(Mutex::new(Inner {
                value,
                wakers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Updates are plain assignments: a panic cannot leave the value half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the value.
    pub(crate) fn get<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock().value)
    }

    /// Changes the value and wakes every waiter.
    pub(crate) fn update(&self, f: impl FnOnce(&mut T)) {
        let wakers = {
            let mut g = self.lock();
            f(&mut g.value);
            std::mem::take(&mut g.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Waits until `f` returns `Some`.
    pub(crate) async fn wait_for<R>(&self, mut f: impl FnMut(&T) -> Option<R>) -> R {
        futures_lite::future::poll_fn(|cx| {
            let mut g = self.lock();
            match f(&g.value) {
                Some(r) => Poll::Ready(r),
                None => {
                    if !g.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        g.wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_see_updates() {
        let w = Watch::new(0u32);
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            w2.update(|v| *v = 5);
        });
        let got = futures_lite::future::block_on(w.wait_for(|v| (*v == 5).then_some(*v * 2)));
        assert_eq!(got, 10);
        assert_eq!(w.get(|v| *v), 5);
        t.join().unwrap();
    }
}
