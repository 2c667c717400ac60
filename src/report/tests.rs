use super::*;

fn m(mins: i64) -> Option<Ts> {
    Some(Ts(1_800_000_000_000 + mins * 60_000))
}

#[test]
fn a_budget_is_met_missed_or_open_by_the_clock() {
    let now = m(20).unwrap();
    let limit = Dur::from_mins(10);
    let c = check("x".into(), limit, m(0), m(9), false, now);
    assert_eq!(
        (c.verdict, c.measured),
        (Verdict::Met, Some(Dur::from_mins(9)))
    );
    assert_eq!(
        check("x".into(), limit, m(0), m(11), false, now).verdict,
        Verdict::Missed
    );
    // Not come yet: open while within the limit, missed past it or once over.
    assert_eq!(
        check("x".into(), limit, m(15), None, false, now).verdict,
        Verdict::Open
    );
    assert_eq!(
        check("x".into(), limit, m(5), None, false, now).verdict,
        Verdict::Missed
    );
    assert_eq!(
        check("x".into(), limit, m(15), None, true, now).verdict,
        Verdict::Missed
    );
    assert_eq!(
        check("x".into(), limit, None, m(1), false, now).verdict,
        Verdict::NotApplicable
    );
}

#[test]
fn budgets_follow_the_tier_and_what_happened() {
    let b = Budgets::default();
    let marks = Marks {
        fault: m(0),
        breach: m(2),
        rollback_started: m(3),
        rollback_done: m(12),
        recovered: m(15),
        ..Marks::default()
    };
    let low = checks(&marks, &b, Tier::Low, false, true, None, m(30).unwrap());
    let names: Vec<(&str, Verdict)> = low.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
    assert_eq!(
        names,
        [
            ("rollback started within 30m of the fault", Verdict::Met),
            (
                "low risk: rolled back within 10m of the fault",
                Verdict::Missed
            ),
            (
                "back to the pre-upgrade state within 2h of the fault",
                Verdict::Met
            ),
        ]
    );
    // High tier, paged, approved 4 minutes before the rollback started.
    let approval = ApprovalRow {
        incident: "i".into(),
        request_key: "k".into(),
        tier: Tier::High,
        state: "approved".into(),
        requested_at: m(2).unwrap(),
        expires_at: m(32).unwrap(),
        decided_by: Some("alice".into()),
        decided_at: m(-1),
        note: None,
        decided_via: None,
        scope: None,
    };
    let marks = Marks {
        approved: m(-1),
        oncall_reached: m(8),
        ..marks
    };
    let high = checks(
        &marks,
        &b,
        Tier::High,
        true,
        true,
        Some(&approval),
        m(30).unwrap(),
    );
    let by_name = |n: &str| high.iter().find(|c| c.name.starts_with(n)).unwrap().verdict;
    assert_eq!(
        by_name("rollback started within 3m of the approval"),
        Verdict::Missed
    );
    assert_eq!(by_name("on-call reached within 5m"), Verdict::Missed);
    assert!(high.iter().all(|c| !c.name.starts_with("low risk")));
}

#[test]
fn spans_measure_between_the_marks_that_came() {
    let marks = Marks {
        fault: m(0),
        breach: m(2),
        first_action: m(2),
        recovered: m(30),
        ..Marks::default()
    };
    let s = spans(&marks);
    let took = |n: &str| s.iter().find(|x| x.name == n).unwrap().took;
    assert_eq!(took("to detect"), Some(Dur::from_mins(2)));
    assert_eq!(took("to decide"), Some(Dur::ZERO));
    assert_eq!(took("to roll back"), None);
    assert_eq!(took("to recover"), Some(Dur::from_mins(30)));
}

#[test]
fn the_markdown_review_carries_the_alerts_annotations_as_data() {
    let r = Review {
        incident: crate::journal::IncidentRow {
            id: "inc-1".into(),
            rule: "alerts".into(),
            partition: "p".into(),
            tier: "medium".into(),
            severity: "functional".into(),
            state: "open".into(),
            opened_at: Ts(0),
            resolved_at: None,
            labels: serde_json::json!({"service": "pay"}),
            attention: Vec::new(),
            batch: None,
        },
        drill: None,
        marks: Marks::default(),
        timeline: Vec::new(),
        spans: Vec::new(),
        budgets: Vec::new(),
        chart: Chart::default(),
        annotations: vec![
            ("summary".into(), "5xx above 5%".into()),
            (
                "runbook_url".into(),
                "https://x.example/a | b\n# heading".into(),
            ),
        ],
        approval: None,
        journal: Vec::new(),
        drawn_at: Ts(0),
    };
    let text = super::markdown::render(&r);
    assert!(text.contains("| summary | 5xx above 5% |"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("| runbook\\_url |") || l.starts_with("| runbook_url |"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!text.lines().any(|l| l.starts_with("# heading")), "{text}");
    assert_eq!(row.matches(" | ").count(), 1, "one cell boundary: {row}");
    let page = super::html::render(&r);
    assert!(
        page.contains("<th>runbook_url</th><td>https://x.example/a | b"),
        "{page}"
    );
    assert!(!page.contains("<a "), "{page}");
}
