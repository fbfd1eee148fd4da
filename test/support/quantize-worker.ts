// Runs in a worker_thread: quantizes the seeded tensor the parent describes
// and posts the bytes back (the parent compares them with its own).
import { parentPort, workerData } from 'node:worker_threads';
import { quantize, Tensor, type QuantizeOptions } from '../../lib/index';
import { Rng } from './random';

interface Job {
  seed: number;
  rows: number;
  cols: number;
  options: QuantizeOptions[];
}

async function main(): Promise<void> {
  const job = workerData as Job;
  const t = Tensor.from(new Rng(job.seed).normals(job.rows * job.cols), [job.rows, job.cols]);
  // all formats at once: the worker's own calls overlap on the pool too
  const results = await Promise.all(job.options.map((o) => quantize(t, o)));
  parentPort!.postMessage(results.map((q) => ({ data: q.data, scales: q.scales?.data, zeros: q.zeros?.data })));
}

main().catch((e: unknown) => {
  parentPort!.postMessage({ error: String(e) });
});
