// The package as `npm install slimtensor` gets it on a machine without a
// compiler (issue 13): the packed tarball carries prebuilds/linux-x64, and
// installing it into an empty project with no gcc/g++/cc/c++/make on PATH
// compiles nothing — node-gyp-build's install step finds the prebuild —
// and quantize runs from ESM and CommonJS on that prebuild.
//
// Cheap enough for `npm test` (23 s on a quiet machine here: pack 4 s,
// install 6 s, the compile attempt 8 s; 37-39 s at a load of 11-25): the prebuild is the addon
// already in build/Release, which scripts/prebuild.cjs (the prepack script)
// reuses as it is when it is current with native/ (npm test has just
// rebuilt it if it was not: scripts/builds.cjs), so nothing is compiled;
// `npm pack` then runs without scripts (prepack just ran; dist/ is built by
// npm test), and the install reads its dependencies from npm's cache
// (--prefer-offline).
import { expect } from 'chai';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { quantizeSync, Tensor } from '../lib/index';
import { skip } from './support/skip';

const root = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string; scripts: Record<string, string> };
const COMPILERS = ['gcc', 'g++', 'cc', 'c++', 'make', 'clang', 'clang++'];

/** An executable's real path from PATH, or undefined. */
function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.realpathSync(p);
    } catch {
      // not here
    }
  }
  return undefined;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 180000 });
}

const SAMPLE = 'Float32Array.from({ length: 128 }, (_, i) => Math.sin(i) * 3)';
const PROBE = (importLine: string): string =>
  `${importLine}\nconst q = st.quantizeSync(st.Tensor.from(${SAMPLE}, [2, 64]), { format: 'q8_0' });\nconsole.log(JSON.stringify({ data: Buffer.from(q.data).toString('hex'), addon: gyp.resolve(path.dirname(req.resolve('slimtensor/package.json'))) }));`;

describe('prebuild: the packed package installs and runs without a compiler', function () {
  this.timeout(240000);
  const musl = fs.existsSync('/etc/alpine-release');
  const supported = os.platform() === 'linux' && os.arch() === 'x64' && !musl;
  let tmp: string;
  let app: string;
  let env: NodeJS.ProcessEnv;
  let install: SpawnSyncReturns<string>;
  let packed: { filename: string; files: { path: string }[] };
  const seconds: Record<string, number> = {};
  const timed = <T>(what: string, f: () => T): T => {
    const t0 = performance.now();
    try {
      return f();
    } finally {
      seconds[what] = (performance.now() - t0) / 1000;
    }
  };

  const unsupported = `the package carries a linux-x64 glibc prebuild only; on ${os.platform()}-${os.arch()}${musl ? ' (musl)' : ''} npm install compiles`;

  before(function () {
    if (!supported) return;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slimtensor-prebuild-'));
    // prepack, as npm pack runs it
    expect(pkg.scripts.prepack).to.equal('node scripts/prebuild.cjs');
    const pre = timed('prepack', () => run(process.execPath, [path.join(root, 'scripts', 'prebuild.cjs')], root, process.env));
    expect(pre.status, pre.stdout + pre.stderr).to.equal(0);
    const npm = which('npm');
    expect(npm, 'npm on PATH').to.be.a('string');
    const pack = timed('pack', () => run(process.execPath, [npm as string, 'pack', '--ignore-scripts', '--json', '--pack-destination', tmp], root, process.env));
    expect(pack.status, pack.stderr).to.equal(0);
    packed = (JSON.parse(pack.stdout) as (typeof packed)[])[0] as typeof packed;

    // A PATH with node, npm and sh only: no compiler, no make.
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync(npm as string, path.join(bin, 'npm'));
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
    env = { HOME: os.homedir(), PATH: bin, TMPDIR: os.tmpdir() };
    for (const k of ['npm_config_cache', 'npm_config_userconfig']) if (process.env[k] !== undefined) env[k] = process.env[k];
    app = path.join(tmp, 'app');
    fs.mkdirSync(app);
    // allowScripts: npm 11 runs a dependency's install script only when the project allows it.
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, allowScripts: { [pkg.name]: true } }));
    install = timed('install', () =>
      run(
        process.execPath,
        [npm as string, 'install', path.join(tmp, packed.filename), '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'],
        app,
        env,
      ),
    );
  });

  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the tarball carries prebuilds/linux-x64/slimtensor.glibc.node, the sources to build elsewhere, and no tests or build output', function () {
    if (!supported) skip(this, unsupported);
    const files = packed.files.map((f) => f.path);
    expect(files).to.include(`prebuilds/linux-x64/${pkg.name}.glibc.node`);
    // node-gyp's fallback needs binding.gyp, every source it names and the headers they include: all of native/
    const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
    const sources = [...gyp.matchAll(/"(native\/[^"]+\.cc)"/g)].map((m) => m[1] as string);
    expect(sources.length, 'sources named by binding.gyp').to.be.above(10);
    const native = (fs.readdirSync(path.join(root, 'native'), { recursive: true }) as string[]).map((f) => `native/${f.split(path.sep).join('/')}`).filter((f) => fs.statSync(path.join(root, f)).isFile());
    expect(files).to.include.members(['binding.gyp', ...sources, ...native, 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'models/stories260K.gguf']);
    const unwanted = files.filter((f) => /^(build|build-cuda|test|bench|scripts|examples|node_modules|\.tmp|\.github)\//.test(f) || f.endsWith('.tgz'));
    expect(unwanted).to.deep.equal([]);
  });

  it('no compiler or make can be found in the install environment', function () {
    if (!supported) skip(this, unsupported);
    for (const c of COMPILERS) expect(spawnSync(c, ['--version'], { env }).error, c).to.have.property('code', 'ENOENT');
  });

  it('npm install runs node-gyp-build, which finds the prebuild and compiles nothing', function () {
    if (!supported) skip(this, unsupported);
    expect(install.status, install.stdout + install.stderr).to.equal(0);
    expect(install.stdout).to.match(new RegExp(`> ${pkg.name}@${pkg.version} install\\n> node-gyp-build`));
    expect(fs.existsSync(path.join(app, 'node_modules', pkg.name, 'build')), 'build/ in the installed package').to.equal(false);
  });

  it('quantize from ESM and from CommonJS, on the prebuild, gives the bytes it gives here', function () {
    if (!supported) skip(this, unsupported);
    const want = Buffer.from(quantizeSync(Tensor.from(Float32Array.from({ length: 128 }, (_, i) => Math.sin(i) * 3), [2, 64]), { format: 'q8_0' }).data).toString('hex');
    const prebuild = path.join(app, 'node_modules', pkg.name, 'prebuilds', 'linux-x64', `${pkg.name}.glibc.node`);
    const esm = PROBE(
      "import * as st from 'slimtensor'; import gyp from 'node-gyp-build'; import * as path from 'node:path'; import { createRequire } from 'node:module'; const req = createRequire(import.meta.url);",
    );
    const cjs = PROBE("const st = require('slimtensor'); const gyp = require('node-gyp-build'); const path = require('node:path'); const req = require;");
    for (const [kind, args] of [
      ['ESM', ['--input-type=module', '-e', esm]],
      ['CommonJS', ['-e', cjs]],
    ] as const) {
      const r = run(process.execPath, [...args], app, env);
      expect(r.status, `${kind}: ${r.stderr}`).to.equal(0);
      const out = JSON.parse(r.stdout) as { data: string; addon: string };
      expect(out.addon, kind).to.equal(prebuild);
      expect(out.data, kind).to.equal(want);
    }
  });

  it('where no prebuild fits, the same install would have to compile, and here it cannot', function () {
    if (!supported) skip(this, unsupported);
    // A real python for gyp's configure step where there is one, so what fails is the compile itself.
    const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout?.trim();
    const r = run(process.execPath, [which('npm') as string, 'rebuild', pkg.name, '--foreground-scripts', '--offline'], app, {
      ...env,
      npm_config_build_from_source: 'true',
      ...(python ? { PYTHON: python } : {}),
    });
    expect(r.status).to.not.equal(0);
    expect(r.stdout + r.stderr).to.match(python ? /not found: make/ : /find Python|not found: make/);
    expect(fs.existsSync(path.join(app, 'node_modules', pkg.name, 'build', 'Release', `${pkg.name}.node`))).to.equal(false);
    this.test!.title += ` (this run: ${Object.entries(seconds).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')})`;
  });
});
