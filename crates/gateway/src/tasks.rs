//! Tasks (MCP 2025-11-25 experimental form): a `tools/call` with `params.task` returns a task instead of a result;
//! the client then polls `tasks/get`, fetches `tasks/result`, may `tasks/cancel`, and lists with `tasks/list`.
//!
//! Task ids are namespaced per upstream (`{upstream}{sep}{id}`) and **bound to the principal that created the
//! task**: anyone else gets the same -32602 as for a task that does not exist, and `tasks/list` shows only the
//! caller's own tasks. `notifications/tasks/status` goes to the session that created the task.

use crate::session::Session;
use crate::Gateway;
use parking_lot::Mutex;
use portcullis_auth::Principal;
use portcullis_protocol::raw::to_raw;
use portcullis_protocol::{code, ErrorObject, Id, Message, RawObject};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";
/// Most tasks remembered at once; the oldest are forgotten first.
const MAX_TASKS: usize = 10_000;
/// A task is forgotten this long after it was created (upstreams keep results for their `ttl`, usually less).
const TASK_MEMORY: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct TaskEntry {
    upstream: Arc<str>,
    upstream_id: String,
    principal: Arc<Principal>,
    session: u64,
    created: Instant,
}

#[derive(Default)]
pub(crate) struct TaskTable {
    by_id: Mutex<HashMap<String, TaskEntry>>,
}

impl TaskTable {
    fn insert(&self, id: String, e: TaskEntry) {
        let mut m = self.by_id.lock();
        if m.len() >= MAX_TASKS {
            m.retain(|_, t| t.created.elapsed() < TASK_MEMORY);
            if m.len() >= MAX_TASKS {
                if let Some(oldest) = m.iter().min_by_key(|(_, t)| t.created).map(|(k, _)| k.clone()) {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(id, e);
    }
}

fn not_found(id: Id) -> Message {
    Message::error(Some(id), &ErrorObject::new(code::INVALID_PARAMS, "Unknown task: it does not exist or is not yours"))
}

impl Gateway {
    fn public_task_id(&self, upstream: &str, upstream_id: &str) -> String {
        format!("{upstream}{}{upstream_id}", self.cfg.server.name_separator)
    }

    /// After a task-augmented `tools/call`: remember the task for this principal and rename its id.
    pub(crate) fn register_task(&self, s: &Session, upstream: &Arc<str>, resp: Message) -> Message {
        let Message::Response { id, result } = resp else { return resp };
        let Some(mut obj) = RawObject::parse(result.get()).ok() else { return Message::Response { id, result } };
        let Some(mut task) = obj.get("task").and_then(|t| RawObject::parse(t.get()).ok()) else {
            return Message::Response { id, result };
        };
        let Some(upstream_id) = task.get_str("taskId") else { return Message::Response { id, result } };
        let public = self.public_task_id(upstream, &upstream_id);
        self.tasks.insert(
            public.clone(),
            TaskEntry {
                upstream: upstream.clone(),
                upstream_id,
                principal: s.principal.clone(),
                session: s.key,
                created: Instant::now(),
            },
        );
        task.set_str("taskId", &public);
        obj.set("task", task.into_raw());
        Message::Response { id, result: obj.into_raw() }
    }

    /// `tasks/get`, `tasks/result`, `tasks/cancel`: only the task's creator may touch it.
    pub(crate) async fn task_call(
        &self,
        s: &Arc<Session>,
        id: Id,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Message {
        let Some(mut obj) = params.as_deref().and_then(|p| RawObject::parse(p.get()).ok()) else {
            return Message::error(
                Some(id),
                &ErrorObject::new(code::INVALID_PARAMS, format!("{method} needs params.taskId")),
            );
        };
        let Some(public) = obj.get_str("taskId") else {
            return Message::error(
                Some(id),
                &ErrorObject::new(code::INVALID_PARAMS, format!("{method} needs params.taskId")),
            );
        };
        let target = {
            let m = self.tasks.by_id.lock();
            m.get(&public)
                .filter(|t| t.principal.same_identity(&s.principal))
                .map(|t| (t.upstream.clone(), t.upstream_id.clone()))
        };
        let Some((upstream_name, upstream_id)) = target else { return not_found(id) };
        let Some(upstream) = self.upstream(&upstream_name).cloned() else { return not_found(id) };
        obj.set_str("taskId", &upstream_id);
        let resp = self.forward(s, &upstream, id, method, Some(obj.into_raw()), None).await;
        rename_task_ids(resp, &upstream_id, &public)
    }

    /// `tasks/list`: the caller's own tasks, across upstreams.
    pub(crate) async fn task_list(&self, s: &Arc<Session>, id: Id) -> Message {
        let mine: Vec<(String, Arc<str>, String)> = self
            .tasks
            .by_id
            .lock()
            .iter()
            .filter(|(_, t)| t.principal.same_identity(&s.principal))
            .map(|(k, t)| (k.clone(), t.upstream.clone(), t.upstream_id.clone()))
            .collect();
        let mut upstreams: Vec<Arc<str>> = mine.iter().map(|(_, u, _)| u.clone()).collect();
        upstreams.sort();
        upstreams.dedup();
        let mut out: Vec<Box<RawValue>> = Vec::new();
        for name in upstreams {
            let Some(upstream) = self.upstream(&name).cloned() else { continue };
            let mut cursor: Option<String> = None;
            for _ in 0..20 {
                let params = cursor.as_ref().map(|c| to_raw(&serde_json::json!({"cursor": c})));
                let resp = self.forward(s, &upstream, Id::Num(0), "tasks/list", params, None).await;
                let Message::Response { result, .. } = resp else { break };
                let Ok(obj) = RawObject::parse(result.get()) else { break };
                let tasks: Vec<Box<RawValue>> =
                    obj.get("tasks").and_then(|t| serde_json::from_str(t.get()).ok()).unwrap_or_default();
                for t in tasks {
                    let Ok(mut task) = RawObject::parse(t.get()) else { continue };
                    let Some(tid) = task.get_str("taskId") else { continue };
                    if let Some((public, _, _)) = mine.iter().find(|(_, u, i)| *u == name && *i == tid) {
                        task.set_str("taskId", public);
                        out.push(task.into_raw());
                    }
                }
                cursor = obj.get_str("nextCursor");
                if cursor.is_none() {
                    break;
                }
            }
        }
        Message::Response { id, result: to_raw(&serde_json::json!({ "tasks": out })) }
    }

    /// `notifications/tasks/status` from an upstream: to the session that created the task, id renamed.
    pub(crate) fn task_status(&self, upstream: &str, msg: Message) {
        let Some(params) = msg.params().and_then(|p| RawObject::parse(p.get()).ok()) else { return };
        let Some(upstream_id) = params.get_str("taskId") else { return };
        let public = self.public_task_id(upstream, &upstream_id);
        let Some(session) = self.tasks.by_id.lock().get(&public).map(|t| t.session) else { return };
        let mut params = params;
        params.set_str("taskId", &public);
        let msg = Message::notification("notifications/tasks/status", Some(params.into_raw()));
        if let Some(s) = self.sessions.all().into_iter().find(|s| s.key == session) {
            s.send_unrelated(&msg);
        }
    }
}

/// Rename `taskId` at the top of a result and in `_meta[related-task]`.
fn rename_task_ids(resp: Message, from: &str, to: &str) -> Message {
    let Message::Response { id, result } = resp else { return resp };
    let Ok(mut obj) = RawObject::parse(result.get()) else { return Message::Response { id, result } };
    if obj.get_str("taskId").as_deref() == Some(from) {
        obj.set_str("taskId", to);
    }
    if let Some(mut meta) = obj.get("_meta").and_then(|m| RawObject::parse(m.get()).ok()) {
        if let Some(mut rel) = meta.get(RELATED_TASK).and_then(|r| RawObject::parse(r.get()).ok()) {
            if rel.get_str("taskId").as_deref() == Some(from) {
                rel.set_str("taskId", to);
                meta.set(RELATED_TASK, rel.into_raw());
                obj.set("_meta", meta.into_raw());
            }
        }
    }
    Message::Response { id, result: obj.into_raw() }
}
