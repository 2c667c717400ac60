//! Arbitrary text -> `Condition::parse` and `Matcher::parse` (plus the
//! duration and timestamp parsers they sit beside): never panic; a parsed
//! condition has a finite threshold and survives a print/parse round trip;
//! a parsed matcher can be evaluated.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use ripcord::event::Labels;
use ripcord::rule::{Condition, Matcher};
use ripcord::time::{Dur, MAX_TS, Ts};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Condition::parse(text) {
        assert!(
            c.threshold.is_finite(),
            "{text:?} parsed to threshold {}",
            c.threshold
        );
        if c.of_baseline {
            assert!(
                c.threshold > 0.0,
                "{text:?}: baseline factor {}",
                c.threshold
            );
        }
        let printed = c.to_string();
        let again = Condition::parse(&printed)
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(again.op, c.op);
        assert_eq!(again.of_baseline, c.of_baseline);
        assert_eq!(
            again.threshold.to_bits(),
            c.threshold.to_bits(),
            "{text:?} -> {printed:?}"
        );
        let _ = c.negated().holds(1.0, Some(2.0));
    }
    if let Ok(m) = Matcher::parse(text) {
        assert!(
            ripcord::decode::is_label_name(&m.name),
            "{text:?}: bad name {:?}",
            m.name
        );
        let labels = Labels(vec![
            (Cow::Borrowed(m.name.as_str()), Cow::Borrowed(text)),
            (Cow::Borrowed("service"), Cow::Borrowed("web")),
        ]);
        let _ = m.matches(&labels);
        let _ = m.matches(&Labels::default());
    }
    if let Ok(d) = text.parse::<Dur>() {
        assert!(d.millis() >= 0, "{text:?}: negative duration");
        let printed = d.to_string();
        assert_eq!(
            printed.parse::<Dur>().ok(),
            Some(d),
            "{text:?} printed as {printed:?}"
        );
    }
    if let Ok(t) = Ts::parse_rfc3339(text) {
        assert!((0..=MAX_TS.0).contains(&t.0), "{text:?}: {} ms", t.0);
        let printed = t.to_string();
        assert_eq!(
            Ts::parse_rfc3339(&printed).ok(),
            Some(t),
            "{text:?} printed as {printed:?}"
        );
    }
});
