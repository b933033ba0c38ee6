#!/usr/bin/env python3
"""The mutation campaign: proves that the verification can fail.

Each mutant is one small wrong change to the library (a weakened memory order, a dropped fence, a
skipped validation). It is applied alone to a scratch copy of the repository; the verification
targets of the mutated component (its model tests, stress tests and unit tests) are built and run
with a time limit. A mutant is `killed` when a test fails, crashes or times out, `survived`
otherwise (a survivor is a missing test). Run through scripts/mutants.sh; see its --help.

Mutant files: one mutant per line, four TAB-separated fields:
    path<TAB>text to find<TAB>replacement<TAB>description
`path` is relative to the repository. In the two text fields, `\\t` is a TAB, `\\n` a newline and
`\\\\` a backslash. The text to find must occur exactly once in that file, or the mutant is
`invalid`. Lines starting with `#` and blank lines are ignored.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Which verification runs for a mutated file: (path regex, [(binary, Catch2 filter or None), ...]).
# The first matching entry wins. Binaries are relative to the build directory; a binary that does
# not exist in this build (the model checker when Relacy is missing) is skipped. Commands run in
# this order and stop at the first failure; the model checker has its own build without a
# sanitizer, built and run first, so an ordering mutant it kills costs no sanitizer rebuild.
MODEL = "tests/model/otlpconc_model"  # in the model build (no sanitizer)
UNIT = "tests/otlpconc_tests"
ALLOC = "tests/otlpconc_alloc_tests"
STRESS = "stress/otlpconc_stress"
SELECTION = [
    (r"include/otlpconc/(hazard_pointer|detail/asymmetric_fence)\.hpp$",
     [(MODEL, "[hazard_pointer]"), (UNIT, "[hazard_pointer]"), (ALLOC, "[hazard_pointer]"),
      (STRESS, "[hazard_pointer],[ms_queue]")]),
    (r"include/otlpconc/(ms_queue|detail/node_cache)\.hpp$",
     [(MODEL, "[ms_queue]"), (UNIT, "[ms_queue]"), (STRESS, "[ms_queue]")]),
    (r"include/otlpconc/chase_lev_deque\.hpp$",
     [(MODEL, "[chase_lev_deque]"), (UNIT, "[chase_lev_deque]"), (STRESS, "[chase_lev_deque]")]),
    (r"include/otlpconc/(work_stealing_pool|detail/event_count|detail/pool_task)\.hpp$",
     [(MODEL, "[event_count]"), (UNIT, "[work_stealing_pool]"), (ALLOC, "[work_stealing_pool]"),
      (STRESS, "[work_stealing_pool]")]),
    (r"include/otlpconc/detail/park_lock\.hpp$",
     [(MODEL, "[park_lock]"), (UNIT, "[park_lock],[sharded_lru]"), (STRESS, "[park_lock],[sharded_lru]")]),
    (r"include/otlpconc/(sharded_lru|detail/lru_support|detail/lru_chain)\.hpp$",
     [(MODEL, "[sharded_lru]"), (UNIT, "[sharded_lru]"), (STRESS, "[sharded_lru]")]),
    (r"include/otlpconc/(object_pool|topology|detail/pool_threads|detail/cache_handshake)\.hpp$",
     [(MODEL, "[object_pool]"), (UNIT, "[object_pool]"), (STRESS, "[object_pool]")]),
    (r"include/otlpconc/(counter|detail/counter_cells|cache_padded)\.hpp$",
     [(UNIT, "[counter]"), (STRESS, "[counter]")]),
    (r"include/otlpconc/telemetry/detail/admission\.hpp$",
     [(MODEL, "[admission]"), (UNIT, "[telemetry]"), (STRESS, "[telemetry]")]),
    (r"include/otlpconc/telemetry/",
     [(UNIT, "[telemetry]"), (STRESS, "[telemetry]")]),
    (r".*", [(MODEL, None), (UNIT, None), (ALLOC, None), (STRESS, None)]),
]


def unescape(text):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "tn\\":
                out.append({"t": "\t", "n": "\n", "\\": "\\"}[nxt])
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


class Mutant:
    def __init__(self, source, line_no, path, find, replace, description):
        self.source, self.line_no = source, line_no
        self.path, self.find, self.replace, self.description = path, find, replace, description


def parse(files):
    mutants, errors = [], []
    for source in files:
        with open(source, encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                line = raw.rstrip("\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                fields = line.split("\t")
                if len(fields) != 4:
                    errors.append(f"{source}:{n}: expected 4 TAB-separated fields, found {len(fields)}")
                    continue
                path, find, replace, description = fields
                mutants.append(Mutant(source, n, path.strip(), unescape(find), unescape(replace), description.strip()))
    return mutants, errors


def copy_tree(dest):
    """The repository's files (tracked and untracked, not ignored) into dest, replacing what differs."""
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.split(b"\0")
    wanted = set()
    for rel in (p.decode() for p in listed if p):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue
        wanted.add(rel)
        dst = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
            shutil.copy2(src, dst)
    return wanted


def run(cmd, cwd, timeout, env=None):
    """Runs cmd; returns (ok, summary, seconds). A timeout kills the whole process group."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return False, f"timed out after {timeout} s", time.monotonic() - start
    seconds = time.monotonic() - start
    if proc.returncode == 0:
        return True, "", seconds
    text = out.decode(errors="replace")
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}"
    else:
        why = f"exit {proc.returncode}"
    # The first failing Catch2 test case, or the first sanitizer / model-checker verdict. Catch2
    # prints a header (the test case's name, then its sections, between two rules) for every test
    # case with output, passing ones too (a WARN): the failing one is the first header whose own
    # text, up to the next header, holds a FAILED.
    parts = re.split(r"^-{10,}\n((?:.+\n)+?)-{10,}\n", text, flags=re.MULTILINE)
    failing = [parts[i].splitlines()[0] for i in range(1, len(parts) - 1, 2) if "FAILED" in parts[i + 1]]
    verdict = re.search(r"(ERROR: AddressSanitizer: [\w-]+|WARNING: ThreadSanitizer: [\w ]+|"
                        r"FAILED: .+|model check failed: .+|terminate called.*)", text)
    detail = failing[0].strip() if failing else (verdict.group(1).strip() if verdict else text.strip()[-200:])
    return False, f"{why}: {detail}", seconds


def selection_for(path):
    for pattern, commands in SELECTION:
        if re.search(pattern, path):
            return commands
    return []


def main():
    ap = argparse.ArgumentParser(description="Runs mutants; see scripts/mutants.sh --help.")
    ap.add_argument("files", nargs="*")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "mutants"))
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("OTLPCONC_MUTANT_TIMEOUT", "300")))
    args = ap.parse_args()

    files = args.files or sorted(
        os.path.join(ROOT, "tests", "mutants", f) for f in os.listdir(os.path.join(ROOT, "tests", "mutants"))
        if f.endswith(".txt"))
    mutants, errors = parse(files)
    for e in errors:
        print(f"mutants: {e}", file=sys.stderr)
    if errors:
        return 2
    if not mutants:
        print("mutants: no mutants in " + " ".join(files), file=sys.stderr)
        return 2

    work = args.build_dir
    src, build = os.path.join(work, "src"), os.path.join(work, "build")
    os.makedirs(src, exist_ok=True)
    print(f"mutants: {len(mutants)} mutants from {len(files)} file(s); scratch copy in {src}", flush=True)
    copy_tree(src)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    # One build, kept between runs: each mutant rebuilds only what includes the mutated file. ASan
    # and UBSan turn a use of freed memory into a failure; -O1 keeps the build fast enough.
    configure = ["cmake", "-S", src, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                 "-DCMAKE_CXX_COMPILER=g++", "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG",
                 "-DOTLPCONC_SANITIZER=address", "-DOTLPCONC_BUILD_BENCH=OFF", "-DOTLPCONC_BUILD_EXAMPLES=OFF",
                 "-DOTLPCONC_BUILD_TOOLS=OFF", "-DOTLPCONC_WARNINGS_AS_ERRORS=OFF"]
    ok, why, _ = run(configure, ROOT, 600)
    if not ok:
        print(f"mutants: configure failed: {why}", file=sys.stderr)
        return 2
    # The allocation-failure tests replace operator new, so they exist only without a sanitizer:
    # this ASan build has none; they are built in the model's build below.
    available = subprocess.run(["cmake", "--build", build, "--target", "help"], capture_output=True,
                               text=True).stdout
    targets = [t for t in ("otlpconc_tests", "otlpconc_stress")
               if re.search(rf"^\.\.\. {t}\b|\b{t}:", available, re.MULTILINE)]
    build_cmd = ["cmake", "--build", build, "-j", jobs, "--target", *targets]
    # The model checks and the allocation-failure tests: a second build without a sanitizer (Relacy
    # runs threads as fibers; the allocation-failure tests replace operator new). Only the targets a
    # mutant's verification names are built in it.
    model_build = os.path.join(work, "model")
    configure_model = ["cmake", "-S", src, "-B", model_build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                       "-DOTLPCONC_BUILD_TESTS=ON", "-DOTLPCONC_BUILD_STRESS=OFF", "-DOTLPCONC_BUILD_BENCH=OFF",
                       "-DOTLPCONC_BUILD_EXAMPLES=OFF", "-DOTLPCONC_BUILD_TOOLS=OFF",
                       "-DOTLPCONC_WARNINGS_AS_ERRORS=OFF", "-DOTLPCONC_BUILD_MODEL_CHECKS=AUTO"]
    model_configured = run(configure_model, ROOT, 600)[0]
    model_targets = subprocess.run(["cmake", "--build", model_build, "--target", "help"], capture_output=True,
                                   text=True).stdout if model_configured else ""
    have_model = model_targets.find("otlpconc_model") >= 0
    have_alloc = model_targets.find("otlpconc_alloc_tests") >= 0
    if not have_model:
        print("mutants: no model checks in this build (relacy-dev missing?): mutants are judged without them",
              flush=True)
    # The binaries of the sanitizer-free build: whether this build has each, its target, and what a
    # failure to build it is called.
    unsanitized = {MODEL: (have_model, "otlpconc_model", "model build"),
                   ALLOC: (have_alloc, "otlpconc_alloc_tests", "allocation-failure tests build")}
    if not have_alloc:
        print("mutants: no allocation-failure tests in this build: mutants are judged without them", flush=True)

    def verify(commands, label):
        total = 0.0
        built = False
        for binary, flt in commands:
            if binary in unsanitized:
                present, target, what = unsanitized[binary]
                if not present:
                    continue
                ok, why, seconds = run(["cmake", "--build", model_build, "-j", jobs, "--target", target], ROOT, 3600)
                total += seconds
                if not ok:
                    return False, f"{what}: {why}", total
                exe, cwd = os.path.join(model_build, binary), model_build
            else:
                if not built:
                    ok, why, seconds = run(build_cmd, ROOT, 3600)
                    total += seconds
                    if not ok:
                        return False, f"build: {why}", total
                    built = True
                exe, cwd = os.path.join(build, binary), build
            if not os.path.exists(exe):
                continue
            cmd = [exe] + ([flt] if flt else [])
            env = dict(os.environ, OTLPCONC_STRESS_SCALE=os.environ.get("OTLPCONC_STRESS_SCALE", "1"))
            ok, why, seconds = run(cmd, cwd, args.timeout, env)
            total += seconds
            if not ok:
                return False, f"{os.path.basename(binary)} {flt or '(all)'}: {why}", total
        return True, "", total

    # The unmutated code must pass what the mutants are judged by.
    all_commands = []
    for m in mutants:
        for c in selection_for(m.path):
            if c not in all_commands:
                all_commands.append(c)
    ok, why, seconds = verify(all_commands, "baseline")
    if not ok:
        print(f"mutants: the unmutated code fails its own verification ({why}); fix that first", file=sys.stderr)
        return 2
    print(f"mutants: baseline passes ({seconds:.0f} s)", flush=True)

    killed = survived = invalid = 0
    for m in mutants:
        target = os.path.join(src, m.path)
        start = time.monotonic()
        if not os.path.isfile(target):
            status, why = "invalid", f"no file {m.path}"
        else:
            original = open(target, encoding="utf-8").read()
            count = original.count(m.find)
            if count != 1:
                status, why = "invalid", f"the text to find occurs {count} times in {m.path}"
            else:
                with open(target, "w", encoding="utf-8") as f:
                    f.write(original.replace(m.find, m.replace, 1))
                try:
                    ok, why, _ = verify(selection_for(m.path), m.description)
                finally:
                    with open(target, "w", encoding="utf-8") as f:
                        f.write(original)
                status = "survived" if ok else "killed"
                if ok:
                    why = "every test passed"
        seconds = time.monotonic() - start
        killed += status == "killed"
        survived += status == "survived"
        invalid += status == "invalid"
        print(f"{status:8} {m.description}  [{os.path.basename(m.source)}:{m.line_no}]  {why}  ({seconds:.0f} s)",
              flush=True)
    # Leave the scratch build as the unmutated code (the next run rebuilds less).
    print(f"{killed} passed, {survived + invalid} failed")
    return 0 if survived == 0 and invalid == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
