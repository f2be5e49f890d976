#!/usr/bin/env python3
"""Step-driven MCP client around the real Python `mcp` 2.3.0 SDK (`mcp.client.Client`).

Usage:
  .venv/bin/python tests/clients/py_client.py --transport http|sse|stdio --target URL_OR_COMMAND_JSON
      [--mode legacy|auto|2026-07-28] [--header 'K: V']... [--timeout SECONDS] STEPS_JSON

For stdio the target is a JSON array command line, e.g. '["./target/debug/portcullis","stdio","-c","x.toml"]';
the child inherits this process's full environment (not the SDK's scrubbed default).
STEPS_JSON is a JSON array of steps (objects with an "op") run in order in ONE session:
  list_tools | list_prompts | list_resources | list_resource_templates | call | get_prompt |
  read_resource | call_cancel | wait_notification | sleep | ping
Prints exactly one JSON object on stdout. Exit 0 unless the session could not be set up at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp_types as types

from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

warnings.simplefilter("ignore")

SAMPLED_TEXT = "sampled-by-py-client"
ELICIT_CONTENT = {"name": "py-elicit", "confirmed": True}
ROOTS = [{"uri": "file:///tmp/portcullis-root", "name": "test-root"}]


class State:
    def __init__(self) -> None:
        self.sampling_calls = 0
        self.elicitation_calls = 0
        self.roots_calls = 0
        self.notifications: list[str] = []
        self.changed = anyio.Event()  # replaced after each set, to wake waiters


def dump(model: Any) -> Any:
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


def default_for(schema: dict[str, Any]) -> Any:
    """A plausible value for a primitive elicitation schema property."""
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("oneOf"):
        first = schema["oneOf"][0]
        return first.get("const", first)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t == "boolean":
        return True
    if t == "integer":
        return max(int(schema.get("minimum", 1)), 1) if "maximum" not in schema else int(schema.get("minimum", 0))
    if t == "number":
        return float(schema.get("minimum", 1))
    if t == "array":
        items = schema.get("items", {})
        if isinstance(items, dict) and items.get("enum"):
            return [items["enum"][0]]
        if isinstance(items, dict) and items.get("anyOf"):
            return [items["anyOf"][0].get("const")]
        return []
    fmt = schema.get("format")
    if fmt == "email":
        return "py-elicit@example.com"
    if fmt == "uri":
        return "https://example.com/py-elicit"
    if fmt == "date":
        return "2026-01-01"
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    return "py-elicit"


def error_entry(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MCPError):
        entry: dict[str, Any] = {"error": exc.error.message, "code": exc.error.code}
        if exc.error.data is not None:
            entry["data"] = exc.error.data
        return entry
    if isinstance(exc, BaseExceptionGroup):
        inner = exc.exceptions[0] if exc.exceptions else exc
        return error_entry(inner)
    return {"error": f"{type(exc).__name__}: {exc}", "code": None}


def parse_headers(raw: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for h in raw:
        if ":" not in h:
            raise SystemExit(f"bad --header {h!r}, expected 'K: V'")
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()
    return headers


async def run(args: argparse.Namespace, steps: list[dict[str, Any]], out: dict[str, Any]) -> None:
    st = State()

    def note(method: str) -> None:
        st.notifications.append(method)
        ev, st.changed = st.changed, anyio.Event()
        ev.set()

    async def message_handler(message: Any) -> None:
        if isinstance(message, Exception):
            logging.debug("transport exception: %r", message)
            return
        method = getattr(message, "method", None)
        if method is None and hasattr(message, "root"):
            method = getattr(message.root, "method", None)
        if method:
            note(method)

    async def sampling_cb(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        st.sampling_calls += 1
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED_TEXT),
            model="test-model",
            stop_reason="endTurn",
        )

    async def elicitation_cb(ctx: Any, params: Any) -> types.ElicitResult:
        st.elicitation_calls += 1
        schema = getattr(params, "requested_schema", None)
        if schema is None:  # URL mode: accept, no content
            return types.ElicitResult(action="accept")
        schema = dump(schema) if not isinstance(schema, dict) else schema
        props = schema.get("properties", {}) or {}
        content: dict[str, Any] = {}
        for name, prop in props.items():
            if name in ELICIT_CONTENT:
                content[name] = ELICIT_CONTENT[name]
            elif name in (schema.get("required") or []):
                content[name] = default_for(prop or {})
        for k, v in ELICIT_CONTENT.items():
            content.setdefault(k, v)
        return types.ElicitResult(action="accept", content=content)

    async def roots_cb(ctx: Any) -> types.ListRootsResult:
        st.roots_calls += 1
        return types.ListRootsResult(roots=[types.Root(uri=r["uri"], name=r["name"]) for r in ROOTS])

    headers = parse_headers(args.header)
    async with AsyncExitStack() as stack:
        if args.transport == "http":
            http_client = create_mcp_http_client(headers=headers or None)
            await stack.enter_async_context(http_client)
            server: Any = streamable_http_client(args.target, http_client=http_client)
        elif args.transport == "sse":
            server = sse_client(args.target, headers=headers or None)
        else:
            cmd = json.loads(args.target)
            if not isinstance(cmd, list) or not cmd:
                raise SystemExit("--target for stdio must be a non-empty JSON array")
            server = stdio_client(
                StdioServerParameters(command=cmd[0], args=[str(a) for a in cmd[1:]], env=dict(os.environ)),
                errlog=sys.stderr,
            )

        client = Client(
            server,
            mode=args.mode,
            read_timeout_seconds=args.timeout,
            sampling_callback=sampling_cb,
            elicitation_callback=elicitation_cb,
            list_roots_callback=roots_cb,
            message_handler=message_handler,
            client_info=types.Implementation(name="portcullis-py-client", version="0.0.0"),
            cache=None,
        )
        try:
            # (no fail_after here: the client's task groups must not straddle a cancel scope;
            # the handshake requests are bounded by read_timeout_seconds)
            await stack.enter_async_context(client)
        except BaseException as exc:  # noqa: BLE001
            out["error"] = "session setup failed: " + json.dumps(error_entry(exc))
            out["_setup_failed"] = True
            logging.debug("setup failure", exc_info=True)
            raise _SetupFailed() from exc

        out["protocol_version"] = client.protocol_version
        out["server_info"] = dump(client.server_info) if client.server_info else None
        out["server_capabilities"] = dump(client.server_capabilities)

        for step in steps:
            try:
                res = await run_step(client, step, st, args)
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                logging.debug("step failed", exc_info=True)
                res = error_entry(exc)
            out["results"].append(res)

        snapshot(out, st)
        out["_steps_done"] = True
    snapshot(out, st)


def snapshot(out: dict[str, Any], st: State) -> None:
    out["notifications"] = list(st.notifications)
    out["sampling_calls"] = st.sampling_calls
    out["elicitation_calls"] = st.elicitation_calls
    out["roots_calls"] = st.roots_calls


class _SetupFailed(Exception):
    """The session could not be set up (out["error"] already says why)."""


async def paginate(fetch: Any, attr: str) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await fetch(cursor=cursor)
        items.extend(getattr(page, attr))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


async def run_step(client: Client, step: dict[str, Any], st: State, args: argparse.Namespace) -> dict[str, Any]:
    op = step.get("op")
    if op == "list_tools":
        tools = [dump(t) for t in await paginate(client.list_tools, "tools")]
        return {"names": [t["name"] for t in tools], "tools": tools}
    if op == "list_prompts":
        prompts = [dump(p) for p in await paginate(client.list_prompts, "prompts")]
        return {"names": [p["name"] for p in prompts], "prompts": prompts}
    if op == "list_resources":
        res = [dump(r) for r in await paginate(client.list_resources, "resources")]
        return {"uris": [r["uri"] for r in res], "names": [r.get("name") for r in res], "resources": res}
    if op == "list_resource_templates":
        res = [dump(r) for r in await paginate(client.list_resource_templates, "resource_templates")]
        return {
            "uris": [r["uriTemplate"] for r in res],
            "names": [r.get("name") for r in res],
            "resourceTemplates": res,
        }
    if op == "call":
        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        result = await client.call_tool(
            step["tool"],
            step.get("args") or {},
            progress_callback=on_progress if step.get("progress") else None,
        )
        d = dump(result)
        return {
            "content": d.get("content", []),
            "structuredContent": d.get("structuredContent"),
            "isError": bool(d.get("isError", False)),
            "meta": d.get("_meta"),
            "progress": progress,
        }
    if op == "get_prompt":
        result = await client.get_prompt(step["name"], {k: str(v) for k, v in (step.get("args") or {}).items()})
        d = dump(result)
        return {"messages": d.get("messages", []), "description": d.get("description")}
    if op == "read_resource":
        d = dump(await client.read_resource(step["uri"]))
        return {"contents": d.get("contents", [])}
    if op == "call_cancel":
        after = float(step.get("after_ms", 300)) / 1000.0
        outcome: dict[str, Any] = {}
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def canceller() -> None:
                    await anyio.sleep(after)
                    scope.cancel()

                tg.start_soon(canceller)
                try:
                    r = await client.call_tool(step["tool"], step.get("args") or {})
                    outcome = {"cancelled": False, "completed": True, "result": dump(r)}
                except MCPError as e:
                    outcome = {"cancelled": False, **error_entry(e)}
                tg.cancel_scope.cancel()
        if scope.cancelled_caught:
            outcome = {"cancelled": True}
        # give the courtesy notifications/cancelled a moment to reach the wire
        await anyio.sleep(0.05)
        return outcome
    if op == "wait_notification":
        method = step["method"]
        deadline = time.monotonic() + float(step.get("timeout_ms", 5000)) / 1000.0
        while method not in st.notifications:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ev = st.changed
            with anyio.move_on_after(remaining):
                await ev.wait()
        return {"received": method in st.notifications}
    if op == "sleep":
        await anyio.sleep(float(step.get("ms", 0)) / 1000.0)
        return {"slept_ms": step.get("ms", 0)}
    if op == "ping":
        await client.session.send_ping()
        return {"pong": True}
    return {"error": f"unknown op {op!r}", "code": None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=["http", "sse", "stdio"], required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", default="auto", help="legacy | auto | 2026-07-28 (default auto)")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request and setup timeout, seconds")
    parser.add_argument("--debug", action="store_true", help="SDK debug logs on stderr")
    parser.add_argument("steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL, stream=sys.stderr)

    out: dict[str, Any] = {
        "ok": False,
        "results": [],
        "sampling_calls": 0,
        "elicitation_calls": 0,
        "roots_calls": 0,
        "notifications": [],
        "error": None,
    }
    try:
        steps = json.loads(args.steps)
        if not isinstance(steps, list):
            raise ValueError("STEPS_JSON must be a JSON array")
    except ValueError as e:
        out["error"] = f"bad STEPS_JSON: {e}"
        print(json.dumps(out))
        return 1

    code = 0
    try:
        anyio.run(run, args, steps, out)
        out["ok"] = True
    except BaseException as exc:  # noqa: BLE001
        if args.debug:
            traceback.print_exc()
        if out.pop("_setup_failed", False):
            code = 1
        elif out.get("_steps_done"):
            # every step ran; only the teardown (DELETE, child exit, ...) failed
            out["ok"] = True
            out["teardown_error"] = error_entry(exc)["error"]
        else:
            out["error"] = error_entry(exc)["error"]
            code = 0 if out["results"] else 1
    out.pop("_setup_failed", None)
    out.pop("_steps_done", None)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
