/*
 * firkin's JavaScript REPL driver: one persistent `node` process per JavaScript context.
 *
 * Usage: node repl.js <fd> [--typescript]. Commands arrive as JSON lines on stdin; every message
 * back goes as a JSON line to file descriptor <fd> (a pipe the server passed in):
 *   {"op":"exec","id":"<token>","code":"...","env":{...}}  run one cell
 *   {"op":"env","set":{...},"unset":[...]}                   change process.env (sandbox-wide)
 * Messages: {"type":"ready"}, {"type":"stdout"|"stderr","text"}, {"type":"result","text"},
 *           {"type":"error","name","value","traceback"}, {"type":"done","id"},
 *           {"type":"fatal","text"} (the driver cannot run and exits).
 *
 * Cells run in this process's own global context (vm.runInThisContext), so globals and
 * top-level let/const persist across cells and values from required modules are of the same
 * realm. The completion value of a cell is its result (util.inspect). process.stdout/stderr
 * writes (console.log included) become stdout/stderr messages as they happen. A cell using
 * top-level `await` runs inside an async function; its plain top-level declarations are
 * rewritten to globals so they persist too. SIGINT interrupts the running cell, never the
 * process. Written for Node 18 and later.
 *
 * ESM: a cell's static `import` declarations (`import x from 'm'`, `import {a as b} from 'm'`,
 * `import * as ns from 'm'`, `import 'm'`) become dynamic imports whose bindings are assigned
 * to globals, so they persist like everything else; the cell then runs as an async cell.
 * Specifiers resolve from the current working directory (its node_modules), as `require` does.
 *
 * With --typescript every cell is first transpiled by the `typescript` package (Debian's
 * node-typescript): types are erased, nothing is type-checked, imports are kept as written.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');
const vm = require('vm');
const readline = require('readline');
const Module = require('module');

const url = require('url');

const outFd = Number(process.argv[2]);
const typescript = process.argv.slice(3).includes('--typescript');

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

// TypeScript: the compiler module, found like `require` would from the cwd, else Debian's copy.
function loadTypeScript() {
  const tries = [
    () => Module.createRequire(path.join(process.cwd(), '[firkin-cell]'))('typescript'),
    () => require('typescript'),
    () => require('/usr/share/nodejs/typescript'),
  ];
  for (const attempt of tries) {
    try {
      return attempt();
    } catch (e) {
      // next
    }
  }
  return null;
}

let ts = null;

function transpile(code, filename) {
  const out = ts.transpileModule(code, {
    fileName: filename.replace(/[<>]/g, '') + '.ts',
    reportDiagnostics: true,
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      // Keep imports whose names only later cells use.
      isolatedModules: true,
      preserveValueImports: true,
      sourceMap: false,
      inlineSourceMap: false,
    },
  });
  const errors = (out.diagnostics || []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length) {
    const d = errors[0];
    let where = '';
    if (d.file && d.start !== undefined) {
      const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
      where = ` (${filename}:${line + 1}:${character + 1})`;
    }
    const err = new SyntaxError(ts.flattenDiagnosticMessageText(d.messageText, '\n') + where);
    err.stack = `SyntaxError: ${err.message}`; // the driver's frames say nothing about the cell
    throw err;
  }
  return out.outputText.replace(/^export \{\};\s*$/m, '');
}

// ESM imports, resolved from the current working directory.
async function importFromCwd(spec) {
  if (spec.startsWith('node:') || /^(file|data):/.test(spec) || Module.builtinModules.includes(spec)) {
    return import(spec);
  }
  let target = spec;
  try {
    target = url.pathToFileURL(Module.createRequire(path.join(process.cwd(), '[firkin-cell]')).resolve(spec)).href;
  } catch (e) {
    if (spec.startsWith('.') || spec.startsWith('/')) target = url.pathToFileURL(path.resolve(process.cwd(), spec)).href;
  }
  return import(target);
}
Object.defineProperty(globalThis, '__firkinImport', { value: importFromCwd, enumerable: false });

const IMPORT_FROM = /^([ \t]*)import\s+((?:[\w$]+\s*,\s*)?(?:\*\s*as\s+[\w$]+|\{[^}]*\})|[\w$]+)\s*from\s*(['"])([^'"\n]+)\3[ \t]*;?/gm;
const IMPORT_BARE = /^([ \t]*)import\s*(['"])([^'"\n]+)\2[ \t]*;?/gm;

// One statement (on one line, padded with the newlines it replaced) per import declaration.
function importStatement(indent, clause, spec, matched) {
  const load = `await __firkinImport(${JSON.stringify(spec)})`;
  const stmts = [];
  let rest = clause.trim();
  let def = null;
  const d = /^([\w$]+)\s*(?:,\s*|$)/.exec(rest);
  if (d) {
    def = d[1];
    rest = rest.slice(d[0].length);
  }
  const ns = /^\*\s*as\s+([\w$]+)$/.exec(rest);
  const pairs = [];
  if (def) pairs.push(`default: globalThis.${def}`);
  if (ns) {
    stmts.push(`globalThis.${ns[1]} = ${load};`);
    if (pairs.length) stmts.push(`({${pairs.join(', ')}} = globalThis.${ns[1]});`);
  } else {
    const named = /^\{([^}]*)\}$/.exec(rest);
    if (named) {
      for (const part of named[1].split(',')) {
        const m = /^\s*([\w$]+)(?:\s+as\s+([\w$]+))?\s*$/.exec(part);
        if (m) pairs.push(`${m[1]}: globalThis.${m[2] || m[1]}`);
      }
    }
    stmts.push(`({${pairs.join(', ')}} = ${load});`);
  }
  const newlines = (matched.match(/\n/g) || []).length;
  return `${indent};${stmts.join(' ')} void 0;` + '\n'.repeat(newlines);
}

function rewriteImports(code) {
  let found = false;
  let out = code.replace(IMPORT_FROM, (m, indent, clause, _q, spec) => {
    found = true;
    return importStatement(indent, clause, spec, m);
  });
  out = out.replace(IMPORT_BARE, (m, indent, _q, spec) => {
    found = true;
    return `${indent};await __firkinImport(${JSON.stringify(spec)}); void 0;`;
  });
  return { code: out, found };
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
  // A declaration has no value, even though its rewrite to a global assignment has one.
  const lastDeclares = /^(?:let|const|var)\s/.test(lines[lines.length - 1] || '');
  // The returned expression is the last line, or what follows one of its semicolons.
  const cuts = [0];
  for (let i = last.length - 1; i >= 0; i -= 1) if (last[i] === ';') cuts.push(i + 1);
  for (const cut of cuts) {
    if (cut === 0 && lastDeclares) continue;
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

async function runCell(source) {
  cellNumber += 1;
  const filename = `<cell-${cellNumber}>`;
  let code = typescript ? transpile(source, filename) : source;
  let script;
  let isAsync = false;
  const imports = /\bimport\b/.test(code) ? rewriteImports(code) : { found: false };
  if (imports.found) {
    code = imports.code;
    script = new vm.Script(asyncWrapper(code), { filename });
    isAsync = true;
  } else {
    try {
      script = new vm.Script(code, { filename });
    } catch (e) {
      if (!(e instanceof SyntaxError) || !/await/.test(String(e.message)) || !/\bawait\b/.test(code)) throw e;
      script = new vm.Script(asyncWrapper(code), { filename });
      isAsync = true;
    }
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

if (typescript) {
  ts = loadTypeScript();
  if (!ts) {
    send({ type: 'fatal', text: "TypeScript is unavailable: the 'typescript' package is not installed" });
    process.exit(3);
  }
}
send({ type: 'ready', node: process.version, typescript: ts ? ts.version : undefined });
