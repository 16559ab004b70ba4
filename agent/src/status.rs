//! The one status an agent says about its host, and how it is rendered for HAProxy.
//!
//! `Status` is the heart of the product (design.md, "The status model"): the same value
//! is rendered to HAProxy's agent-check protocol here and reported to overwatch
//! (`daemon`), in the one vocabulary of `opengslb_proto::status`.

pub use opengslb_proto::status::{Admin, Health};

/// The weight HAProxy applies, as a percentage of the server's configured weight.
///
/// Always within 1..=100: CPU load alone never drains a node (a weight of 0 would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeightPct(u8);

impl WeightPct {
    /// Full weight.
    pub const MAX: WeightPct = WeightPct(100);
    /// The floor: the lowest weight CPU load can produce.
    pub const MIN: WeightPct = WeightPct(1);

    /// Clamps any percentage into 1..=100.
    pub fn clamped(pct: u64) -> WeightPct {
        // The clamp makes the narrowing cast lossless.
        WeightPct(pct.clamp(1, 100) as u8)
    }

    /// The percentage, 1..=100.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// Everything the agent says about one backend at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Status {
    /// Weight from CPU idleness over the timeframe.
    pub weight: WeightPct,
    /// Ready, drain or maint.
    pub admin: Admin,
    /// Up/down from local health checks, if any are configured.
    pub health: Health,
}

impl Status {
    /// Renders the agent-check reply line, newline included.
    ///
    /// Without health checks the line is byte-for-byte `haproxy_agent`'s
    /// `"{pct}% {state}\n"`. With them, `up` or `down` follows; a down reason goes after
    /// ` #`, which HAProxy shows as the agent description (it needs the space before `#`,
    /// see reference/haproxy-agent-check.md).
    pub fn render(&self) -> String {
        let mut line = format!("{}% {}", self.weight.get(), self.admin);
        match &self.health {
            Health::Unchecked => {}
            Health::Up => line.push_str(" up"),
            Health::Down(reason) => {
                line.push_str(" down");
                let reason = one_line(reason);
                if !reason.is_empty() {
                    line.push_str(" #");
                    line.push_str(&reason);
                }
            }
        }
        line.push('\n');
        line
    }
}

/// HAProxy reads exactly one line, so a reason must not contain a line end; it is also
/// kept short and printable so that it fits HAProxy's agent description.
fn one_line(reason: &str) -> String {
    const MAX_REASON: usize = 200;
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(weight: u64, admin: Admin, health: Health) -> Status {
        Status {
            weight: WeightPct::clamped(weight),
            admin,
            health,
        }
    }

    #[test]
    fn renders_like_haproxy_agent_without_health_checks() {
        assert_eq!(
            status(98, Admin::Ready, Health::Unchecked).render(),
            "98% ready\n"
        );
        assert_eq!(
            status(1, Admin::Drain, Health::Unchecked).render(),
            "1% drain\n"
        );
        assert_eq!(
            status(100, Admin::Maint, Health::Unchecked).render(),
            "100% maint\n"
        );
    }

    #[test]
    fn renders_up_and_down_with_reason_after_space_hash() {
        assert_eq!(
            status(75, Admin::Ready, Health::Up).render(),
            "75% ready up\n"
        );
        assert_eq!(
            status(75, Admin::Ready, Health::Down("http 503".into())).render(),
            "75% ready down #http 503\n"
        );
        assert_eq!(
            status(75, Admin::Drain, Health::Down(String::new())).render(),
            "75% drain down\n"
        );
    }

    #[test]
    fn a_reason_can_never_end_the_line_early() {
        let line = status(50, Admin::Ready, Health::Down("a\r\nb\tc\n".into())).render();
        assert_eq!(line, "50% ready down #a  b c\n");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.contains('\r'));
    }

    #[test]
    fn long_reasons_are_cut() {
        let line = status(50, Admin::Ready, Health::Down("x".repeat(10_000))).render();
        assert!(line.len() < 250, "{} bytes", line.len());
    }

    #[test]
    fn weight_is_clamped_to_1_through_100() {
        assert_eq!(WeightPct::clamped(0).get(), 1);
        assert_eq!(WeightPct::clamped(1).get(), 1);
        assert_eq!(WeightPct::clamped(100).get(), 100);
        assert_eq!(WeightPct::clamped(u64::MAX).get(), 100);
    }
}
