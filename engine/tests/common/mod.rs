//! What the engine's story tests share: the seeds a story runs, one madsim
//! runtime per seed on its own thread, and agents (client nodes that run
//! the jobs a story hands them, with a client of the service under test).
#![allow(dead_code)] // each test crate uses its own part of it

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sim::topology::NodeId;
use sim::world::{NodeCtx, World};
use tokio::sync::{mpsc, oneshot};

/// The seeds every story runs: 1..=3, or `VAR=a-b` for a sweep (e.g.
/// `STREAM_SEEDS=1-200 cargo test -p engine --test stream`).
pub fn seeds(var: &str) -> Vec<u64> {
    match std::env::var(var) {
        Ok(r) => {
            let (a, b) = r.split_once('-').unwrap_or((&r, &r));
            let parse = |s: &str, what: &str| s.parse().unwrap_or_else(|_| panic!("{var}: {what} `{s}` is not a number"));
            (parse(a, "start")..=parse(b, "end")).collect()
        }
        Err(_) => vec![1, 2, 3],
    }
}

/// Runs `f` in a fresh madsim runtime seeded with `seed`; a failure names
/// the variable that replays it.
pub fn run<F: Future<Output = ()> + 'static>(seed: u64, var: &str, f: impl FnOnce() -> F + Send + 'static) {
    let var = var.to_string();
    std::thread::spawn(move || madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(f()))
        .join()
        .unwrap_or_else(|_| panic!("seed {seed} failed (replay: {var}={seed})"));
}

type BoxFut = Pin<Box<dyn Future<Output = ()>>>;
type Job<C> = Box<dyn FnOnce(C) -> BoxFut + Send>;

/// A client node that runs the jobs it is handed, each in its own task.
pub struct Agent<C> {
    tx: mpsc::UnboundedSender<Job<C>>,
}

impl<C> Clone for Agent<C> {
    fn clone(&self) -> Self {
        Agent { tx: self.tx.clone() }
    }
}

impl<C: Clone + 'static> Agent<C> {
    /// Starts an agent on `node`: each incarnation binds its client with
    /// `bind`, then runs jobs. The job queue outlives the node's crashes
    /// (each incarnation takes its lock; a crash drops the task holding it).
    pub fn start<B, BF>(world: &World, node: NodeId, bind: B) -> Agent<C>
    where
        C: Send,
        B: Fn(NodeCtx) -> BF + Clone + Send + Sync + 'static,
        BF: Future<Output = C> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Job<C>>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        world.start_node(node, move |ctx| {
            let (rx, bind) = (rx.clone(), bind.clone());
            async move {
                let mut rx = rx.lock_owned().await;
                let client = bind(ctx).await;
                while let Some(job) = rx.recv().await {
                    madsim::task::spawn_local(job(client.clone()));
                }
            }
        });
        Agent { tx }
    }

    /// Starts `f` on the agent now; its result arrives on the receiver.
    pub fn start_job<T, F, Fut>(&self, f: F) -> oneshot::Receiver<T>
    where
        T: Send + 'static,
        F: FnOnce(C) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job<C> = Box::new(move |c| {
            Box::pin(async move {
                let _ = tx.send(f(c).await);
            })
        });
        self.tx.send(job).expect("agent alive");
        rx
    }

    /// Runs `f` on the agent and waits for its result.
    pub async fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(C) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.start_job(f).await.expect("agent answered")
    }
}
