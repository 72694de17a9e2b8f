/*
 * firkin's JavaScript REPL driver: one persistent `node` process per JavaScript context.
 *
 * Usage: node repl.js <fd>. Commands arrive as JSON lines on stdin; every message back goes as a
 * JSON line to file descriptor <fd> (a pipe the server passed in):
 *   {"op":"exec","id":"<token>","code":"...","env":{...}}  run one cell
 *   {"op":"env","set":{...},"unset":[...]}                   change process.env (sandbox-wide)
 * Messages: {"type":"ready"}, {"type":"stdout"|"stderr","text"}, {"type":"result","text"},
 *           {"type":"error","name","value","traceback"}, {"type":"done","id"}.
 *
 * Cells run in this process's own global context (vm.runInThisContext), so globals and
 * top-level let/const persist across cells and values from required modules are of the same
 * realm. The completion value of a cell is its result (util.inspect). process.stdout/stderr
 * writes (console.log included) become stdout/stderr messages as they happen. A cell using
 * top-level `await` runs inside an async function; its plain top-level declarations are
 * rewritten to globals so they persist too. SIGINT interrupts the running cell, never the
 * process. Written for Node 18 and later.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');
const vm = require('vm');
const readline = require('readline');
const Module = require('module');

const outFd = Number(process.argv[2]);

function send(msg) {
  const buf = Buffer.from(JSON.stringify(msg) + '\n', 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(outFd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

function makeWrite(type) {
  return function write(chunk, encoding, cb) {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    let text;
    if (typeof chunk === 'string') text = chunk;
    else if (chunk instanceof Uint8Array) text = Buffer.from(chunk).toString(encoding && encoding !== 'buffer' ? encoding : 'utf8');
    else text = String(chunk);
    if (text.length) send({ type, text });
    if (typeof cb === 'function') process.nextTick(cb);
    return true;
  };
}
process.stdout.write = makeWrite('stdout');
process.stderr.write = makeWrite('stderr');

// What a cell sees as module-ish globals: `require` resolves from the working directory.
const cellFile = path.join(process.cwd(), '[firkin-cell]');
globalThis.require = Module.createRequire(cellFile);
globalThis.__filename = cellFile;
globalThis.__dirname = process.cwd();
globalThis.module = { exports: {}, require: globalThis.require, filename: cellFile };
globalThis.exports = globalThis.module.exports;

let interruptCurrent = null; // rejects the pending await of the running cell on SIGINT
process.on('SIGINT', () => {
  if (interruptCurrent) interruptCurrent(interruptedError());
});
process.on('uncaughtException', (e) => {
  send({ type: 'stderr', text: 'Uncaught ' + describe(e) + '\n' });
});
process.on('unhandledRejection', (e) => {
  send({ type: 'stderr', text: 'Unhandled promise rejection: ' + describe(e) + '\n' });
});

function interruptedError() {
  const e = new Error('Execution interrupted');
  e.name = 'KeyboardInterrupt';
  return e;
}

function describe(e) {
  if (e instanceof Error) return e.stack || String(e);
  return util.inspect(e);
}

// Drops the driver's own frames (and node internals below them) from a cell's stack.
function cleanStack(stack) {
  if (!stack) return '';
  const lines = String(stack).split('\n');
  const cut = lines.findIndex((l) => /^\s+at (new Script|sigintHandlersWrap|Script\.runInThisContext|runCell) /.test(l));
  return (cut > 0 ? lines.slice(0, cut) : lines).join('\n');
}

function errorMessage(e) {
  if (e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
    return { type: 'error', name: 'KeyboardInterrupt', value: 'Execution interrupted', traceback: '' };
  }
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    return {
      type: 'error',
      name: String(e.name || 'Error'),
      value: String(e.message === undefined ? '' : e.message),
      traceback: cleanStack(e.stack),
    };
  }
  return { type: 'error', name: 'Error', value: util.inspect(e), traceback: '' };
}

let cellNumber = 0;

// Top-level await: wrap the cell in an async function, turn plain top-level declarations
// (unindented `let|const|var x =`, `function f`, `class C`) into globals, and return the last
// line's value when it is an expression.
function asyncWrapper(code) {
  const lines = code.replace(/\s+$/, '').split('\n');
  const body = lines.map((line) => line
    .replace(/^(?:let|const|var)\s+([A-Za-z_$][\w$]*)\s*=/, 'globalThis.$1 =')
    .replace(/^(async\s+)?function(\s*\*)?\s+([A-Za-z_$][\w$]*)/, 'globalThis.$3 = $1function$2 $3')
    .replace(/^class\s+([A-Za-z_$][\w$]*)/, 'globalThis.$1 = class $1'));
  const last = body.length ? body[body.length - 1] : '';
  const head = body.slice(0, -1).join('\n');
  // The returned expression is the last line, or what follows one of its semicolons.
  const cuts = [0];
  for (let i = last.length - 1; i >= 0; i -= 1) if (last[i] === ';') cuts.push(i + 1);
  for (const cut of cuts) {
    const expr = last.slice(cut).replace(/;\s*$/, '');
    if (!expr.trim() || /^\s*(return|throw|if|for|while|do|switch|try|break|continue)\b/.test(expr)
        || /^\s*[}\])]/.test(expr) || /^\s*globalThis\.[\w$]+ = (async\s+)?(function|class)\b/.test(expr)) continue;
    const candidate = `(async () => {\n${head}\n${last.slice(0, cut)}\nreturn (${expr}\n);\n})()`;
    try {
      new vm.Script(candidate);
      return candidate;
    } catch (e) {
      // not an expression there
    }
  }
  return `(async () => {\n${body.join('\n')}\n})()`;
}

function awaitInterruptible(promise) {
  return new Promise((resolve, reject) => {
    interruptCurrent = reject;
    Promise.resolve(promise).then(resolve, reject);
  }).finally(() => {
    interruptCurrent = null;
  });
}

async function runCell(code) {
  cellNumber += 1;
  const filename = `<cell-${cellNumber}>`;
  let script;
  let isAsync = false;
  try {
    script = new vm.Script(code, { filename });
  } catch (e) {
    if (!(e instanceof SyntaxError) || !/await/.test(String(e.message)) || !/\bawait\b/.test(code)) throw e;
    script = new vm.Script(asyncWrapper(code), { filename });
    isAsync = true;
  }
  let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  if (isAsync) value = await awaitInterruptible(value);
  return value;
}

function setEnv(vars, unset) {
  for (const k of unset || []) delete process.env[k];
  for (const [k, v] of Object.entries(vars || {})) process.env[k] = String(v);
}

async function handle(cmd) {
  if (cmd.op === 'env') {
    setEnv(cmd.set, cmd.unset);
    return;
  }
  if (cmd.op !== 'exec') return;
  const saved = {};
  for (const k of Object.keys(cmd.env || {})) saved[k] = process.env[k];
  setEnv(cmd.env, []);
  try {
    const value = await runCell(String(cmd.code));
    if (value !== undefined) {
      send({ type: 'result', text: util.inspect(value, { depth: 4, colors: false }) });
    }
  } catch (e) {
    send(errorMessage(e));
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    send({ type: 'done', id: cmd.id });
  }
}

// Commands are handled one after the other, in arrival order.
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    send({ type: 'stderr', text: `firkin repl: bad command: ${e.message}\n` });
    return;
  }
  chain = chain.then(() => handle(cmd)).catch((e) => send({ type: 'stderr', text: describe(e) + '\n' }));
});
rl.on('close', () => process.exit(0));

send({ type: 'ready', node: process.version });
