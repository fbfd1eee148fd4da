// binding.gyp (node-gyp: the CPU addon) and CMakeLists.txt (cmake-js: the
// CUDA build) compile the same C++ with the same flags. npm test's CUDA
// compile check links build/'s objects into build-cuda/ instead of
// compiling them again (SLIMTENSOR_CPU_OBJECTS, scripts/check-cuda.cjs), so
// CMake's own compile of them runs only in `npm run build:cuda`: this file
// is what keeps the two lists and their flags from drifting apart.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..');

interface GypTarget {
  target_name: string;
  sources: string[];
  defines?: string[];
  cflags_cc?: string[];
  conditions?: [string, { cflags_cc?: string[] }][];
}
const gyp = JSON.parse(fs.readFileSync(path.join(ROOT, 'binding.gyp'), 'utf8')) as { variables: { core_flags: string[] }; targets: GypTarget[] };
const cmake = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8').replace(/#[^\n]*/g, '');

/** The words of CMake's `set(NAME ...)` / `list(APPEND NAME ...)` calls, in order. */
function cmakeList(command: RegExp): string[] {
  const words: string[] = [];
  for (const m of cmake.matchAll(command)) words.push(...(m[1] as string).split(/\s+/).filter(Boolean));
  return words;
}

/** The x86 flags CMake gives each source (set_source_files_properties ... COMPILE_OPTIONS "..."). */
function cmakeIsaFlags(): Map<string, string[]> {
  const flags = new Map<string, string[]>();
  for (const m of cmake.matchAll(/set_source_files_properties\(([^)]*?)PROPERTIES\s+COMPILE_OPTIONS\s+"([^"]*)"\)/g)) {
    for (const f of (m[1] as string).split(/\s+/).filter(Boolean)) flags.set(f, (m[2] as string).split(';'));
  }
  return flags;
}

const addon = gyp.targets.find((t) => t.target_name === 'slimtensor') as GypTarget;
const simdTargets = gyp.targets.filter((t) => t !== addon);

describe('build files: binding.gyp and CMakeLists.txt build the same CPU code', () => {
  it('the same CPU sources (cuda_stub.cc where CMake has no CUDA compiler) and the same SIMD sources', () => {
    const cpu = cmakeList(/set\(ST_SOURCES([^)]*)\)/g);
    const cmakeCpuOnly = cmakeList(/else\(\)\s*list\(APPEND ST_SOURCES([^)]*)\)/g);
    expect(cmakeCpuOnly).to.deep.equal(['native/core/cuda_stub.cc']);
    expect([...cpu, ...cmakeCpuOnly].sort()).to.deep.equal([...addon.sources].sort());
    const simd = cmakeList(/set\(ST_SIMD_SOURCES([^)]*)\)/g);
    expect(simd.length).to.be.greaterThan(0);
    expect([...simd].sort()).to.deep.equal(simdTargets.flatMap((t) => t.sources).sort());
  });

  it('each SIMD source gets the same ISA flags', () => {
    const isa = cmakeIsaFlags();
    for (const t of simdTargets) {
      const x64 = t.conditions?.find(([cond]) => cond === "target_arch=='x64'")?.[1].cflags_cc;
      expect(x64, `${t.target_name}: x64 flags`).to.be.an('array').that.is.not.empty;
      for (const f of t.sources) expect(isa.get(f), f).to.deep.equal(x64);
    }
  });

  it('the same compiler flags apart from the optimisation level, and the same defines', () => {
    const m = /set\(ST_CXX_FLAGS\s+\$\{SLIMTENSOR_CXX_OPT\}([^)]*)\)/.exec(cmake);
    expect(m, 'set(ST_CXX_FLAGS ${SLIMTENSOR_CXX_OPT} ...)').to.not.equal(null);
    const cmakeFlags = (m?.[1] as string).split(/\s+/).filter(Boolean);
    // -std=c++17 is CMAKE_CXX_STANDARD 17 (extensions off) there.
    expect(cmake).to.match(/set\(CMAKE_CXX_STANDARD 17\)/).and.match(/set\(CMAKE_CXX_EXTENSIONS OFF\)/);
    const gypFlags = gyp.variables.core_flags.filter((f) => f !== '-std=c++17' && f !== '-O3');
    expect(cmakeFlags).to.deep.equal(gypFlags);
    expect(cmake).to.match(/set\(SLIMTENSOR_CXX_OPT "-O3"/);
    const defines = /target_compile_definitions\(slimtensor PRIVATE([^)]*)\)/.exec(cmake)?.[1]?.split(/\s+/).filter(Boolean) ?? [];
    expect(defines.filter((d) => d !== 'BUILDING_NODE_EXTENSION').sort()).to.deep.equal([...(addon.defines ?? [])].sort());
  });
});
