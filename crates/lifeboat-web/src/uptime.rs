//! Each component's recent days for the public page's uptime bars: the worst status of
//! each UTC day and how long the component was down, from its recorded status changes and
//! the incidents that name it.

use lifeboat_control::{ComponentChange, ComponentStatus, Incident};

/// How many days the bars show, today included.
pub const DAYS: usize = 90;
const DAY_US: i64 = 86_400_000_000;

/// One UTC day of a component.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    /// The day's first microsecond.
    pub start_us: i64,
    /// The worst status it had during the day.
    pub worst: ComponentStatus,
    /// Time spent in a partial or major outage (microseconds).
    pub down_us: i64,
}

/// A component's days, oldest first, and its uptime over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Uptime {
    pub component: String,
    pub days: Vec<Day>,
    /// Percent of the time shown (up to now) not in a partial or major outage.
    pub percent: f64,
}

fn rank(status: ComponentStatus) -> u8 {
    match status {
        ComponentStatus::Operational => 0,
        ComponentStatus::UnderMaintenance => 1,
        ComponentStatus::DegradedPerformance => 2,
        ComponentStatus::PartialOutage => 3,
        ComponentStatus::MajorOutage => 4,
    }
}

fn is_down(status: ComponentStatus) -> bool {
    matches!(
        status,
        ComponentStatus::PartialOutage | ComponentStatus::MajorOutage
    )
}

fn time(text: &str) -> Option<i64> {
    lifeboat_core::time::parse(text).ok()
}

/// When `component`'s status changed, in time order: its recorded changes, and what its
/// incidents say, for stores older than the record: each update's change to it, and each
/// resolution that left no other incident naming it open (back to operational).
fn events(
    component: &str,
    changes: &[ComponentChange],
    incidents: &[Incident],
) -> Vec<(i64, ComponentStatus)> {
    let mut events: Vec<(i64, ComponentStatus)> = changes
        .iter()
        .filter(|c| c.component == component)
        .map(|c| (c.at_us, c.status))
        .collect();
    let naming: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.components.iter().any(|c| c == component))
        .collect();
    for incident in &naming {
        for update in &incident.updates {
            for affected in update
                .affected_components
                .iter()
                .filter(|a| a.code == component)
            {
                if let Some(at) = time(&update.created_at) {
                    events.push((at, affected.new_status));
                }
            }
        }
        let Some(resolved) = incident.resolved_at.as_deref().and_then(time) else {
            continue;
        };
        let still_open = naming.iter().any(|other| {
            other.id != incident.id
                && time(&other.started_at).is_some_and(|s| s <= resolved)
                && other
                    .resolved_at
                    .as_deref()
                    .and_then(time)
                    .is_none_or(|r| r > resolved)
        });
        if !still_open {
            events.push((resolved, ComponentStatus::Operational));
        }
    }
    // The same change may be both recorded and on its incident: same time, same status.
    events.sort_by_key(|(at, _)| *at);
    events
}

/// The last `DAYS` UTC days up to `now_us` of each component (by id): its status at each
/// moment is the last change (`events`) before it, operational before the first.
pub fn uptime(
    components: &[String],
    changes: &[ComponentChange],
    incidents: &[Incident],
    now_us: i64,
) -> Vec<Uptime> {
    let first_day = (now_us.div_euclid(DAY_US) - DAYS as i64 + 1) * DAY_US;
    components
        .iter()
        .map(|component| {
            let events = events(component, changes, incidents);
            let mut days: Vec<Day> = (0..DAYS as i64)
                .map(|d| Day {
                    start_us: first_day + d * DAY_US,
                    worst: ComponentStatus::Operational,
                    down_us: 0,
                })
                .collect();
            // Cut the window at every day boundary and every change: each piece has one
            // status.
            let mut cuts: Vec<i64> = (0..=DAYS as i64).map(|d| first_day + d * DAY_US).collect();
            cuts.extend(events.iter().map(|(at, _)| *at));
            cuts.push(now_us);
            cuts.retain(|t| (first_day..=now_us).contains(t));
            cuts.sort_unstable();
            cuts.dedup();
            let mut down_total = 0i64;
            let mut next = 0;
            let mut status = ComponentStatus::Operational;
            for piece in cuts.windows(2) {
                let (from, to) = (piece[0], piece[1]);
                while next < events.len() && events[next].0 <= from {
                    status = events[next].1;
                    next += 1;
                }
                let Some(day) = days.get_mut(((from - first_day) / DAY_US) as usize) else {
                    continue;
                };
                if rank(status) > rank(day.worst) {
                    day.worst = status;
                }
                if is_down(status) {
                    day.down_us += to - from;
                    down_total += to - from;
                }
            }
            let shown = (now_us - first_day).max(1);
            Uptime {
                component: component.clone(),
                days,
                percent: 100.0 * (shown - down_total) as f64 / shown as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_control::{AffectedComponent, Impact, IncidentStatus, IncidentUpdate};

    fn at(text: &str) -> i64 {
        lifeboat_core::time::parse(text).expect("time")
    }

    /// An incident naming `component`, with an update changing it to each status at each
    /// time, resolved at `resolved`.
    fn incident(
        id: &str,
        component: &str,
        updates: &[(&str, ComponentStatus)],
        resolved: Option<&str>,
    ) -> Incident {
        Incident {
            id: id.into(),
            name: "n".into(),
            status: if resolved.is_some() {
                IncidentStatus::Resolved
            } else {
                IncidentStatus::Identified
            },
            impact: Impact::Major,
            created_at: updates[0].0.into(),
            updated_at: updates[0].0.into(),
            started_at: updates[0].0.into(),
            monitoring_at: None,
            resolved_at: resolved.map(str::to_string),
            postmortem_body: None,
            postmortem_published_at: None,
            updates: updates
                .iter()
                .map(|(when, status)| IncidentUpdate {
                    id: "u".into(),
                    incident_id: id.into(),
                    status: IncidentStatus::Identified,
                    body: "b".into(),
                    created_at: (*when).into(),
                    affected_components: vec![AffectedComponent {
                        code: component.into(),
                        name: component.into(),
                        old_status: ComponentStatus::Operational,
                        new_status: *status,
                    }],
                    translations: Default::default(),
                })
                .collect(),
            components: vec![component.into()],
        }
    }

    fn change(component: &str, status: ComponentStatus, when: &str) -> ComponentChange {
        ComponentChange {
            component: component.into(),
            status,
            at_us: at(when),
        }
    }

    #[test]
    fn days_take_the_worst_status_and_count_outage_time() {
        let now = at("2026-04-12T12:00:00Z");
        let components = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let incidents = vec![
            // a: major 10:00, partial 11:00, resolved 13:00 on Apr 10: 3 hours down.
            incident(
                "1",
                "a",
                &[
                    ("2026-04-10T10:00:00Z", ComponentStatus::MajorOutage),
                    ("2026-04-10T11:00:00Z", ComponentStatus::PartialOutage),
                ],
                Some("2026-04-10T13:00:00Z"),
            ),
            // b: two incidents; the shorter one's resolution leaves the longer one open.
            incident(
                "2",
                "b",
                &[("2026-04-11T10:00:00Z", ComponentStatus::PartialOutage)],
                Some("2026-04-11T14:00:00Z"),
            ),
            incident(
                "3",
                "b",
                &[("2026-04-11T11:00:00Z", ComponentStatus::MajorOutage)],
                Some("2026-04-11T12:00:00Z"),
            ),
        ];
        // c: recorded changes only, across midnight: maintenance is not an outage.
        let changes = vec![
            change(
                "c",
                ComponentStatus::UnderMaintenance,
                "2026-03-01T23:00:00Z",
            ),
            change("c", ComponentStatus::Operational, "2026-03-02T01:00:00Z"),
        ];
        let all = uptime(&components, &changes, &incidents, now);
        let hour = 3_600_000_000;

        let a = &all[0];
        assert_eq!(a.days.len(), DAYS);
        assert_eq!(a.days[DAYS - 1].start_us, at("2026-04-12T00:00:00Z"));
        let apr10 = &a.days[DAYS - 3];
        assert_eq!(apr10.start_us, at("2026-04-10T00:00:00Z"));
        assert_eq!(apr10.worst, ComponentStatus::MajorOutage);
        assert_eq!(apr10.down_us, 3 * hour);
        let others = a.days.iter().filter(|d| d.start_us != apr10.start_us);
        assert!(others
            .clone()
            .all(|d| d.worst == ComponentStatus::Operational && d.down_us == 0));
        let shown = (now - a.days[0].start_us) as f64;
        let expected = 100.0 * (shown - 3.0 * hour as f64) / shown;
        assert!((a.percent - expected).abs() < 1e-9, "{}", a.percent);

        let apr11 = &all[1].days[DAYS - 2];
        assert_eq!(apr11.worst, ComponentStatus::MajorOutage);
        assert_eq!(apr11.down_us, 4 * hour);

        let c = &all[2];
        assert_eq!(c.percent, 100.0);
        let mar1 = c
            .days
            .iter()
            .position(|d| d.start_us == at("2026-03-01T00:00:00Z"))
            .expect("Mar 1 shown");
        assert_eq!(c.days[mar1].worst, ComponentStatus::UnderMaintenance);
        assert_eq!(c.days[mar1 + 1].worst, ComponentStatus::UnderMaintenance);
        assert_eq!(c.days[mar1 + 2].worst, ComponentStatus::Operational);
    }

    #[test]
    fn an_open_incident_counts_until_now_and_old_history_is_outside_the_window() {
        let now = at("2026-04-12T12:00:00Z");
        let components = vec!["a".to_string()];
        let changes = vec![
            change("a", ComponentStatus::MajorOutage, "2025-01-01T00:00:00Z"),
            change("a", ComponentStatus::Operational, "2025-01-02T00:00:00Z"),
            change("a", ComponentStatus::PartialOutage, "2026-04-12T11:00:00Z"),
        ];
        let open = incident(
            "1",
            "a",
            &[("2026-04-12T11:00:00Z", ComponentStatus::PartialOutage)],
            None,
        );
        let a = &uptime(&components, &changes, &[open], now)[0];
        let today = a.days.last().expect("today");
        assert_eq!(today.worst, ComponentStatus::PartialOutage);
        assert_eq!(today.down_us, 3_600_000_000);
        assert_eq!(a.days.iter().map(|d| d.down_us).sum::<i64>(), 3_600_000_000);
    }
}
