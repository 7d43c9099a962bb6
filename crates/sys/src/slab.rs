//! A slab of per-connection state keyed by slot + generation.
//!
//! Tokens handed to the kernel (epoll data, io_uring user_data) carry the slot index and the
//! generation it had when the token was made; a stale event for a closed or reused slot is
//! recognised and ignored. Both the readiness loops and the io_uring loop use it.

/// Slot index (low 32 bits) and generation (high 32 bits) in one `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub index: u32,
    pub generation: u32,
}

impl Key {
    #[must_use]
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    #[must_use]
    pub const fn from_u64(v: u64) -> Self {
        Self { index: v as u32, generation: (v >> 32) as u32 }
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Generational slab with a free list; insert and remove are O(1) and do not allocate once
/// warm.
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slab<T> {
    #[must_use]
    pub const fn new() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), len: 0 }
    }

    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key the next `insert` will return (lets a value embed its own key).
    #[must_use]
    pub fn vacant_key(&self) -> Key {
        match self.free.last() {
            Some(&index) => Key { index, generation: self.slots[index as usize].generation },
            None => Key { index: self.slots.len() as u32, generation: 0 },
        }
    }

    pub fn insert(&mut self, value: T) -> Key {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.value = Some(value);
            Key { index, generation: slot.generation }
        } else {
            let index = u32::try_from(self.slots.len()).expect("more than 2^32 slots");
            self.slots.push(Slot { generation: 0, value: Some(value) });
            Key { index, generation: 0 }
        }
    }

    #[must_use]
    pub fn get(&self, key: Key) -> Option<&T> {
        self.slots.get(key.index as usize).filter(|s| s.generation == key.generation).and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.slots.get_mut(key.index as usize).filter(|s| s.generation == key.generation).and_then(|s| s.value.as_mut())
    }

    /// Remove and return the value; the slot's generation moves on so old keys go stale.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }

    /// Keys of all live values (allocates; for sweeps and shutdown, not the hot path).
    #[must_use]
    pub fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| Key { index: i as u32, generation: s.generation })
            .collect()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let generation = s.generation;
            s.value.as_mut().map(|v| (Key { index: i as u32, generation }, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss_after_reuse() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(a.index, b.index, "slot reused");
        assert_ne!(a, b);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn keys_round_trip_through_u64() {
        let k = Key { index: 0xdead_beef, generation: 0x1234_5678 };
        assert_eq!(Key::from_u64(k.to_u64()), k);
    }

    #[test]
    fn vacant_key_predicts_insert() {
        let mut s = Slab::new();
        let k0 = s.vacant_key();
        assert_eq!(s.insert(1), k0);
        let k1 = s.insert(2);
        s.remove(k0);
        let next = s.vacant_key();
        assert_eq!(s.insert(3), next);
        assert_ne!(next, k0);
        assert_eq!(s.keys().len(), 2);
        assert!(s.get(k1).is_some());
    }
}
