/**
 * @module Generated agent sessions for the co-location bench (pure, seeded): a shell session on
 * a small project in the base image (coreutils, grep, sed, awk), with a mix of turns like the
 * shell traces': mostly reads (ls, cat, grep, wc, a checksum "test run"), some edits, some
 * shell state (cd, export, a function), and one background job started and later stopped.
 * Every command uses absolute paths, so a cd changes only the shell's state. No output depends
 * on when a command ran, so a session's final state is the same in every run.
 */
import { TRACE_FORMAT, TRACE_BASE_IMAGE, type Trace, type TraceTurn } from './trace.js';
import { seededRandom } from '../core/rng.js';

/** Turn kinds and their weights (per 100 turns). */
export const SESSION_MIX = { read: 58, test: 12, edit: 18, shell: 9, job: 3 } as const;

const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'omega', 'kappa', 'sigma', 'theta', 'lambda', 'zeta'];
const P = '/work/proj';

export function generateSession(name: string, seed: number, turns: number): Trace {
  const rand = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const files = Array.from({ length: 16 }, (_, i) => `${P}/src/f${i}.txt`);
  const setup = [
    `mkdir -p ${P}/src ${P}/out`,
    // deterministic contents: word lines from the seed
    ...files.map((f, i) => `printf '%s\\n' ${Array.from({ length: 20 + ((seed + i) % 30) }, () => pick(WORDS)).join(' ')} > ${f}`),
    `cd ${P}`,
  ];
  let step = 0;
  let jobRunning = false;
  let created = 0;
  const out: TraceTurn[] = [];
  for (let t = 1; t <= turns; t++) {
    let r = rand() * 100;
    const kind = (Object.keys(SESSION_MIX) as Array<keyof typeof SESSION_MIX>).find((k) => (r -= SESSION_MIX[k]) < 0) ?? 'read';
    const f = pick(files);
    const w = pick(WORDS);
    let actions: Array<{ cmd: string; expect_stdout?: string }>;
    switch (kind) {
      case 'read':
        actions = [
          pick([
            { cmd: `ls -la ${P}/src | head -5` },
            { cmd: `cat ${f}` },
            { cmd: `grep -n ${w} -r ${P}/src | head -8` },
            { cmd: `wc -l ${P}/src/*.txt | tail -1` },
            { cmd: `sort ${f} | uniq -c | sort -rn | head -3` },
            { cmd: 'echo step=$STEP.', expect_stdout: `step=${step || ''}.` },
          ]),
        ];
        break;
      case 'test':
        actions = [{ cmd: `cat ${P}/src/*.txt | md5sum; awk 'END { print NR }' ${P}/src/*.txt` }];
        break;
      case 'edit':
        actions = [
          pick([
            { cmd: `sed -i 's/${w}/${w.toUpperCase()}/' ${f}` },
            { cmd: `echo ${w}-${t} >> ${f}` },
            { cmd: `printf 'note %s\\n' ${t} > ${P}/out/note${created++}.txt` },
            { cmd: `cat ${P}/src/*.txt | md5sum > ${P}/out/sum.txt` },
          ]),
        ];
        break;
      case 'shell':
        step = t;
        actions = [pick([{ cmd: `export STEP=${t}` }, { cmd: `cd ${P}/src && export STEP=${t}` }, { cmd: `cd ${P} && export STEP=${t} && count() { wc -l "$@"; }` }])];
        break;
      case 'job':
        actions = jobRunning ? [{ cmd: 'kill %1 && wait' }] : [{ cmd: 'sleep 100000 >/dev/null 2>&1 &' }];
        jobRunning = !jobRunning;
        break;
    }
    out.push({ turn: t, llm: { latency_ms: 2000 + Math.floor(rand() * 2500), prompt_tokens: 2000 + 400 * t, completion_tokens: 40 + Math.floor(rand() * 120) }, actions: actions.map((a) => ({ ...a, timeout_s: 60 })) });
  }
  if (jobRunning) out[out.length - 1]!.actions.push({ cmd: 'kill %1 && wait', timeout_s: 60 });
  return {
    header: {
      format: TRACE_FORMAT,
      name,
      source: `generated session (seed ${seed}): ${JSON.stringify(SESSION_MIX)} per 100 turns`,
      image: { base: TRACE_BASE_IMAGE, packages: [] },
      shell: 'persistent',
      setup,
      verify: [{ cmd: `test -d ${P}/src && ls ${P}/src | wc -l`, expect_exit: 0, expect_stdout: '16', timeout_s: 120 }],
    },
    turns: out,
    file: `${name}.generated`,
  };
}
