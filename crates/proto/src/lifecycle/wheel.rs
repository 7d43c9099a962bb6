//! A per-worker timer wheel for connection deadlines.
//!
//! Why a wheel and lazy re-arming: a connection's deadline moves with almost every event (a
//! byte received pushes the idle deadline back), and a worker may hold 100,000 connections.
//! Re-arming a timer per request would be a heap or tree operation per request; sweeping every
//! connection periodically is O(connections) per sweep even when nothing expires. Instead each
//! connection has at most one entry, and an entry is added only when the connection's
//! deadline becomes *earlier* than the one it is armed for (say from the 60 s keep-alive to the
//! 10 s head deadline). When an entry fires and the connection's deadline has moved later in
//! the meantime, the caller re-arms it for the new deadline: a busy connection costs one wheel
//! operation per deadline period, not per request, and a request costs a comparison.
//!
//! The wheel has [`SLOTS`] slots of [`TICK`]; a deadline beyond the horizon goes to the last
//! slot and comes back early, to be re-armed (the same lazy rule). Entries fire at most one
//! tick late. Slots keep their allocation, and a bitmap finds the next non-empty slot for the
//! loop's wait timeout without scanning.

use std::time::{Duration, Instant};

/// Resolution of the wheel.
pub const TICK: Duration = Duration::from_millis(50);
/// Number of slots (a power of two; horizon = SLOTS x TICK = 102.4 s).
pub const SLOTS: usize = 2048;

/// A tick number: which [`TICK`] since the wheel's origin an entry fires in.
pub type Tick = u64;

/// Deadlines of keys `K` (connection slab keys).
#[derive(Debug)]
pub struct Wheel<K> {
    origin: Instant,
    /// The next tick to expire.
    cursor: Tick,
    slots: Vec<Vec<K>>,
    /// One bit per non-empty slot.
    occupied: Vec<u64>,
    len: usize,
}

impl<K: Copy> Wheel<K> {
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64],
            len: 0,
        }
    }

    /// Entries in the wheel (stale ones included).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick a deadline at `at` fires in (never before the cursor, at most one horizon
    /// ahead). Callers keep it to recognise their current entry.
    #[must_use]
    pub fn tick_of(&self, at: Instant) -> Tick {
        // In u64 nanoseconds (584 years from the wheel's origin), not u128: this runs for
        // every deadline that moves, and a u128 division is a library call.
        const TICK_NS: u64 = TICK.as_millis() as u64 * 1_000_000;
        let since = at.saturating_duration_since(self.origin);
        let t = u64::try_from(since.as_nanos()).map_or(Tick::MAX, |ns| ns.div_ceil(TICK_NS));
        t.clamp(self.cursor, self.cursor + SLOTS as Tick - 1)
    }

    /// Arm `key` for `at`; returns the tick it will fire in.
    pub fn insert(&mut self, key: K, at: Instant) -> Tick {
        let tick = self.tick_of(at);
        let slot = (tick % SLOTS as Tick) as usize;
        self.slots[slot].push(key);
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
        tick
    }

    /// Move every entry due at `now` into `due`, with the tick each was armed for (the caller
    /// drops entries that are not its connection's current one).
    pub fn expire(&mut self, now: Instant, due: &mut Vec<(K, Tick)>) {
        let now_tick = Tick::try_from(now.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos())
            .unwrap_or(Tick::MAX);
        while self.cursor <= now_tick {
            if self.len == 0 {
                self.cursor = now_tick + 1;
                break;
            }
            let Some(next) = self.next_occupied() else { break };
            if next > now_tick {
                self.cursor = now_tick + 1;
                break;
            }
            let slot = (next % SLOTS as Tick) as usize;
            let entries = &mut self.slots[slot];
            self.len -= entries.len();
            due.extend(entries.drain(..).map(|k| (k, next)));
            self.occupied[slot / 64] &= !(1 << (slot % 64));
            self.cursor = next + 1;
        }
    }

    /// When the next entry is due (`None`: the wheel is empty).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = self.next_occupied()?;
        let nanos = u128::from(t) * TICK.as_nanos();
        Some(self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    /// The first tick at or after the cursor whose slot is non-empty.
    fn next_occupied(&self) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        let start = (self.cursor % SLOTS as Tick) as usize;
        // Scan the bitmap from `start`, wrapping once.
        for step in 0..=self.occupied.len() {
            let w = (start / 64 + step) % self.occupied.len();
            let mut bits = self.occupied[w];
            if step == 0 {
                bits &= u64::MAX << (start % 64);
            }
            if step == self.occupied.len() {
                bits &= !(u64::MAX << (start % 64));
            }
            if bits != 0 {
                let slot = w * 64 + bits.trailing_zeros() as usize;
                let ahead = (slot + SLOTS - start) % SLOTS;
                return Some(self.cursor + ahead as Tick);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn entries_fire_in_order_at_most_a_tick_late() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert('a', t0 + ms(120));
        w.insert('b', t0 + ms(10));
        w.insert('c', t0 + ms(5000));
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_deadline(), Some(t0 + ms(50)));
        let mut due = Vec::new();
        w.expire(t0 + ms(40), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + ms(50), &mut due);
        assert_eq!(due, vec![('b', 1)]);
        due.clear();
        w.expire(t0 + ms(149), &mut due);
        assert!(due.is_empty(), "120 ms rounds up to the 150 ms tick");
        w.expire(t0 + ms(150), &mut due);
        assert_eq!(due, vec![('a', 3)]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(5000)));
        due.clear();
        w.expire(t0 + ms(6000), &mut due);
        assert_eq!(due, vec![('c', 100)]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_deadlines_fire_at_the_next_expire_and_far_ones_come_back_early() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut due = Vec::new();
        w.expire(t0 + ms(1000), &mut due);
        let tick = w.insert(1u32, t0);
        assert_eq!(tick, 21, "not before the cursor");
        w.expire(t0 + ms(1050), &mut due);
        assert_eq!(due, vec![(1, 21)]);
        due.clear();
        // An hour away: clamped to the horizon, comes back after ~102 s for re-arming.
        let far = w.insert(2u32, t0 + Duration::from_secs(3600));
        assert_eq!(far, 22 + SLOTS as Tick - 1);
        w.expire(t0 + Duration::from_secs(100), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_secs(105), &mut due);
        assert_eq!(due, vec![(2, far)]);
    }

    #[test]
    fn many_entries_across_wraps() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut fired = Vec::new();
        let mut due = Vec::new();
        for i in 0..10_000u64 {
            w.insert(i, t0 + ms(i * 37 % 250_000));
        }
        let mut now = t0;
        while !w.is_empty() {
            now += ms(333);
            w.expire(now, &mut due);
            for &(k, tick) in &due {
                let at = t0 + ms(k * 37 % 250_000);
                // Fired no earlier than due, unless clamped at insertion (then before `at`).
                assert!(now >= at || tick == SLOTS as Tick - 1, "{k} fired early");
                fired.push(k);
            }
            due.clear();
            assert!(now < t0 + Duration::from_secs(400), "wheel never emptied");
        }
        // Clamped entries fired once; re-arming is the caller's job, so every key fired once.
        fired.sort_unstable();
        assert_eq!(fired, (0..10_000).collect::<Vec<_>>());
    }
}
