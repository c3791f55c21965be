//! Per-node clocks.
//!
//! madsim has one global clock. Each simulated node instead reads a clock
//! with its own offset and drift (set by the clock-offset and clock-drift
//! fault verbs): `local(t) = anchor_local + (t - anchor_true) * (1 + ppm/1e6)`.
//! Changing the offset or the drift re-anchors at the current instant, so a
//! drift change never makes the clock jump; an offset change is a jump (a
//! negative one goes backwards, as a stepped NTP clock can). Local times
//! below zero read as zero.

use std::time::Duration;

use crate::time::{self, SimTime};
use crate::topology::NodeId;
use crate::world::World;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockState {
    anchor_true: u64,
    anchor_local: i64,
    drift_ppm: i64,
}

impl ClockState {
    pub fn local(&self, t: SimTime) -> i64 {
        let dt = t.0.saturating_sub(self.anchor_true) as i128;
        let scaled = dt * (1_000_000 + self.drift_ppm as i128) / 1_000_000;
        self.anchor_local.saturating_add(scaled as i64)
    }
    fn reanchor(&mut self, t: SimTime) {
        self.anchor_local = self.local(t);
        self.anchor_true = t.0;
    }
    /// Steps the clock so that it reads `t + offset` now.
    pub fn set_offset(&mut self, t: SimTime, offset_ns: i64) {
        self.reanchor(t);
        self.anchor_local = t.0 as i64 + offset_ns;
    }
    /// Changes the rate from now on, without a jump.
    pub fn set_drift(&mut self, t: SimTime, ppm: i64) {
        assert!(ppm > -1_000_000, "a clock cannot run backwards");
        self.reanchor(t);
        self.drift_ppm = ppm;
    }
    pub fn offset_at(&self, t: SimTime) -> i64 {
        self.local(t) - t.0 as i64
    }
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }
}

/// A node's view of time. Engine code reads time only through this.
#[derive(Clone)]
pub struct Clock {
    world: World,
    node: NodeId,
}

impl Clock {
    pub(crate) fn new(world: World, node: NodeId) -> Clock {
        Clock { world, node }
    }

    /// The node's local time.
    pub fn now(&self) -> SimTime {
        let t = time::now();
        let st = self.world.clock_state(self.node);
        let local = st.local(t);
        if local != t.0 as i64 || st.drift_ppm() != 0 {
            self.world.clock_read_moved(self.node);
        }
        SimTime(local.max(0) as u64)
    }

    /// Sleeps until the local clock has advanced by `d` (a fast clock
    /// wakes early in true time, a slow one late).
    pub async fn sleep(&self, d: Duration) {
        let ppm = self.world.clock_state(self.node).drift_ppm();
        if ppm != 0 {
            self.world.clock_read_moved(self.node);
        }
        let true_ns = d.as_nanos() * 1_000_000 / (1_000_000 + ppm) as u128;
        time::sleep(Duration::from_nanos(true_ns as u64)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_drift() {
        let mut c = ClockState::default();
        assert_eq!(c.local(SimTime(1000)), 1000);
        c.set_offset(SimTime(1000), 500);
        assert_eq!(c.local(SimTime(1000)), 1500);
        assert_eq!(c.local(SimTime(2000)), 2500);
        c.set_drift(SimTime(2000), 100_000); // +10 %
        assert_eq!(c.local(SimTime(2000)), 2500, "no jump on a drift change");
        assert_eq!(c.local(SimTime(12000)), 2500 + 11000);
        c.set_offset(SimTime(12000), -20000);
        assert_eq!(c.local(SimTime(12000)), -8000, "a backwards step");
    }
}
