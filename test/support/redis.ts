// A real redis-server for the queue tests and benchmark: started on a free
// port in its own folder, stopped (SIGTERM: Redis writes its append-only
// file first) and started again on the same port and folder when a test
// restarts it. The Debian package `redis-server` provides the binary;
// .ci/run installs it when missing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

const CANDIDATES = ['/usr/bin/redis-server', '/usr/sbin/redis-server', '/usr/local/bin/redis-server'];

/** The redis-server binary: $SLIMTENSOR_REDIS_SERVER, else on PATH or in the usual places; undefined when there is none. */
export function redisServerBinary(): string | undefined {
  const env = process.env.SLIMTENSOR_REDIS_SERVER;
  if (env !== undefined && env !== '') return env;
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim() !== '') return which.stdout.trim();
  return CANDIDATES.find((p) => existsSync(p));
}

/**
 * Whether a missing redis-server fails the tests instead of skipping them:
 * in CI (.ci/run installs the package, so its absence is a broken setup)
 * and whenever SLIMTENSOR_REQUIRE_REDIS=1.
 */
export function redisRequired(): boolean {
  return process.env.CI === 'true' || process.env.SLIMTENSOR_REQUIRE_REDIS === '1';
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Sends PING; true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      got += d.toString();
      if (got.includes('\r\n')) done(got.startsWith('+PONG'));
    });
  });
}

export interface RedisServerOptions {
  /** Append-only file with fsync on every write: jobs survive a restart. Default false (nothing on disk). */
  persistent?: boolean;
}

export class RedisServer {
  private child: ChildProcess | undefined;
  private log = '';

  private constructor(
    readonly binary: string,
    readonly port: number,
    readonly dir: string,
    private readonly persistent: boolean,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts a server on a free port. */
  static async start(binary: string, o: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-redis-'));
    for (let tries = 0; ; tries++) {
      const s = new RedisServer(binary, await freePort(), dir, o.persistent === true);
      try {
        await s.startAgain();
        return s;
      } catch (e) {
        if (tries >= 3) {
          await fsp.rm(dir, { recursive: true, force: true });
          throw e;
        }
      }
    }
  }

  /** (Re)starts the server on its port and folder. */
  async startAgain(): Promise<void> {
    if (this.child !== undefined) throw new Error('redis-server is running');
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--daemonize', 'no', '--loglevel', 'warning'];
    args.push(...(this.persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
    const child = spawn(this.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    // A test run that ends without after() (a crash, process.exit) must not leave the server behind.
    const killOnExit = (): void => {
      child.kill('SIGKILL');
    };
    process.once('exit', killOnExit);
    child.once('exit', () => process.removeListener('exit', killOnExit));
    this.log = '';
    child.stdout?.on('data', (d: Buffer) => (this.log += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.log += d.toString()));
    let exited = false;
    child.once('exit', () => {
      exited = true;
      if (this.child === child) this.child = undefined;
    });
    const until = Date.now() + 10_000;
    while (!(await ping(this.port))) {
      if (exited) throw new Error(`redis-server exited at start: ${this.log.trim()}`);
      if (Date.now() > until) {
        child.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING on port ${this.port} within 10 s: ${this.log.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops the server (SIGTERM: the append-only file is flushed) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await exited;
  }

  /** Stops the server and removes its folder. */
  async dispose(): Promise<void> {
    await this.stop();
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}
