//! A first-in first-out queue whose oldest element lives inline, for a session's pending
//! replies and ticket ids.
//!
//! Most clients have one request in flight at a time. With a `VecDeque` alone, that one
//! request's entry sat in a heap buffer of its own, one more cache line each request had to
//! bring in once many clients' state no longer fits in the cache (`bench/proxy-instructions.sh`,
//! `-c 500`); the ring's head also walked through the buffer, so consecutive requests used
//! different lines. Here the oldest element is a field of the session, which its request
//! reads anyway, and only a pipeline's later requests reach the heap.

use std::collections::VecDeque;

/// The queue; `head` is empty only when `rest` is.
#[derive(Debug)]
pub(super) struct Fifo<T> {
    head: Option<T>,
    rest: VecDeque<T>,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Self {
            head: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> Fifo<T> {
    pub(super) fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The oldest element.
    pub(super) fn front(&self) -> Option<&T> {
        self.head.as_ref()
    }

    pub(super) fn push_back(&mut self, value: T) {
        if self.head.is_none() {
            self.head = Some(value);
        } else {
            self.rest.push_back(value);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let front = self.head.take();
        if front.is_some() {
            self.head = self.rest.pop_front();
        }
        front
    }

    /// Oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> + Clone {
        self.head.iter().chain(self.rest.iter())
    }

    /// Takes every element, oldest first.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = T> {
        self.head.take().into_iter().chain(self.rest.drain(..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_leave_in_the_order_they_came_whether_inline_or_not() {
        let mut fifo = Fifo::default();
        assert!(fifo.is_empty());
        assert_eq!(fifo.pop_front(), None);
        fifo.push_back(1);
        assert_eq!((fifo.len(), fifo.front()), (1, Some(&1)));
        fifo.push_back(2);
        fifo.push_back(3);
        assert_eq!(fifo.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(fifo.pop_front(), Some(1));
        assert_eq!((fifo.len(), fifo.front()), (2, Some(&2)));
        fifo.push_back(4);
        assert_eq!(fifo.iter().take(2).copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(fifo.pop_front(), Some(2));
        assert_eq!(fifo.pop_front(), Some(3));
        assert_eq!(fifo.pop_front(), Some(4));
        assert!(fifo.is_empty());
        assert_eq!(fifo.len(), 0);
        fifo.push_back(5);
        fifo.push_back(6);
        assert_eq!(fifo.drain().collect::<Vec<_>>(), [5, 6]);
        assert!(fifo.is_empty() && fifo.front().is_none());
    }
}
