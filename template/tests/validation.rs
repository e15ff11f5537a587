//! The generated business logic against a real Redis: valid messages are
//! processed, invalid ones land in the dead-letter stream with the reason.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::time::Duration;

use redis_streams_runtime::dead_letter::{ORIGINAL_ID, REASON};
use redis_streams_runtime::testing::{add, connect, dead_letters, pending, settings};
use redis_streams_runtime::{Logic, Worker};

use {{crate_name}}::business_logic::{BusinessLogic, LogicSettings};

#[tokio::test]
async fn invalid_entries_are_dead_lettered_and_valid_ones_acknowledged() {
    let settings = settings("validation");
    let mut redis = connect(&settings).await;
    let logic = BusinessLogic::build(&LogicSettings::default())
        .await
        .unwrap();
    let mut worker = Worker::new(&settings, logic).unwrap();
    worker.step().await.unwrap();
    let ids = add(
        &mut redis,
        &settings.redis.stream,
        &[
            r#"{"user_id":"123","action":"login"}"#,
            "not json",
            "[1,2,3]",
        ],
    )
    .await;

    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while dead_letters(&mut redis, &settings).await.len() < 2 {
        assert!(std::time::Instant::now() < give_up, "timed out");
        worker.step().await.unwrap();
    }
    let letters = dead_letters(&mut redis, &settings).await;
    let originals: Vec<&str> = letters
        .iter()
        .map(|l| l.text(ORIGINAL_ID).unwrap().unwrap())
        .collect();
    assert_eq!(originals, [ids[1].as_str(), ids[2].as_str()]);
    for letter in &letters {
        assert!(
            letter
                .text(REASON)
                .unwrap()
                .unwrap()
                .contains("field `data`")
        );
    }
    assert_eq!(pending(&mut redis, &settings).await, 0);
}
