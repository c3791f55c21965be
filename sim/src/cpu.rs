//! A simulated CPU per node: the capacity that load uses up.
//!
//! # Model
//!
//! - A node has `cores` identical cores. Work costs model CPU time, charged
//!   by the engine where the work happens ([`Cpu::run`]); the caller waits
//!   until its work has run, so a busy node answers late.
//! - **Data work** (requests and what they cause) queues first come, first
//!   served for the core that frees first. At most `queue_max` jobs wait,
//!   and none would wait longer than `wait_max`; past either a job is
//!   refused at once with [`CpuBusy`] and has cost nothing, so the caller
//!   can answer "server busy" with no effect (admission control instead of
//!   a queue that grows without bound, and of requests served after their
//!   sender gave up on them: the work of congestion collapse).
//! - **Control work** (heartbeats, lease renewals, grants, Raft) runs on
//!   its own lane ([`Cpu::run_control`]): it never waits behind data work,
//!   as if the scheduler gave it priority and preempted data work for its
//!   few microseconds; it is counted in the utilisation but takes no time
//!   from the data lane's cores. So control traffic is never stuck behind
//!   a backlog of requests.
//! - **Gray failure**: [`Cpu::set_speed`] runs the node at a fraction of its
//!   speed (every cost divided by it), the CPU's fail-slow.
//! - A crash ([`Cpu::crash`]) forgets the queue: the work of the killed
//!   processes is gone.
//!
//! Deterministic: no randomness, and the order jobs start in is the order
//! [`Cpu::run`] was called in. Cheap: a job is one timer, and a job of no
//! cost is none.
//!
//! What it measures ([`CpuStats`]): busy time per second of model time on
//! each lane, the longest run queue seen in each second, jobs run and
//! refused.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::time::{self, SimTime};

/// Seconds of per-second statistics one CPU keeps (a day of model time).
pub const CPU_STATS_SECONDS_MAX: u64 = 86_400;
/// The largest run queue a scenario may configure.
pub const CPU_QUEUE_MAX_LIMIT: u32 = 1 << 20;
/// The most cores a node may have.
pub const CPU_CORES_MAX: u32 = 1024;

/// A node's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuConfig {
    pub cores: u32,
    /// Data jobs that may wait for a core; one more is refused.
    pub queue_max: u32,
    /// The longest a data job may wait for a core; one that would wait
    /// longer is refused.
    pub wait_max: Duration,
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig { cores: 4, queue_max: 1024, wait_max: Duration::from_millis(50) }
    }
}

/// A data job refused because the run queue was full; it cost nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cpu busy: {waiting} jobs waiting for {cores} cores")]
pub struct CpuBusy {
    pub waiting: u32,
    pub cores: u32,
}

/// One second of model time on one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuSecond {
    /// Core-nanoseconds of data work that ran in this second.
    pub data_ns: u64,
    /// Nanoseconds of control work that ran in this second.
    pub control_ns: u64,
    /// The longest run queue (data jobs waiting) seen in this second.
    pub queue_max: u32,
    pub refused: u64,
}

/// What a CPU did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuStats {
    pub cores: u32,
    pub jobs: u64,
    pub control_jobs: u64,
    pub refused: u64,
    /// By second of model time (the second's index).
    pub seconds: BTreeMap<u64, CpuSecond>,
}

impl CpuStats {
    /// Data-lane utilisation of second `s`, 0 to 1.
    pub fn utilisation(&self, s: u64) -> f64 {
        let busy = self.seconds.get(&s).map_or(0, |x| x.data_ns);
        busy as f64 / (1e9 * f64::from(self.cores.max(1)))
    }
}

#[derive(Debug)]
pub struct CpuState {
    cfg: CpuConfig,
    /// Per mille of full speed (1000 = healthy).
    speed_permille: u32,
    /// When each core is free again.
    cores: Vec<SimTime>,
    control_until: SimTime,
    /// Start times of data jobs admitted and not yet started, in order.
    waiting: VecDeque<SimTime>,
    /// Totals of [`CpuStats`]; its seconds are kept in `seconds`.
    stats: CpuStats,
    /// Per second of model time, indexed by the second (dense: a lookup
    /// per job, where a map would search); `None` for a second no job
    /// touched, which [`CpuState::stats`] leaves out as before.
    seconds: Vec<Option<CpuSecond>>,
    /// Jobs run below full speed (the proof a slowdown fired).
    slowed_jobs: u64,
}

impl CpuState {
    pub fn new(cfg: CpuConfig) -> CpuState {
        let cores = cfg.cores.clamp(1, CPU_CORES_MAX);
        CpuState {
            cfg: CpuConfig { cores, queue_max: cfg.queue_max.min(CPU_QUEUE_MAX_LIMIT), wait_max: cfg.wait_max },
            speed_permille: 1000,
            cores: vec![SimTime::ZERO; cores as usize],
            control_until: SimTime::ZERO,
            waiting: VecDeque::new(),
            stats: CpuStats { cores, ..CpuStats::default() },
            seconds: Vec::new(),
            slowed_jobs: 0,
        }
    }

    fn scaled(&mut self, cost: Duration) -> Duration {
        if self.speed_permille < 1000 {
            self.slowed_jobs += 1;
        }
        let ns = u64::try_from(cost.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(ns.saturating_mul(1000) / u64::from(self.speed_permille.max(1)))
    }

    fn second(&mut self, s: u64) -> Option<&mut CpuSecond> {
        if s >= CPU_STATS_SECONDS_MAX {
            return None;
        }
        let i = s as usize;
        if i >= self.seconds.len() {
            self.seconds.resize(i + 1, None);
        }
        Some(self.seconds[i].get_or_insert_with(CpuSecond::default))
    }

    /// Adds `[start, end)` of busy time to the seconds it spans.
    fn account(&mut self, start: SimTime, end: SimTime, control: bool) {
        let (mut at, end) = (start.as_nanos(), end.as_nanos());
        while at < end {
            let s = at / 1_000_000_000;
            let upto = ((s + 1) * 1_000_000_000).min(end);
            if let Some(sec) = self.second(s) {
                if control {
                    sec.control_ns += upto - at;
                } else {
                    sec.data_ns += upto - at;
                }
            }
            at = upto;
        }
    }

    /// Reserves a core for a data job of `cost` issued at `now`: when it
    /// finishes, or why it was refused.
    pub fn admit(&mut self, now: SimTime, cost: Duration) -> Result<SimTime, CpuBusy> {
        let waiting = self.waiting(now);
        let free = self.cores.iter().copied().min().expect("at least one core");
        if free > now && (waiting >= self.cfg.queue_max || free.saturating_sub(now) > self.cfg.wait_max) {
            self.stats.refused += 1;
            if let Some(sec) = self.second(now.as_nanos() / 1_000_000_000) {
                sec.refused += 1;
            }
            return Err(CpuBusy { waiting, cores: self.cfg.cores });
        }
        Ok(self.admit_always(now, cost))
    }

    /// Reserves a core for a data job that cannot be refused (work the node
    /// owes already, such as a storage node's group of appends): it waits
    /// its turn like any data job but is admitted whatever the queue.
    pub fn admit_always(&mut self, now: SimTime, cost: Duration) -> SimTime {
        while self.waiting.front().is_some_and(|&s| s <= now) {
            self.waiting.pop_front();
        }
        let (i, &free) = self.cores.iter().enumerate().min_by_key(|&(i, t)| (*t, i)).expect("at least one core");
        let start = free.max(now);
        let end = start + self.scaled(cost);
        self.cores[i] = end;
        if start > now {
            self.waiting.push_back(start);
        }
        self.stats.jobs += 1;
        let q = self.waiting.len() as u32;
        if let Some(sec) = self.second(now.as_nanos() / 1_000_000_000) {
            sec.queue_max = sec.queue_max.max(q);
        }
        self.account(start, end, false);
        end
    }

    /// Schedules a control job of `cost` issued at `now`: when it finishes.
    pub fn admit_control(&mut self, now: SimTime, cost: Duration) -> SimTime {
        let start = self.control_until.max(now);
        let end = start + self.scaled(cost);
        self.control_until = end;
        self.stats.control_jobs += 1;
        self.account(start, end, true);
        end
    }

    /// Data jobs admitted and not yet started at `now`.
    pub fn waiting(&mut self, now: SimTime) -> u32 {
        while self.waiting.front().is_some_and(|&s| s <= now) {
            self.waiting.pop_front();
        }
        self.waiting.len() as u32
    }

    pub fn set_speed(&mut self, permille: u32) {
        self.speed_permille = permille.clamp(1, 1000);
    }

    pub fn slowed_jobs(&self) -> u64 {
        self.slowed_jobs
    }

    pub fn speed_permille(&self) -> u32 {
        self.speed_permille
    }

    /// The processes died: their queued and running work is gone.
    pub fn crash(&mut self, now: SimTime) {
        for c in &mut self.cores {
            *c = (*c).min(now);
        }
        self.control_until = self.control_until.min(now);
        self.waiting.clear();
    }

    pub fn stats(&self) -> CpuStats {
        let seconds = self.seconds.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i as u64, s))).collect();
        CpuStats { seconds, ..self.stats.clone() }
    }
}

/// A node's CPU as its code sees it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cpu {
    state: Arc<Mutex<CpuState>>,
}

impl Cpu {
    pub(crate) fn new(state: Arc<Mutex<CpuState>>) -> Cpu {
        Cpu { state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CpuState> {
        self.state.lock().expect("cpu lock")
    }

    /// Runs `cost` of data work: waits for a core and for the work to run.
    /// Refused at once, at no cost, when the run queue is full.
    pub async fn run(&self, cost: Duration) -> Result<(), CpuBusy> {
        if cost.is_zero() {
            return Ok(());
        }
        let end = self.lock().admit(time::now(), cost)?;
        time::sleep_until(end).await;
        Ok(())
    }

    /// Reserves `cost` of data work now without waiting: when it will have
    /// run (the caller waits until then), or a refusal at no cost.
    pub fn reserve(&self, cost: Duration) -> Result<SimTime, CpuBusy> {
        let now = time::now();
        if cost.is_zero() {
            return Ok(now);
        }
        self.lock().admit(now, cost)
    }

    /// Runs `cost` of data work that cannot be refused (see
    /// [`CpuState::admit_always`]); its caller bounds how much it issues.
    pub async fn run_always(&self, cost: Duration) {
        if cost.is_zero() {
            return;
        }
        let end = self.lock().admit_always(time::now(), cost);
        time::sleep_until(end).await;
    }

    /// Runs `cost` of control work, which never waits behind data work.
    pub async fn run_control(&self, cost: Duration) {
        if cost.is_zero() {
            return;
        }
        let end = self.lock().admit_control(time::now(), cost);
        time::sleep_until(end).await;
    }

    /// Data jobs waiting for a core now.
    pub fn waiting(&self) -> u32 {
        self.lock().waiting(time::now())
    }

    /// Whether a data job issued now would be refused.
    pub fn full(&self) -> bool {
        let mut s = self.lock();
        let now = time::now();
        let q = s.waiting(now);
        q >= s.cfg.queue_max && s.cores.iter().all(|&t| t > now)
    }

    pub fn stats(&self) -> CpuStats {
        self.lock().stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn at(n: u64) -> SimTime {
        SimTime(n * 1_000_000)
    }

    #[test]
    fn jobs_run_first_come_first_served_on_the_core_that_frees_first() {
        let mut c = CpuState::new(CpuConfig { cores: 2, queue_max: 10, wait_max: Duration::from_secs(10) });
        assert_eq!(c.admit(at(0), ms(10)), Ok(at(10)));
        assert_eq!(c.admit(at(0), ms(4)), Ok(at(4)));
        // Both cores busy: the next job waits for the one free at 4 ms.
        assert_eq!(c.admit(at(1), ms(3)), Ok(at(7)));
        assert_eq!(c.waiting(at(1)), 1);
        assert_eq!(c.admit(at(1), ms(1)), Ok(at(8)));
        assert_eq!(c.waiting(at(1)), 2);
        assert_eq!(c.waiting(at(5)), 1, "the job that started at 4 ms left the queue");
        assert_eq!(c.waiting(at(7)), 0);
    }

    #[test]
    fn a_full_queue_refuses_at_no_cost() {
        let mut c = CpuState::new(CpuConfig { cores: 1, queue_max: 2, wait_max: Duration::from_secs(10) });
        assert!(c.admit(at(0), ms(10)).is_ok());
        assert!(c.admit(at(0), ms(10)).is_ok());
        assert!(c.admit(at(0), ms(10)).is_ok());
        let before = c.cores.clone();
        assert_eq!(c.admit(at(0), ms(10)), Err(CpuBusy { waiting: 2, cores: 1 }));
        assert_eq!(c.cores, before, "a refused job reserved nothing");
        assert_eq!(c.stats().refused, 1);
        // Once the first queued job starts, there is room again.
        assert_eq!(c.admit(at(10), ms(1)), Ok(at(31)));
    }

    #[test]
    fn a_job_that_would_wait_too_long_is_refused() {
        let mut c = CpuState::new(CpuConfig { cores: 1, queue_max: 100, wait_max: ms(5) });
        assert_eq!(c.admit(at(0), ms(4)), Ok(at(4)));
        assert_eq!(c.admit(at(0), ms(2)), Ok(at(6)), "waits 4 ms");
        assert_eq!(c.admit(at(0), ms(2)), Err(CpuBusy { waiting: 1, cores: 1 }), "would wait 6 ms");
        assert_eq!(c.admit(at(2), ms(2)), Ok(at(8)), "now it would wait 4 ms");
    }

    #[test]
    fn control_work_never_waits_behind_data_work() {
        let mut c = CpuState::new(CpuConfig { cores: 1, queue_max: 100, wait_max: Duration::from_secs(10) });
        for _ in 0..50 {
            c.admit(at(0), ms(10)).unwrap();
        }
        assert_eq!(c.admit_control(at(0), Duration::from_micros(20)), SimTime(20_000));
        assert_eq!(c.admit_control(at(0), Duration::from_micros(20)), SimTime(40_000), "control jobs queue among themselves");
        assert_eq!(c.admit(at(0), ms(1)), Ok(at(501)), "and take no time from the data lane");
    }

    #[test]
    fn a_slow_cpu_takes_longer_and_a_crash_forgets_the_queue() {
        let mut c = CpuState::new(CpuConfig { cores: 1, queue_max: 100, wait_max: Duration::from_secs(10) });
        c.set_speed(200);
        assert_eq!(c.admit(at(0), ms(2)), Ok(at(10)));
        assert_eq!(c.admit(at(0), ms(2)), Ok(at(20)));
        c.crash(at(1));
        assert_eq!(c.waiting(at(1)), 0);
        c.set_speed(1000);
        assert_eq!(c.admit(at(1), ms(2)), Ok(at(3)));
    }

    #[test]
    fn busy_time_is_split_over_the_seconds_it_spans() {
        let mut c = CpuState::new(CpuConfig { cores: 2, queue_max: 100, wait_max: Duration::from_secs(10) });
        c.admit(SimTime(900_000_000), ms(300)).unwrap();
        c.admit_control(SimTime(999_000_000), ms(2));
        let s = c.stats();
        assert_eq!(s.seconds[&0].data_ns, 100_000_000);
        assert_eq!(s.seconds[&1].data_ns, 200_000_000);
        assert_eq!((s.seconds[&0].control_ns, s.seconds[&1].control_ns), (1_000_000, 1_000_000));
        assert!((s.utilisation(1) - 0.1).abs() < 1e-9, "{}", s.utilisation(1));
    }
}
