//! The benchmark runs end to end at a small size and its figures are sane.

#[test]
fn bench_runs_with_ten_thousand_keys() {
    let f = engine::lsm::bench::bench(10_000);
    eprint!("{f}");
    assert!(f.writes_per_wall_sec > 0.0 && f.point_reads_per_wall_sec > 0.0 && f.scans_100_per_wall_sec > 0.0);
    assert!(f.write_amplification >= 1.0, "every byte is written at least once");
    assert!(f.group_commit_mean_batches > 1.0, "group commit serves concurrent writers together");
    assert_eq!(f.recovery.len(), 3);
    assert!(f.recovery.windows(2).all(|w| w[0].wal_bytes < w[1].wal_bytes));
    assert!(f.memory_bytes_per_partition > 0);
}
