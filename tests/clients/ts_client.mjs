#!/usr/bin/env node
// Step-driven MCP client around the real TS SDK v1 client (@modelcontextprotocol/sdk 1.32.2,
// installed in tests/peers/node_modules by scripts/test-deps.sh). Same CLI contract and step
// language as tests/clients/py_client.py:
//
//   node tests/clients/ts_client.mjs --transport http|sse|stdio --target URL_OR_COMMAND_JSON
//        [--mode legacy|auto] [--header 'K: V']... [--timeout SECONDS] STEPS_JSON
//
// --mode is accepted and ignored (the v1 client is legacy-only: initialize at 2025-11-25).
// For stdio the target is a JSON array command line; the child inherits this process's full
// environment. Prints exactly one JSON object on stdout. Exit 0 unless the session could not
// be set up at all.
//
// Callback answers differ from the Python driver so tests can tell the clients apart:
// sampling -> "sampled-by-ts-client", elicitation -> {"name":"ts-elicit","confirmed":true,...}.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'peers', 'package.json'));
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { SSEClientTransport } = require('@modelcontextprotocol/sdk/client/sse.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  McpError,
} = require('@modelcontextprotocol/sdk/types.js');

const SAMPLED_TEXT = 'sampled-by-ts-client';
const ELICIT_CONTENT = { name: 'ts-elicit', confirmed: true };
const ROOTS = [{ uri: 'file:///tmp/portcullis-root', name: 'test-root' }];

function parseArgs(argv) {
  const args = { transport: null, target: null, mode: 'auto', headers: {}, timeout: 30, steps: null, debug: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--transport') args.transport = next();
    else if (a === '--target') args.target = next();
    else if (a === '--mode') args.mode = next();
    else if (a === '--timeout') args.timeout = Number(next());
    else if (a === '--debug') args.debug = true;
    else if (a === '--header') {
      const h = next();
      const idx = h.indexOf(':');
      if (idx < 0) throw new Error(`bad --header ${h}, expected 'K: V'`);
      args.headers[h.slice(0, idx).trim()] = h.slice(idx + 1).trim();
    } else if (args.steps === null) args.steps = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!['http', 'sse', 'stdio'].includes(args.transport)) throw new Error('--transport must be http|sse|stdio');
  if (!args.target) throw new Error('--target is required');
  if (args.steps === null) throw new Error('STEPS_JSON is required');
  return args;
}

function errorEntry(e) {
  if (e instanceof McpError) {
    // McpError.message is "MCP error <code>: <msg>"; report just <msg> like the Python driver.
    const entry = { error: e.message.replace(/^MCP error -?\d+: /, ''), code: e.code };
    if (e.data !== undefined) entry.data = e.data;
    return entry;
  }
  const code = typeof e?.code === 'number' ? e.code : null;
  return { error: `${e?.name ?? 'Error'}: ${e?.message ?? String(e)}`, code };
}

function defaultFor(schema) {
  if (schema == null || typeof schema !== 'object') return 'ts-elicit';
  if ('default' in schema) return schema.default;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  if (Array.isArray(schema.oneOf) && schema.oneOf.length) return schema.oneOf[0].const ?? schema.oneOf[0];
  let t = schema.type;
  if (Array.isArray(t)) t = t.find(x => x !== 'null') ?? 'string';
  switch (t) {
    case 'boolean': return true;
    case 'integer': return Math.max(schema.minimum ?? 1, schema.minimum ?? 0) | 0;
    case 'number': return schema.minimum ?? 1;
    case 'array': {
      const items = schema.items ?? {};
      if (Array.isArray(items.enum) && items.enum.length) return [items.enum[0]];
      if (Array.isArray(items.anyOf) && items.anyOf.length) return [items.anyOf[0].const];
      return [];
    }
    default:
      if (schema.format === 'email') return 'ts-elicit@example.com';
      if (schema.format === 'uri') return 'https://example.com/ts-elicit';
      if (schema.format === 'date') return '2026-01-01';
      if (schema.format === 'date-time') return '2026-01-01T00:00:00Z';
      return 'ts-elicit';
  }
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function main() {
  const out = {
    ok: false,
    results: [],
    sampling_calls: 0,
    elicitation_calls: 0,
    roots_calls: 0,
    notifications: [],
    error: null,
  };
  const emit = code => {
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code));
  };

  let args;
  let steps;
  try {
    args = parseArgs(process.argv.slice(2));
    steps = JSON.parse(args.steps);
    if (!Array.isArray(steps)) throw new Error('STEPS_JSON must be a JSON array');
  } catch (e) {
    out.error = `bad arguments: ${e.message}`;
    return emit(1);
  }
  const debug = (...m) => { if (args.debug) console.error('[ts_client]', ...m); };
  const timeoutMs = args.timeout * 1000;

  // ---- notification bookkeeping (recorded at the wire, so progress/cancelled are included)
  const waiters = new Set();
  const note = method => {
    out.notifications.push(method);
    for (const w of waiters) w();
  };

  // ---- transport
  let transport;
  if (args.transport === 'stdio') {
    let cmd;
    try {
      cmd = JSON.parse(args.target);
      if (!Array.isArray(cmd) || cmd.length === 0) throw new Error('not a non-empty array');
    } catch (e) {
      out.error = `--target for stdio must be a JSON array: ${e.message}`;
      return emit(1);
    }
    transport = new StdioClientTransport({
      command: String(cmd[0]),
      args: cmd.slice(1).map(String),
      env: { ...process.env },
      stderr: 'inherit',
    });
  } else {
    const url = new URL(args.target);
    const requestInit = Object.keys(args.headers).length ? { headers: args.headers } : undefined;
    transport = args.transport === 'http'
      ? new StreamableHTTPClientTransport(url, { requestInit })
      : new SSEClientTransport(url, { requestInit });
  }
  let negotiated = null;
  const origStart = transport.start.bind(transport);
  transport.start = async () => {
    const onmessage = transport.onmessage;
    transport.onmessage = (msg, extra) => {
      if (msg && typeof msg.method === 'string' && !('id' in msg)) note(msg.method);
      if (negotiated === null && msg?.result && typeof msg.result.protocolVersion === 'string' && msg.result.serverInfo) {
        negotiated = msg.result.protocolVersion;
      }
      return onmessage?.(msg, extra);
    };
    return origStart();
  };

  // ---- client with sampling / elicitation / roots
  const client = new Client(
    { name: 'portcullis-ts-client', version: '0.0.0' },
    { capabilities: { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: true } } },
  );
  client.setRequestHandler(CreateMessageRequestSchema, async () => {
    out.sampling_calls++;
    return { role: 'assistant', content: { type: 'text', text: SAMPLED_TEXT }, model: 'test-model', stopReason: 'endTurn' };
  });
  client.setRequestHandler(ElicitRequestSchema, async request => {
    out.elicitation_calls++;
    const p = request.params ?? {};
    if (p.mode === 'url') return { action: 'accept' };
    const schema = p.requestedSchema ?? {};
    const props = schema.properties ?? {};
    const required = schema.required ?? [];
    const content = {};
    for (const [name, prop] of Object.entries(props)) {
      if (name in ELICIT_CONTENT) content[name] = ELICIT_CONTENT[name];
      else if (required.includes(name)) content[name] = defaultFor(prop);
    }
    for (const [k, v] of Object.entries(ELICIT_CONTENT)) if (!(k in content)) content[k] = v;
    return { action: 'accept', content };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    out.roots_calls++;
    return { roots: ROOTS };
  });
  client.onerror = e => debug('client error', e?.message ?? e);

  try {
    await client.connect(transport, { timeout: timeoutMs });
  } catch (e) {
    out.error = 'session setup failed: ' + JSON.stringify(errorEntry(e));
    try { await client.close(); } catch { /* ignore */ }
    return emit(1);
  }
  out.protocol_version = negotiated;
  out.server_info = client.getServerVersion() ?? null;
  out.server_capabilities = client.getServerCapabilities() ?? null;

  const reqOpts = extra => ({ timeout: timeoutMs, ...extra });

  async function paginate(fetch, key) {
    const items = [];
    let cursor;
    for (let i = 0; i < 1000; i++) {
      const page = await fetch(cursor === undefined ? {} : { cursor });
      items.push(...(page[key] ?? []));
      cursor = page.nextCursor;
      if (!cursor) break;
    }
    return items;
  }

  async function runStep(step) {
    switch (step.op) {
      case 'list_tools': {
        const tools = await paginate(p => client.listTools(p, reqOpts()), 'tools');
        return { names: tools.map(t => t.name), tools };
      }
      case 'list_prompts': {
        const prompts = await paginate(p => client.listPrompts(p, reqOpts()), 'prompts');
        return { names: prompts.map(p => p.name), prompts };
      }
      case 'list_resources': {
        const resources = await paginate(p => client.listResources(p, reqOpts()), 'resources');
        return { uris: resources.map(r => r.uri), names: resources.map(r => r.name ?? null), resources };
      }
      case 'list_resource_templates': {
        const ts = await paginate(p => client.listResourceTemplates(p, reqOpts()), 'resourceTemplates');
        return { uris: ts.map(r => r.uriTemplate), names: ts.map(r => r.name ?? null), resourceTemplates: ts };
      }
      case 'call': {
        const progress = [];
        const opts = reqOpts(step.progress ? { onprogress: p => progress.push(p.progress) } : {});
        const r = await client.callTool({ name: step.tool, arguments: step.args ?? {} }, undefined, opts);
        return {
          content: r.content ?? [],
          structuredContent: r.structuredContent ?? null,
          isError: Boolean(r.isError),
          meta: r._meta ?? null,
          progress,
        };
      }
      case 'get_prompt': {
        const a = {};
        for (const [k, v] of Object.entries(step.args ?? {})) a[k] = String(v);
        const r = await client.getPrompt({ name: step.name, arguments: a }, reqOpts());
        return { messages: r.messages ?? [], description: r.description ?? null };
      }
      case 'read_resource': {
        const r = await client.readResource({ uri: step.uri }, reqOpts());
        return { contents: r.contents ?? [] };
      }
      case 'call_cancel': {
        // AbortSignal is the SDK's cancellation: it sends notifications/cancelled{requestId, reason}.
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort('cancelled by ts_client'), Number(step.after_ms ?? 300));
        try {
          const r = await client.callTool({ name: step.tool, arguments: step.args ?? {} }, undefined, reqOpts({ signal: ac.signal }));
          return { cancelled: false, completed: true, result: r };
        } catch (e) {
          if (ac.signal.aborted) {
            await sleep(50); // let the notifications/cancelled reach the wire
            return { cancelled: true };
          }
          return { cancelled: false, ...errorEntry(e) };
        } finally {
          clearTimeout(timer);
        }
      }
      case 'wait_notification': {
        const deadline = Date.now() + Number(step.timeout_ms ?? 5000);
        while (!out.notifications.includes(step.method)) {
          const remaining = deadline - Date.now();
          if (remaining <= 0) break;
          await new Promise(resolve => {
            const w = () => { waiters.delete(w); clearTimeout(t); resolve(); };
            const t = setTimeout(w, remaining);
            waiters.add(w);
          });
        }
        return { received: out.notifications.includes(step.method) };
      }
      case 'sleep':
        await sleep(Number(step.ms ?? 0));
        return { slept_ms: step.ms ?? 0 };
      case 'ping':
        await client.ping(reqOpts());
        return { pong: true };
      default:
        return { error: `unknown op ${JSON.stringify(step.op)}`, code: null };
    }
  }

  for (const step of steps) {
    try {
      out.results.push(await runStep(step));
    } catch (e) {
      debug('step failed', e);
      out.results.push(errorEntry(e));
    }
  }
  out.ok = true;
  try {
    if (args.transport === 'http' && transport.sessionId) await transport.terminateSession();
  } catch (e) {
    out.teardown_error = errorEntry(e).error;
  }
  try {
    await client.close();
  } catch (e) {
    out.teardown_error = out.teardown_error ?? errorEntry(e).error;
  }
  return emit(0);
}

main().catch(e => {
  process.stdout.write(JSON.stringify({ ok: false, results: [], sampling_calls: 0, elicitation_calls: 0, roots_calls: 0, notifications: [], error: `fatal: ${e?.stack ?? e}` }) + '\n', () => process.exit(1));
});
