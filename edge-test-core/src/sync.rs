//! Small synchronisation pieces used across the runtime.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Locks `mutex` whatever happened to an earlier holder. Every lock in edge-test guards
/// data a panicking holder leaves consistent (a list pushed to, a value replaced whole), and
/// a test that panicked must not take the next one down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A value per key, made once: the first caller for a key makes it, concurrent callers for
/// the same key wait for that, later ones share it. Callers for other keys never wait.
pub(crate) struct OnceMap<K, V> {
    slots: Mutex<HashMap<K, Arc<OnceLock<V>>>>,
}

impl<K: Eq + Hash, V: Clone> OnceMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get_or_init(&self, key: K, make: impl FnOnce() -> V) -> V {
        let slot = lock(&self.slots).entry(key).or_default().clone();
        slot.get_or_init(make).clone()
    }
}

/// Tries `attempt` every `interval` until it breaks with a value, or `limit` has passed:
/// `None` then. For the waits that have nothing to block on (a socket that may start
/// listening, a lock another process holds, a route a racing thread registers); each
/// bounded, so that none can hang a test.
pub(crate) fn poll_until<T>(
    limit: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> ControlFlow<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let ControlFlow::Break(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_key_is_made_once_even_by_concurrent_callers() {
        let map = Arc::new(OnceMap::new());
        let made = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..8)
            .map(|i| {
                let (map, made) = (map.clone(), made.clone());
                std::thread::spawn(move || {
                    map.get_or_init(i % 2, || {
                        made.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        i % 2 * 10
                    })
                })
            })
            .collect();
        let values: Vec<usize> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_eq!(made.load(Ordering::SeqCst), 2, "one make per key");
        assert!(values.iter().all(|&v| v == 0 || v == 10));
    }

    #[test]
    fn polling_stops_at_the_first_value_or_the_limit() {
        let mut tries = 0;
        let found = poll_until(Duration::from_secs(5), Duration::ZERO, || {
            tries += 1;
            if tries == 3 {
                ControlFlow::Break(tries)
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(found, Some(3));
        let never: Option<()> =
            poll_until(Duration::ZERO, Duration::ZERO, || ControlFlow::Continue(()));
        assert_eq!(never, None, "tried once, then the limit");
    }

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let mutex = Arc::new(Mutex::new(1));
        let poisoner = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert_eq!(*lock(&mutex), 1);
    }
}
