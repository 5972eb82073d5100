use super::*;
use proptest::prelude::*;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone>(v: T) {
    let bytes = Wire::ok(v.clone()).into_bytes();
    assert_eq!(Wire::<T>::from_bytes(bytes), Wire::ok(v));
}

fn spec() -> JobSpec {
    JobSpec::shell("echo hi")
        .with_label("team", "infra")
        .with_env("A", "b")
        .with_timeout_ms(5)
        .with_idempotency_key("k")
}

fn view() -> JobView {
    JobView {
        id: JobId(3),
        name: "n".into(),
        state: JobState::Failed,
        exit_code: Some(3),
        signal: None,
        attempts: 2,
        reason: Some("exit code 3".into()),
        priority: Priority::High,
        tenant: TenantId::default(),
        labels: [("a".to_string(), "b".to_string())].into(),
        worker: Some("local-1".into()),
        submitted_at_ms: 1,
        started_at_ms: Some(2),
        finished_at_ms: Some(3),
        command: "echo hi".into(),
        resources: Resources::ZERO,
        timeout_ms: None,
        max_retries: 1,
        attempt_history: vec![AttemptView {
            number: 1,
            epoch: 1,
            worker: "w".into(),
            assigned_at_ms: 1,
            started_at_ms: None,
            finished_at_ms: Some(2),
            outcome: Some("exit code 3".into()),
        }],
    }
}

#[test]
fn every_client_message_round_trips() {
    roundtrip(ClientRequest::Hello { client: "c".into() });
    roundtrip(ClientRequest::SnapshotSave);
    roundtrip(ClientRequest::SnapshotRead {
        name: "backup-1.hodei-snapshot".into(),
        offset: 7,
        max_bytes: 9,
    });
    roundtrip::<ClientReply>(Ok(ClientResponse::SnapshotSaved(SnapshotInfo {
        name: "n".into(),
        bytes: 1,
        index: 2,
        jobs: 3,
        workers: 4,
        sha256: "ab".into(),
        created_at_ms: 5,
    })));
    roundtrip::<ClientReply>(Ok(ClientResponse::SnapshotChunk {
        data: vec![1, 2, 3],
        total_bytes: 3,
    }));
    roundtrip(ClientRequest::Submit {
        spec: Box::new(spec()),
    });
    roundtrip(ClientRequest::ListJobs {
        filter: JobFilter {
            state: Some(JobState::Running),
            tenant: Some(TenantId::default()),
            label: Some(("a".into(), "b".into())),
            limit: 5,
        },
    });
    roundtrip(ClientRequest::ReadLogs {
        id: JobId(1),
        offset: 9,
        max_bytes: 10,
        wait_ms: 11,
    });
    roundtrip(ClientRequest::Cancel {
        id: JobId(1),
        reason: None,
    });
    roundtrip::<ClientReply>(Ok(ClientResponse::Job(Box::new(view()))));
    roundtrip::<ClientReply>(Ok(ClientResponse::Logs(LogChunk {
        records: vec![LogRecord {
            attempt: 1,
            stream: LogStream::Stderr,
            data: b"x".to_vec(),
        }],
        next_offset: 4,
        complete: true,
    })));
    roundtrip::<ClientReply>(Err(ApiError::no_job(JobId(9))));
    roundtrip::<ClientReply>(Ok(ClientResponse::Pools(vec![PoolView {
        name: "p".into(),
        provider: "local".into(),
        min_workers: 1,
        max_workers: 2,
        slots: 3,
        capacity: Resources::ZERO,
        workers: vec![(WorkerState::Idle, 1)],
        pending_fitting: 0,
        last_decision: Some("steady".into()),
        provisioning_failures: 0,
        providers: vec!["local: healthy".into()],
    }])));
}

#[test]
fn every_agent_message_round_trips() {
    let a = AttemptRef {
        job: JobId(1),
        attempt: AttemptNo(2),
        epoch: Epoch(3),
    };
    roundtrip(AgentHello {
        registration: WorkerRegistration {
            id: WorkerId::new("w-1").unwrap(),
            pool: hodei_runtime::PoolId::new("p").unwrap(),
            capacity: Resources::ZERO,
            slots: 2,
            labels: Default::default(),
            taints: vec!["gpu=yes:NoSchedule".parse().unwrap()],
            agent_node: "agent-1".into(),
            hostname: "h".into(),
            pid: 7,
            version: "v".into(),
        },
    });
    roundtrip(AgentReport {
        worker: WorkerId::new("w-1").unwrap(),
        events: vec![
            AgentEvent::Started { attempt: a, pid: 9 },
            AgentEvent::Finished {
                attempt: a,
                report: ExitReport::exited(3),
            },
        ],
    });
    roundtrip(Assignment {
        attempt: a,
        name: "n".into(),
        tenant: TenantId::default(),
        argv: vec!["true".into()],
        env: Default::default(),
        working_dir: Some("/tmp".into()),
        timeout_ms: Some(1),
        resources: Resources::ZERO,
    });
    roundtrip(StopOrder {
        attempt: a,
        cause: StopCause::Timeout,
        grace_ms: 5,
    });
    roundtrip::<HeartbeatReply>(Ok(HeartbeatAck { stop: vec![a] }));
}

#[test]
fn malformed_bytes_decode_to_an_error() {
    let w = Wire::<ClientRequest>::from_bytes(b"garbage that is not a frame".to_vec());
    assert!(matches!(w.0, Err(WireError::Malformed(_))));
    let mut frame = Wire::ok(ClientRequest::ListWorkers).into_bytes();
    frame.push(0xff);
    assert!(matches!(
        Wire::<ClientRequest>::from_bytes(frame).0,
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn another_protocol_version_is_named_in_the_error() {
    let mut frame = Wire::ok(ClientRequest::ListWorkers).into_bytes();
    frame[4..8].copy_from_slice(&7u32.to_le_bytes());
    let e = Wire::<ClientRequest>::from_bytes(frame).0.unwrap_err();
    assert_eq!(
        e,
        WireError::Version {
            peer: 7,
            ours: PROTOCOL_VERSION
        }
    );
    assert!(e.to_string().contains("version 7"));
}

#[test]
fn oversized_messages_are_refused_before_decoding() {
    let big = vec![0u8; (max_message_bytes() + 1) as usize];
    let e = Wire::<ClientRequest>::from_bytes(big).0.unwrap_err();
    assert!(matches!(e, WireError::Oversized { .. }));
}

#[test]
fn errors_travel_as_errors() {
    let w: Wire<u32> = Wire(Err(WireError::Malformed("x".into())));
    assert_eq!(
        Wire::<u32>::from_bytes(w.into_bytes()),
        Wire(Err(WireError::Malformed("x".into())))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Wire::<ClientRequest>::from_bytes(bytes.clone());
        let mut framed = b"HDW1".to_vec();
        framed.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        framed.push(0);
        framed.extend_from_slice(&bytes);
        let _ = Wire::<AgentReport>::from_bytes(framed);
    }
}
