//! Requests running at the same time on a multi-thread runtime keep their own users.
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use crate::support::Harness;

#[test]
fn two_hundred_concurrent_requests_keep_their_own_user() {
    let h = Harness::default_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let dispatch = h.dispatch().clone();
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let dispatch = dispatch.clone();
            tasks.push(tokio::spawn(
                async move {
                    let request = tracing::info_span!("request", n = i, usr.id = tracing::field::Empty);
                    async {
                        tokio::task::yield_now().await;
                        let user = format!("user-{i}");
                        async {
                            tokio::time::sleep(std::time::Duration::from_millis((i % 7) as u64)).await;
                            tracing::Span::current().record("usr.id", user.as_str());
                            tracing::info!(usr.email = format!("{user}@example.com"), "working");
                            tokio::task::yield_now().await;
                        }
                        .instrument(tracing::info_span!("handler", usr.id = user.as_str()))
                        .await;
                    }
                    .instrument(request)
                    .await;
                }
                .with_subscriber(dispatch),
            ));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let roots = h.roots();
    assert_eq!(roots.len(), 200);
    for root in &roots {
        let n = root.metric("n").expect("n") as u64;
        assert_eq!(root.meta("usr.id"), Some(format!("user-{n}").as_str()));
        assert_eq!(
            root.meta("usr.email"),
            Some(format!("user-{n}@example.com").as_str())
        );
    }
    // Every request logged once, with its own user: the log half counts what it checks.
    let logs = h.logs();
    assert_eq!(logs.len(), 200, "one `working` log per request");
    let mut seen = std::collections::HashSet::new();
    for log in &logs {
        let root = roots
            .iter()
            .find(|r| Some(r.trace_id) == log.trace_id)
            .expect("its root");
        assert!(seen.insert(root.trace_id), "two logs in one trace");
        let n = root.metric("n").expect("n") as u64;
        assert_eq!(log.user("usr.id"), Some(format!("user-{n}").as_str()));
    }
}
