//! Status conditions as the Gateway API names them, with stable
//! `lastTransitionTime`s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition before it is stamped with generation and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Cond {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn ok(type_: &'static str, reason: &'static str) -> Self {
        Cond::new(type_, true, reason, "")
    }
}

/// Stamps conditions. A condition whose status did not change keeps the
/// `lastTransitionTime` it had in `previous`; a new or flipped one gets `now`.
pub fn stamp(
    conds: Vec<Cond>,
    generation: Option<i64>,
    previous: Option<&[Condition]>,
    now: &Time,
) -> Vec<Condition> {
    conds
        .into_iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_string();
            let last = previous
                .and_then(|p| p.iter().find(|o| o.type_ == c.type_ && o.status == status))
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.to_string(),
                message: c.message,
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn keeps_transition_time_until_status_flips() {
        let first = stamp(
            vec![Cond::ok("Accepted", "Accepted")],
            Some(1),
            None,
            &t(10),
        );
        assert_eq!(first[0].last_transition_time, t(10));
        assert_eq!(first[0].observed_generation, Some(1));
        let same = stamp(
            vec![Cond::ok("Accepted", "Accepted")],
            Some(2),
            Some(&first),
            &t(20),
        );
        assert_eq!(same[0].last_transition_time, t(10));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = stamp(
            vec![Cond::new("Accepted", false, "Invalid", "x")],
            Some(3),
            Some(&same),
            &t(30),
        );
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert_eq!(flipped[0].status, "False");
    }
}
