//! CPU idleness from `/proc/stat` (Linux) or `GetSystemTimes` (Windows), as a weight over
//! a sliding timeframe.
//!
//! Pure arithmetic on samples; reading them is [`CpuSource::read`]'s business, the one
//! place that touches the system.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::status::WeightPct;

/// Cumulative CPU time of all CPUs: clock ticks (USER_HZ) from the aggregate `cpu` line of
/// `/proc/stat`, or 100 ns units from `GetSystemTimes`. Only ratios of differences are
/// used, so the unit does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// All time that counts: user + nice + system + idle + iowait + irq + softirq + steal.
    pub total: u64,
    /// Time a new request could have used: idle + iowait.
    pub idle: u64,
}

/// Where CPU times come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSource {
    /// `/proc/stat`, or a file in its format (tests, on every platform).
    ProcStat(PathBuf),
    /// The system's `GetSystemTimes`.
    #[cfg(windows)]
    SystemTimes,
}

impl CpuSource {
    /// This platform's own source: `/proc/stat` on Linux, `GetSystemTimes` on Windows.
    pub fn system() -> CpuSource {
        #[cfg(windows)]
        return CpuSource::SystemTimes;
        #[cfg(not(windows))]
        CpuSource::ProcStat(PathBuf::from("/proc/stat"))
    }

    /// One sample of the cumulative times.
    pub fn read(&self) -> Result<CpuTimes, CpuError> {
        match self {
            CpuSource::ProcStat(path) => read_proc_stat(path),
            #[cfg(windows)]
            CpuSource::SystemTimes => crate::platform::windows::system_times(),
        }
    }
}

/// Why CPU times could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has no aggregate `cpu` line with at least the four classic fields.
    #[error("{path}: no aggregate \"cpu\" line with user, nice, system and idle times")]
    Format {
        /// The file.
        path: String,
    },
    /// The system call failed.
    #[error("{call}: {source}")]
    System {
        /// The call.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The aggregate line's fields in kernel order (proc(5)); guest and guest_nice are
/// already included in user and nice, so they are not added again.
const FIELDS_IN_TOTAL: usize = 8;

/// Parses the aggregate `cpu ` line of `/proc/stat` text. Missing trailing fields
/// (very old kernels) count as zero; at least user, nice, system and idle are needed.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let mut fields = [0u64; FIELDS_IN_TOTAL];
    let mut seen = 0;
    for (slot, word) in fields.iter_mut().zip(line.split_ascii_whitespace().skip(1)) {
        *slot = word.parse().ok()?;
        seen += 1;
    }
    if seen < 4 {
        return None;
    }
    let [_user, _nice, _system, idle, iowait, ..] = fields;
    Some(CpuTimes {
        total: fields.iter().fold(0u64, |acc, v| acc.saturating_add(*v)),
        idle: idle.saturating_add(iowait),
    })
}

/// Reads and parses `/proc/stat` (or a file in its format).
pub fn read_proc_stat(path: &Path) -> Result<CpuTimes, CpuError> {
    let text = std::fs::read_to_string(path).map_err(|source| CpuError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_proc_stat(&text).ok_or_else(|| CpuError::Format {
        path: path.display().to_string(),
    })
}

/// The weight between two samples: floor(100 − busy %) = floor(100 × Δidle / Δtotal),
/// clamped to 1..=100. `None` when no tick elapsed (or the counters went backwards, as
/// after CPU hot-unplug), because then nothing can be said.
pub fn weight_between(older: CpuTimes, newer: CpuTimes) -> Option<WeightPct> {
    let total = newer.total.checked_sub(older.total)?;
    let idle = newer.idle.checked_sub(older.idle)?;
    if total == 0 || idle > total {
        return None;
    }
    // u128: 100 × a tick counter cannot overflow.
    let pct = (u128::from(idle) * 100 / u128::from(total)) as u64;
    Some(WeightPct::clamped(pct))
}

/// Samples taken every `step`, kept for one `timeframe`, so that the weight always covers
/// the last timeframe yet refreshes every step (haproxy_agent refreshed once per timeframe).
#[derive(Debug)]
pub struct CpuWindow {
    timeframe: Duration,
    samples: VecDeque<(Instant, CpuTimes)>,
}

impl CpuWindow {
    /// Samples per timeframe: the weight refreshes this many times per timeframe.
    pub const STEPS_PER_TIMEFRAME: u32 = 10;

    /// An empty window over `timeframe`.
    pub fn new(timeframe: Duration) -> Self {
        CpuWindow {
            timeframe,
            samples: VecDeque::with_capacity(Self::STEPS_PER_TIMEFRAME as usize + 2),
        }
    }

    /// How often to sample: a tenth of the timeframe, at least 10 ms (one USER_HZ tick,
    /// the resolution of `/proc/stat`) and at most 1 s.
    pub fn step(&self) -> Duration {
        (self.timeframe / Self::STEPS_PER_TIMEFRAME)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Adds a sample and returns the weight over the window (the last timeframe, or the
    /// time since the first sample while the window is still filling).
    pub fn push(&mut self, at: Instant, times: CpuTimes) -> Option<WeightPct> {
        self.samples.push_back((at, times));
        // Keep the newest sample that is at least one timeframe old as the window start.
        while self.samples.len() > 2 {
            let second = self.samples[1].0;
            if at.saturating_duration_since(second) >= self.timeframe {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let (_, oldest) = *self.samples.front()?;
        weight_between(oldest, times)
    }

    /// CPU busy percentage over the window (unclamped, for predictive thresholds).
    pub fn busy_pct(&self) -> Option<f64> {
        let (_, old) = *self.samples.front()?;
        let (_, new) = *self.samples.back()?;
        let total = new.total.checked_sub(old.total).filter(|t| *t > 0)?;
        let idle = new.idle.checked_sub(old.idle)?.min(total);
        Some(100.0 * (total - idle) as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  856 10 1079 30100 136 5 13 12 7 3\n\
                        cpu0 428 5 540 15050 68 2 6 6 3 1\n\
                        intr 1234 0 0\n";

    fn times(total: u64, idle: u64) -> CpuTimes {
        CpuTimes { total, idle }
    }

    #[test]
    fn parses_the_aggregate_line_without_double_counting_guests() {
        let t = parse_proc_stat(STAT).expect("parse");
        assert_eq!(t.total, 856 + 10 + 1079 + 30100 + 136 + 5 + 13 + 12);
        assert_eq!(t.idle, 30100 + 136);
    }

    #[test]
    fn accepts_old_kernels_with_four_fields_and_rejects_garbage() {
        assert_eq!(
            parse_proc_stat("cpu 1 2 3 4\n"),
            Some(times(10, 4)),
            "four fields"
        );
        assert_eq!(parse_proc_stat("cpu 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None, "no aggregate line");
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn weight_is_floor_of_idle_share() {
        // 400 ticks, 100 busy → 75 %.
        assert_eq!(
            weight_between(times(1000, 800), times(1400, 1100)).map(WeightPct::get),
            Some(75)
        );
        // 3 ticks, 1 busy → 66.67 % idle → 66 (floor, as haproxy_agent).
        assert_eq!(
            weight_between(times(0, 0), times(3, 2)).map(WeightPct::get),
            Some(66)
        );
        // Fully idle.
        assert_eq!(
            weight_between(times(0, 0), times(200, 200)).map(WeightPct::get),
            Some(100)
        );
    }

    #[test]
    fn a_fully_busy_cpu_never_drains_the_node() {
        assert_eq!(
            weight_between(times(0, 0), times(500, 0)).map(WeightPct::get),
            Some(1)
        );
    }

    #[test]
    fn no_elapsed_ticks_or_counters_going_backwards_say_nothing() {
        assert_eq!(weight_between(times(10, 5), times(10, 5)), None);
        assert_eq!(weight_between(times(10, 5), times(9, 5)), None);
        assert_eq!(weight_between(times(10, 5), times(20, 4)), None);
        assert_eq!(weight_between(times(10, 5), times(20, 16)), None);
    }

    #[test]
    fn step_is_a_tenth_of_the_timeframe_within_bounds() {
        assert_eq!(
            CpuWindow::new(Duration::from_millis(2000)).step(),
            Duration::from_millis(200)
        );
        assert_eq!(
            CpuWindow::new(Duration::from_millis(20)).step(),
            Duration::from_millis(10)
        );
        assert_eq!(
            CpuWindow::new(Duration::from_secs(600)).step(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn window_covers_the_last_timeframe_only() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = CpuWindow::new(Duration::from_millis(1000));
        assert_eq!(w.push(ms(0), times(0, 0)), None, "one sample says nothing");
        // First 500 ms fully busy.
        assert_eq!(w.push(ms(500), times(100, 0)).map(WeightPct::get), Some(1));
        // Next 500 ms fully idle: the window now spans both halves → 50 %.
        assert_eq!(
            w.push(ms(1000), times(200, 100)).map(WeightPct::get),
            Some(50)
        );
        // Another idle 500 ms: the busy half has left the window → 100 %.
        assert_eq!(
            w.push(ms(1500), times(300, 200)).map(WeightPct::get),
            Some(100)
        );
        assert!(w.samples.len() <= 3, "old samples are dropped");
        assert_eq!(w.busy_pct(), Some(0.0));
    }

    #[test]
    fn window_stays_bounded_over_many_steps() {
        let t0 = Instant::now();
        let mut w = CpuWindow::new(Duration::from_millis(2000));
        for i in 0..10_000u64 {
            w.push(t0 + Duration::from_millis(200 * i), times(100 * i, 50 * i));
        }
        assert!(w.samples.len() <= CpuWindow::STEPS_PER_TIMEFRAME as usize + 1);
    }

    #[test]
    fn reads_this_systems_cpu_times_and_they_advance() {
        // /proc/stat on Linux, GetSystemTimes on Windows (these tests also run there).
        let source = CpuSource::system();
        let first = source.read().expect("the system's CPU times");
        assert!(first.total > 0 && first.idle <= first.total, "{first:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let later = loop {
            let later = source.read().expect("again");
            if later.total > first.total || Instant::now() > deadline {
                break later;
            }
            std::hint::black_box((0..100_000u64).sum::<u64>());
        };
        assert!(later.total > first.total, "{first:?} then {later:?}");
        assert!(later.idle >= first.idle && later.idle <= later.total);
    }

    #[test]
    fn read_errors_name_the_file() {
        let err = read_proc_stat(Path::new("/nonexistent/stat")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/stat"), "{err}");
    }
}
