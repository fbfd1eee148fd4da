import { prepare, FULL } from './bench/infer';
(async () => { const t0 = Date.now(); console.log(await prepare(FULL, console.log), (Date.now() - t0) / 1000); })();
