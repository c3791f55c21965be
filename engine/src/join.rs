//! Awaiting several futures of one task at once, without spawning: they may
//! borrow, and the task's own poll order stays the simulation's.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Awaits every future (all polled in turn on each wake-up); the results
/// in the futures' order.
pub async fn join_all<T, F: Future<Output = T>>(futs: Vec<F>) -> Vec<T> {
    let mut pinned: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, r) in pinned.iter_mut().zip(results.iter_mut()) {
            if r.is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                Poll::Ready(v) => *r = Some(v),
                Poll::Pending => all = false,
            }
        }
        if all {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    results.into_iter().map(|v| v.expect("every future finished")).collect()
}
