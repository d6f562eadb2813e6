//! [`SpillQueue`]: a FIFO queue that takes heap memory only while it holds something, for
//! the per-connection queues of the RTF codec and the drivers (100,000s of idle
//! connections each keep one null pointer per queue).

use std::collections::VecDeque;

/// A FIFO queue kept out of line while it holds anything and released when drained: empty,
/// it is one null pointer.
#[derive(Debug)]
#[allow(clippy::box_collection)] // on purpose: one pointer inline instead of four words
pub struct SpillQueue<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for SpillQueue<T> {
    fn default() -> Self {
        SpillQueue(None)
    }
}

impl<T> From<VecDeque<T>> for SpillQueue<T> {
    /// The queue holding `q`'s items (no memory when `q` is empty).
    fn from(q: VecDeque<T>) -> Self {
        SpillQueue((!q.is_empty()).then(|| Box::new(q)))
    }
}

impl<T> SpillQueue<T> {
    /// Appends `x`.
    pub fn push_back(&mut self, x: T) {
        self.0.get_or_insert_with(Box::default).push_back(x);
    }

    /// Takes the first item; the memory goes with the last one.
    pub fn pop_front(&mut self) -> Option<T> {
        let q = self.0.as_mut()?;
        let x = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        x
    }

    /// The first item.
    pub fn front(&self) -> Option<&T> {
        self.0.as_ref().and_then(|q| q.front())
    }

    /// True when the queue holds nothing (and no memory).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|q| q.iter())
    }

    /// Takes every item out (the queue is left empty, without memory).
    pub fn take(&mut self) -> VecDeque<T> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }

    /// Drops every item and the memory.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::SpillQueue;
    use std::collections::VecDeque;

    #[test]
    fn memory_only_while_it_holds_items() {
        let mut q = SpillQueue::default();
        assert!(q.is_empty() && q.0.is_none());
        q.push_back(1);
        q.push_back(2);
        assert_eq!((q.len(), q.front()), (2, Some(&1)));
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(q.pop_front(), Some(1));
        assert!(q.0.is_some());
        assert_eq!(q.pop_front(), Some(2));
        assert!(q.is_empty() && q.0.is_none());
        assert_eq!(q.pop_front(), None);
        let q = SpillQueue::from(VecDeque::<u8>::new());
        assert!(q.0.is_none());
        let mut q = SpillQueue::from(VecDeque::from([7, 8]));
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(), [7, 8]);
        assert!(q.0.is_none());
        q.push_back(9);
        q.clear();
        assert!(q.0.is_none());
    }
}
