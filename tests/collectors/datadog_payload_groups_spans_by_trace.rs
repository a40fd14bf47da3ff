//! The v0.4 payload: one chunk per trace, in the order traces first appear, each chunk's spans in
//! arrival order, even when the spans of several traces arrive interleaved (partial flushes of
//! long traces).

use tracing_usr::export::datadog::{encode_v04, DatadogConfig};
use tracing_usr::export::SpanRecord;

fn span(trace_id: u128, span_id: u64, root: bool) -> SpanRecord {
    SpanRecord {
        trace_id,
        span_id,
        parent_id: (!root).then_some(1),
        local_root: root,
        name: "work".into(),
        target: "test".into(),
        start_unix_nanos: 1,
        duration_nanos: 2,
        error: false,
        meta: vec![("k".into(), "v".into())],
        metrics: Vec::new(),
        events: Vec::new(),
        root: None,
        pending_value_mask: 0,
    }
}

#[derive(serde::Deserialize)]
struct Span {
    trace_id: u64,
    span_id: u64,
}

#[test]
fn spans_are_grouped_by_trace_in_order_of_first_appearance() {
    let records = [
        span(7, 1, false),
        span(7, 2, false),
        span(9, 3, false),
        span(7, 4, false),
        span(11, 5, true),
        span(9, 6, true),
        span(7, 8, true),
    ];
    let refs: Vec<&SpanRecord> = records.iter().collect();
    let (payload, chunks) = encode_v04(&refs, &DatadogConfig::default(), 1.0);
    assert_eq!(chunks, 3);
    let decoded: Vec<Vec<Span>> = rmp_serde::from_slice(&payload).expect("a v0.4 payload");
    let ids: Vec<Vec<(u64, u64)>> = decoded
        .iter()
        .map(|chunk| chunk.iter().map(|s| (s.trace_id, s.span_id)).collect())
        .collect();
    assert_eq!(
        ids,
        vec![
            vec![(7, 1), (7, 2), (7, 4), (7, 8)],
            vec![(9, 3), (9, 6)],
            vec![(11, 5)],
        ]
    );
    let (empty, none) = encode_v04(&[], &DatadogConfig::default(), 1.0);
    assert_eq!(none, 0);
    assert!(rmp_serde::from_slice::<Vec<Vec<Span>>>(&empty)
        .unwrap()
        .is_empty());
}
